"""Best-fit window sides: which closed form of the local family is closest to the network.

Kamb & Ganguli (2024) calibrate the window side of LS / ELS per noise level to a trained network:
the side whose output is closest in MSE to the network's along its own reverse trajectory
(docs/reference.md section 3b). :class:`BestFit` measures it for PSPC-Square, LS and ELS
candidates on fixed forward probes and, optionally, on the states of the network's Heun
trajectories; the :class:`~lightning_pspc.evaluation.members.patch_sizes.Locality` member reports
it, and :class:`Calibration` gives the calibrated references of an evaluation their sides on the
evaluation's own sigma grid, on probes of its own (disjoint from the probes the references are
scored on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoisers import EquivariantLocalDenoiser, LocalDenoiser, PSPCSquareDenoiser
from ..diffusion import edm_sigmas
from ..types import Denoiser
from .batching import denoise_batched
from .probes import ProbeSet, fixed_noise, noisy_images, reverse_probes

if TYPE_CHECKING:
    from .pipeline import Evaluation

#: Candidate patch sides of the best fit (odd: LS windows need a centre; 55 = whole image at 28).
DEFAULT_CANDIDATES = (1, 3, 5, 7, 9, 13, 17, 21, 55)
#: Closed forms the best fit can calibrate: PSPC-Square, LS, ELS (zero padding, as the ``els``
#: reference: the networks here use zero-padded convolutions).
FIT_KINDS = ("pspc", "ls", "els")
#: The default fit: ELS costs minutes per call on the CPU at N = 1,024, so opt in.
DEFAULT_FIT_KINDS = ("pspc", "ls")
#: Heun steps of the EDM schedule the reverse probes' trajectories follow (the sampler's
#: default), with the fit's sigmas inserted so that a state lies exactly at each of them.
REVERSE_STEPS = 18


def check_fit_settings(candidates: Sequence[int], fit_kinds: Sequence[str]) -> list[str]:
    """The problems of a candidate list and fit kinds (empty when both are good)."""
    problems = []
    if not candidates or any(int(k) != k or k < 1 or k % 2 == 0 for k in candidates):
        problems.append(f"candidates={list(candidates)} must be positive odd patch sides")
    bad_kinds = [k for k in fit_kinds if k not in FIT_KINDS]
    if bad_kinds:
        problems.append(f"fit_kinds={list(fit_kinds)}: use a subset of {list(FIT_KINDS)}")
    return problems


def make_candidate(kind: str, images: Tensor, k: int) -> Denoiser:
    """The fit kind's closed form with patch side ``k`` on the training set ``images``."""
    if kind == "pspc":
        return PSPCSquareDenoiser(images, patch_size=k)
    if kind == "ls":
        return LocalDenoiser(images, patch_size=k)
    return EquivariantLocalDenoiser(images, patch_size=k, padding="zeros")


def at_sigma(sigma: Tensor, s: float) -> Tensor:
    """Which probes (noise levels ``sigma [P]``) lie at the grid sigma ``s`` (relative 1e-9)."""
    return (sigma - s).abs() < 1e-9 * s


def per_sigma_mse(err: Tensor, sigma: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Mean of ``err [K, P]`` over the probes at each of ``sigmas`` (``sigma [P]``) -> ``[S, K]``
    (NaN where no probe lies at a sigma)."""
    return torch.stack([err[:, at_sigma(sigma, s)].mean(1) for s in sigmas])


def candidate_errors(candidate_outputs: dict[str, Tensor], outputs: Tensor) -> dict[str, Tensor]:
    """Per kind, each candidate's MSE to ``outputs [P, C, H, W]`` on every probe ``[K, P]``
    (float64) from its outputs ``[K, P, C, H, W]``."""
    return {
        kind: (cand - outputs.unsqueeze(0)).pow(2).flatten(2).mean(2).double()
        for kind, cand in candidate_outputs.items()
    }


#: ``{probe set: ({kind: best side per sigma [S]}, {kind: MSE per sigma and candidate [S][K]})}``
Fits = dict[str, tuple[dict[str, list[int]], dict[str, list[list[float]]]]]


class BestFit:
    """Best-fit patch sides of closed-form candidates to a network, per sigma.

    Args:
        images: the training set ``[N, C, H, W]`` the candidates are built from.
        sigmas: the noise levels of the fit (any order; stored largest first).
        forward: fixed forward probes at those sigmas (the candidates' outputs on them are
            computed once, at the first fit).
        reverse_noise: ``[R, C, H, W]`` starting noise of the network's Heun trajectories whose
            states at ``sigmas`` join the fit (``R = 0``: forward probes only). The trajectories
            change with the network, so the candidates' outputs on them are recomputed at every
            fit: ``R * len(sigmas)`` closed-form calls per candidate.
        candidates: odd patch sides; PSPC-Square clips a side to the image (the empirical
            denoiser), zero-padded ELS to ``2 * side - 1`` (LS with whole-image windows).
        fit_kinds: a subset of :data:`FIT_KINDS`.
        batch_size: probes per denoiser call.
        schedule: the trajectories' Heun schedule ``[T]`` into which ``sigmas`` are inserted
            (default: the EDM schedule of :data:`REVERSE_STEPS` steps).
    """

    def __init__(
        self,
        images: Tensor,
        sigmas: Sequence[float],
        forward: ProbeSet,
        reverse_noise: Tensor,
        candidates: Sequence[int] = DEFAULT_CANDIDATES,
        fit_kinds: Sequence[str] = DEFAULT_FIT_KINDS,
        batch_size: int = 64,
        schedule: Tensor | None = None,
    ) -> None:
        self.images, self.forward = images, forward
        self.sigmas = sorted((float(s) for s in sigmas), reverse=True)
        self.reverse_noise, self.batch_size = reverse_noise, batch_size
        self.fit_kinds = tuple(fit_kinds)
        side = max(images.shape[-2:])
        self.kind_candidates = {
            "pspc": sorted({min(int(k), side) for k in candidates}),
            "ls": [int(k) for k in candidates],
            "els": sorted({min(int(k), 2 * side - 1) for k in candidates}),
        }
        grid = torch.tensor(self.sigmas, dtype=torch.float64)
        schedule = edm_sigmas(REVERSE_STEPS) if schedule is None else schedule.double().cpu()
        steps = torch.cat([schedule, grid]).unique()
        self.trajectory_sigmas = steps.sort(descending=True).values  # [T]
        self._forward_outputs: dict[str, Tensor] | None = None  # kind -> [K, P, C, H, W]

    @property
    def num_reverse(self) -> int:
        return self.reverse_noise.shape[0]

    def candidates(self) -> dict[str, list[int]]:
        """``{kind: candidate sides}`` of the fitted kinds."""
        return {k: self.kind_candidates[k] for k in self.fit_kinds}

    def work(self) -> int:
        """Denoiser evaluations of the next :meth:`fit` (network outputs on the forward probes
        not included: the caller computes them)."""
        per_probe = sum(len(self.kind_candidates[k]) for k in self.fit_kinds)
        forward = 0 if self._forward_outputs is not None else len(self.forward) * per_probe
        reverse = 0
        if self.num_reverse and self.fit_kinds:
            trajectory_calls = self.num_reverse * (2 * len(self.trajectory_sigmas) - 1)
            reverse = trajectory_calls + self.num_reverse * len(self.sigmas) * per_probe
        return forward + reverse

    def candidate_outputs(self, probes: ProbeSet, bar: tqdm | None = None) -> dict[str, Tensor]:
        """Each candidate's outputs on ``probes`` ``{kind: [K, P, C, H, W]}``."""
        images = self.images.to(probes.z.device)
        # built per call, not kept: ELS's prepared patch sets reach GBs per side at N = 1,024
        return {
            kind: torch.stack(
                [
                    denoise_batched(
                        make_candidate(kind, images, k),
                        probes.z,
                        probes.sigma,
                        self.batch_size,
                        bar,
                    )
                    for k in self.kind_candidates[kind]
                ]
            )
            for kind in self.fit_kinds
        }

    def forward_outputs(self, bar: tqdm | None = None) -> dict[str, Tensor]:
        """Each candidate's outputs on the forward probes (computed once)."""
        if self._forward_outputs is None:
            self._forward_outputs = self.candidate_outputs(self.forward, bar)
        return self._forward_outputs

    def reverse_fit_probes(
        self, network: Denoiser, bar: tqdm | None = None
    ) -> tuple[ProbeSet, Tensor]:
        """States of ``network``'s Heun trajectories from the fixed noise at the fit's sigmas
        (``R*S`` probes, seed-major) and the network's outputs on them ``[R*S, C, H, W]`` (the
        sampler's first evaluation at each step)."""
        probes, outputs, _ = reverse_probes(network, self.reverse_noise, self.trajectory_sigmas)
        if bar is not None:
            bar.update(self.num_reverse * (2 * len(self.trajectory_sigmas) - 1))
        on_grid = torch.zeros(len(probes), dtype=torch.bool, device=probes.sigma.device)
        for s in self.sigmas:
            on_grid |= at_sigma(probes.sigma, s)
        keep = on_grid.nonzero().squeeze(1)
        picked = ProbeSet(probes.z[keep], probes.sigma[keep], probes.source[keep])
        return picked, outputs[keep]

    @torch.no_grad()
    def fit(
        self,
        network: Denoiser,
        outputs: Tensor | None = None,
        bar: tqdm | None = None,
        reverse: tuple[ProbeSet, Tensor] | None = None,
    ) -> Fits:
        """Best side per sigma and the MSE tables of ``network``, keyed by probe set:
        ``"forward"``, and with reverse probes also ``"reverse"`` and ``"forward+reverse"``
        (pooled: the mean over every probe at a sigma). ``outputs``: the network's outputs on
        the forward probes, and ``reverse``: :meth:`reverse_fit_probes`, when the caller has
        them."""
        if outputs is None:
            outputs = denoise_batched(
                network, self.forward.z, self.forward.sigma, self.batch_size, bar
            )
        errors = {
            "forward": (self.forward.sigma, candidate_errors(self.forward_outputs(bar), outputs))
        }
        if self.num_reverse and self.fit_kinds:
            probes, rev_out = reverse or self.reverse_fit_probes(network, bar)
            rev_fit = self.candidate_outputs(probes, bar)
            errors["reverse"] = (probes.sigma, candidate_errors(rev_fit, rev_out))
            errors["forward+reverse"] = (
                torch.cat([self.forward.sigma, probes.sigma]),
                {
                    k: torch.cat([errors["forward"][1][k], errors["reverse"][1][k]], 1)
                    for k in self.fit_kinds
                },
            )
        fits: Fits = {}
        for name, (sigma, err) in errors.items():
            best, mse_table = {}, {}
            for kind, e in err.items():
                per_sigma = per_sigma_mse(e, sigma, self.sigmas)  # [S, K]
                cands = self.kind_candidates[kind]
                best[kind] = [cands[i] for i in per_sigma.argmin(1).tolist()]
                mse_table[kind] = per_sigma.cpu().tolist()
            fits[name] = (best, mse_table)
        return fits

    def pooled(self, fits: Fits) -> str:
        """The probe set whose fit counts: ``"forward+reverse"`` when there are reverse probes."""
        return "forward+reverse" if "forward+reverse" in fits else "forward"


@dataclass(frozen=True)
class CalibrationSettings:
    """How an evaluation calibrates its references to the network (PSPC, LS, ELS).

    ``num_probes`` held-out forward probes and ``num_reverse_probes`` reverse trajectories per
    sigma of the evaluation's grid (0 and 0: no calibration, the references keep their default
    sides); ``candidates`` as for :class:`BestFit`; ``fit_kinds``: ELS is fitted only when
    ``"els"`` is listed (else the ``els`` reference takes LS's sides); PSPC and LS are fitted
    whenever a reference asks.
    """

    num_probes: int = 4
    num_reverse_probes: int = 2
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES
    fit_kinds: tuple[str, ...] = DEFAULT_FIT_KINDS

    def __post_init__(self) -> None:
        problems = check_fit_settings(self.candidates, self.fit_kinds)
        if self.num_probes < 0 or self.num_reverse_probes < 0:
            problems.append(
                f"calibration probes {self.num_probes} and reverse probes "
                f"{self.num_reverse_probes} must be >= 0 (both 0: no calibration)"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def enabled(self) -> bool:
        return bool(self.num_probes or self.num_reverse_probes)


class Calibration:
    """The best-fit window sides of an evaluation's calibrated references for the network being
    evaluated, on the evaluation's sigma grid.

    Its probes are its own: held-out images taken from the end of the permutation that picks the
    scored held-out probes (so the two sets share no image while the held-out pool holds both),
    noised with the ``calibration_probes`` seed, and trajectories from the ``calibration_noise``
    seed. A kind is fitted when a reference first asks for it after a refresh (:meth:`schedule`)
    and kept until the next (:meth:`forget`); every process computes the same fit (no
    sharding), so every reference of the evaluation gets the same sides.
    """

    def __init__(self, evaluation: Evaluation, settings: CalibrationSettings) -> None:
        self.evaluation, self.settings = evaluation, settings
        self._best_fits: dict[str, BestFit] = {}
        self._fits: dict[str, Fits] = {}
        self._forward: ProbeSet | None = None
        #: the network's outputs on the forward probes and its reverse-trajectory probes, shared
        #: by every kind fitted after a refresh
        self._network_outputs: tuple[Tensor, tuple[ProbeSet, Tensor] | None] | None = None

    def fits(self, kind: str) -> bool:
        """Whether ``kind`` gets a fit of its own (calibration on; ELS only when listed)."""
        if not self.settings.enabled or kind not in FIT_KINDS:
            return False
        return kind != "els" or "els" in self.settings.fit_kinds

    def forget(self) -> None:
        """The network changed: the next :meth:`schedule` fits again."""
        self._fits, self._network_outputs = {}, None

    def best_fit(self, kind: str = "pspc") -> BestFit:
        """The fit of ``kind``: its probes (shared by every kind) and candidates (built once)."""
        if kind not in self._best_fits:
            ev, s = self.evaluation, self.settings
            if self._forward is None:
                self._forward = calibration_probes(ev, s.num_probes)
            self._best_fits[kind] = BestFit(
                ev.data.reference.to(ev.device),
                ev.sigmas.tolist(),
                self._forward,
                fixed_noise(
                    s.num_reverse_probes, ev.data.image_shape, ev.seeds.calibration_noise
                ).to(ev.device),
                s.candidates,
                (kind,),
                ev.batch_size,
                ev.sampler_sigmas(REVERSE_STEPS),
            )
        return self._best_fits[kind]

    def schedule(self, kind: str, network: Denoiser) -> tuple[list[float], list[int]] | None:
        """``(sigmas, best sides)`` of ``kind`` for ``network`` on the evaluation's grid, largest
        sigma first; ``None`` when :meth:`fits` is false."""
        if not self.fits(kind):
            return None
        best_fit = self.best_fit(kind)
        if kind not in self._fits:
            if self._network_outputs is None:  # every kind shares the probes: run them once
                forward = best_fit.forward
                outputs = denoise_batched(network, forward.z, forward.sigma, best_fit.batch_size)
                reverse = best_fit.reverse_fit_probes(network) if best_fit.num_reverse else None
                self._network_outputs = (outputs, reverse)
            outputs, reverse = self._network_outputs
            self._fits[kind] = best_fit.fit(network, outputs, reverse=reverse)
        best, _ = self._fits[kind][best_fit.pooled(self._fits[kind])]
        return list(best_fit.sigmas), list(best[kind])

    def record(self) -> dict[str, Any] | None:
        """The latest fits (``None`` before any): probes used, candidates and MSE tables."""
        if not self._fits:
            return None
        kinds = {}
        for kind, fits in self._fits.items():
            best_fit = self._best_fits[kind]
            used = best_fit.pooled(fits)
            kinds[kind] = {
                "patch_sizes": fits[used][0][kind],
                "candidates": best_fit.kind_candidates[kind],
                "mse": fits[used][1][kind],
            }
        return {
            "sigmas": self.evaluation.sigmas.tolist(),
            "probes": {
                "used": "forward+reverse" if self.settings.num_reverse_probes else "forward",
                "forward": self.settings.num_probes,
                "reverse": self.settings.num_reverse_probes,
            },
            "kinds": kinds,
        }


def calibration_probes(evaluation: Evaluation, num_images: int) -> ProbeSet:
    """Forward probes of ``num_images`` held-out images at every grid sigma: the last images of
    the permutation whose first images the scored held-out probes take
    (:func:`~lightning_pspc.evaluation.probes.forward_probes` with the ``heldout_probes`` seed),
    noise from the ``calibration_probes`` seed. Image-major, as forward probes."""
    pool, seeds = evaluation.heldout_pool(), evaluation.seeds
    n = min(num_images, pool.shape[0])
    order = torch.randperm(
        pool.shape[0], generator=torch.Generator().manual_seed(seeds.heldout_probes)
    )
    idx = order.flip(0)[:n]
    gen = torch.Generator().manual_seed(seeds.calibration_probes)
    return noisy_images(pool, idx, evaluation.sigmas, gen).to(evaluation.device)
