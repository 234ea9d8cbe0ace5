"""Locality of the network: sensitivity patch sizes and best-fit patch sizes (REFERENCE.md 3b).

The :class:`Locality` member of an :class:`~lightning_pspc.evaluation.Evaluation` measures, at a
few noise levels, the network's sensitivity heatmaps on fixed held-out forward probes (the
evaluation's held-out images and seed, :class:`~lightning_pspc.evaluation.EvalSeeds`), the
sensitivity patch size they imply (Niedoba et al. 2024, sec. 5) and the best-fit patch size: the
PSPC-Square, LS (or ELS) patch side whose output is closest to the network's (Kamb & Ganguli
2024's calibration), on the held-out forward probes and, with ``num_reverse_probes``, on the
states of the network's own Heun trajectories (pooled). Its best-fit LS (and ELS) sizes calibrate
the ``ls`` / ``els`` references (``evaluation.calibration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ..denoisers import EquivariantLocalDenoiser, LocalDenoiser, PSPCSquareDenoiser
from ..diffusion import edm_sigmas
from ..locality import heatmaps_at_sigmas, sensitivity_patch_size, strided_pixels
from ..types import Denoiser
from .engine import denoise_batched
from .local_references import FMNIST_LOCAL_SIGMAS
from .pipeline import Evaluation, EvaluationMember
from .plots_locality import (
    best_fit_figure,
    heatmap_pixels_figure,
    patch_size_heatmap_figure,
    patch_size_vs_sigma_figure,
)
from .probes import ProbeSet, fixed_noise, forward_probes, reverse_probes

#: Mass fractions of the sensitivity patch size (REFERENCE.md 3b).
DEFAULT_FRACTIONS = (0.5, 0.75, 0.95)
#: Candidate patch sides of the best fit (odd: LS windows need a centre; 55 = whole image at 28).
DEFAULT_CANDIDATES = (1, 3, 5, 7, 9, 13, 17, 21, 55)
#: Closed forms the best fit can calibrate: PSPC-Square, LS, ELS (zero padding, as the ``els``
#: reference: the networks here use zero-padded convolutions).
FIT_KINDS = ("pspc", "ls", "els")
#: The default fit: ELS costs minutes per call on the CPU at N = 1,024 (README), so opt in.
DEFAULT_FIT_KINDS = ("pspc", "ls")
#: Heun steps of the EDM schedule the reverse probes' trajectories follow (the sampler's
#: default), with the member's sigmas inserted so that a state lies exactly at each of them.
REVERSE_STEPS = 18


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


def fraction_key(fraction: float) -> str:
    """``0.5 -> "f50"`` (metric keys)."""
    return f"f{round(100 * fraction):d}"


@dataclass
class LocalityResult:
    """Patch sizes per sigma: ``patch_size[f]`` (sensitivity, mean over the pixels) ``[S]``,
    ``best_fit[kind]`` ``[S]`` and ``fit_mse[kind]`` ``[S, K]`` over ``candidates`` on the
    probes named by ``fit_probes`` (``"forward"`` or ``"forward+reverse"``, pooled: the mean over
    all probes at a sigma); ``by_probes`` has the same two tables on ``"forward"`` and
    ``"reverse"`` probes alone (``{set: {"patch_size": {kind: [S]}, "mse": {kind: [S][K]}}}``),
    ``num_fit_probes`` the probes per sigma of each set; ``heatmaps`` ``[S, P, H, W]`` of the
    output ``pixels [P, 2]`` (for the charts)."""

    sigmas: list[float]
    patch_size: dict[float, list[float]]
    best_fit: dict[str, list[int]]
    fit_mse: dict[str, list[list[float]]]
    candidates: dict[str, list[int]]
    heatmaps: Tensor = field(repr=False)
    pixels: Tensor = field(repr=False)
    fit_probes: str = "forward"
    by_probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_fit_probes: dict[str, int] = field(default_factory=dict)

    def scalars(self, prefix: str = "locality") -> dict[str, float]:
        """``{prefix}/patch_size_f50/sigma_{s:.3g}`` ... and ``{prefix}/best_fit_{kind}/sigma_..``."""
        out = {}
        for f, sizes in self.patch_size.items():
            for s, v in zip(self.sigmas, sizes):
                out[f"{prefix}/patch_size_{fraction_key(f)}/sigma_{s:.3g}"] = v
        for kind, sizes in self.best_fit.items():
            for s, v in zip(self.sigmas, sizes):
                out[f"{prefix}/best_fit_{kind}/sigma_{s:.3g}"] = float(v)
        if self.fit_probes != "forward":  # the pooled fit above; each probe set alone too
            for probes, table in self.by_probes.items():
                for kind, sizes in table["patch_size"].items():
                    for s, v in zip(self.sigmas, sizes):
                        out[f"{prefix}/best_fit_{kind}_{probes}/sigma_{s:.3g}"] = float(v)
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"sigmas", "sensitivity_patch_size": {"f50": [S]}, "best_fit_patch_size": {kind:
        [S]}, "best_fit_candidates": {kind: [K]}, "best_fit_mse": {kind: [S][K]},
        "best_fit_probes": {"used": "forward" | "forward+reverse", "forward": M, "reverse": R},
        "best_fit_by_probes": {"forward" | "reverse": {"patch_size": ..., "mse": ...}}}``
        (``M``, ``R``: probes per sigma)."""
        return {
            "sigmas": self.sigmas,
            "sensitivity_patch_size": {fraction_key(f): v for f, v in self.patch_size.items()},
            "best_fit_patch_size": self.best_fit,
            "best_fit_candidates": self.candidates,
            "best_fit_mse": self.fit_mse,
            "best_fit_probes": {"used": self.fit_probes, **self.num_fit_probes},
            "best_fit_by_probes": self.by_probes,
        }


class Locality(EvaluationMember):
    """Sensitivity and best-fit patch sizes of the network at ``sigmas``.

    Args:
        sigmas: noise levels (default: 10, 3, 1, 0.5, 0.2, 0.05, where REFERENCE.md 3b gives the
            small UNet's best fit). Cost is linear in their number.
        num_probes: held-out forward probes per sigma (the first of the evaluation's held-out
            images, seed ``EvalSeeds.heldout_probes``). Heatmaps are means over probes: more
            probes, less noise in the patch sizes; cost linear.
        stride: output pixels on a grid of this step (:func:`strided_pixels`); the patch size is
            the mean over them. 1 = all ``H*W`` pixels (exact mean, ``C*H*W`` VJPs per probe);
            ``s`` costs ``~1/s^2`` of that and samples border and interior pixels alike.
        fractions: mass fractions of the sensitivity patch size.
        candidates: patch sides (odd, >= 1) tried for the best fit; PSPC-Square clips a side to
            the image (the empirical denoiser). A coarser list is cheaper and coarser.
        fit_kinds: a subset of ``"pspc"``, ``"ls"``, ``"els"`` (:data:`FIT_KINDS`): which closed
            forms the best fit calibrates (the ``ls`` / ``els`` references read theirs). The
            candidates' outputs on the fixed forward probes are computed once (first
            evaluation). ELS (zero padding) costs minutes per call on the CPU at N = 1,024, so
            it is not in the default :data:`DEFAULT_FIT_KINDS`.
        num_reverse_probes: seeds of reverse-process probes for the best fit: the states of the
            network's own Heun trajectories (EDM schedule of :data:`REVERSE_STEPS` steps with
            ``sigmas`` inserted; starting noise seeded by ``EvalSeeds.reverse_noise``) at each
            sigma, where Kamb & Ganguli calibrate. With ``R > 0`` the best fit (and so the
            calibration) is on the pooled probes (``num_probes + R`` per sigma, every probe
            weighted alike), and the result also holds the fit on each set alone. Unlike the
            forward probes, the trajectories change with the network, so the candidates'
            outputs on them are recomputed at every evaluation: cost ``R * len(sigmas)`` closed-
            form calls per candidate per evaluation. 0: forward probes only.
        num_pixels_shown: output pixels whose heatmaps are drawn.
    """

    name = "locality"

    def __init__(
        self,
        sigmas: Sequence[float] | None = None,
        num_probes: int = 4,
        stride: int = 4,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        candidates: Sequence[int] = DEFAULT_CANDIDATES,
        fit_kinds: Sequence[str] = DEFAULT_FIT_KINDS,
        num_pixels_shown: int = 4,
        num_reverse_probes: int = 0,
    ) -> None:
        sig = list(FMNIST_LOCAL_SIGMAS if sigmas is None else sigmas)
        problems = []
        if not sig or any(not (float(s) > 0 and float(s) < float("inf")) for s in sig):
            problems.append(f"sigmas={sig} must be positive finite noise levels")
        if num_probes < 1:
            problems.append(f"num_probes={num_probes} must be >= 1")
        if stride < 1:
            problems.append(f"stride={stride} must be >= 1 (1 = every output pixel)")
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            problems.append(f"fractions={list(fractions)} must be in (0, 1]")
        if not candidates or any(int(k) != k or k < 1 or k % 2 == 0 for k in candidates):
            problems.append(f"candidates={list(candidates)} must be positive odd patch sides")
        bad_kinds = [k for k in fit_kinds if k not in FIT_KINDS]
        if bad_kinds:
            problems.append(f"fit_kinds={list(fit_kinds)}: use a subset of {list(FIT_KINDS)}")
        if num_pixels_shown < 0:
            problems.append(f"num_pixels_shown={num_pixels_shown} must be >= 0")
        if num_reverse_probes < 0:
            problems.append(f"num_reverse_probes={num_reverse_probes} must be >= 0 (0: none)")
        if problems:
            raise ValueError("; ".join(problems))
        self.sigmas = sorted((float(s) for s in sig), reverse=True)
        self.num_probes, self.stride = num_probes, stride
        self.fractions = tuple(float(f) for f in fractions)
        self.candidates = tuple(int(k) for k in candidates)
        self.fit_kinds, self.num_pixels_shown = tuple(fit_kinds), num_pixels_shown
        self.num_reverse_probes = num_reverse_probes
        self._fit_outputs: dict[str, Tensor] | None = None  # kind -> [K, M*S, C, H, W]

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        data = evaluation.data
        pool = data.heldout if data.heldout.shape[0] else data.train
        grid = torch.tensor(self.sigmas, dtype=torch.float64)
        self.probes = forward_probes(
            pool, grid, self.num_probes, evaluation.seeds.heldout_probes
        ).to(evaluation.device)
        _, h, w = data.image_shape
        self.pixels = strided_pixels(h, w, self.stride)
        side = max(h, w)
        self.kind_candidates = {
            "pspc": sorted({min(k, side) for k in self.candidates}),
            "ls": list(self.candidates),
            # zero-padded ELS with k >= 2 side - 1 is LS with whole-image windows: the empirical
            # denoiser, as for the clipped PSPC side
            "els": sorted({min(k, 2 * side - 1) for k in self.candidates}),
        }
        # reverse trajectories: the EDM schedule with the member's sigmas inserted
        steps = torch.cat([edm_sigmas(REVERSE_STEPS), grid]).unique()
        self.trajectory_sigmas = steps.sort(descending=True).values  # [T]
        self.reverse_noise = fixed_noise(
            self.num_reverse_probes, data.image_shape, evaluation.seeds.reverse_noise
        ).to(evaluation.device)

    def work(self) -> int:
        per_probe = sum(len(self.kind_candidates[k]) for k in self.fit_kinds)
        forward_fit = 0 if self._fit_outputs is not None else len(self.probes) * per_probe
        reverse = 0
        if self.num_reverse_probes and self.fit_kinds:  # as evaluate(): no fit, no trajectories
            trajectory_calls = self.num_reverse_probes * (2 * len(self.trajectory_sigmas) - 1)
            reverse = trajectory_calls + self.num_reverse_probes * len(self.sigmas) * per_probe
        return 2 * len(self.probes) + forward_fit + reverse

    def candidate_outputs(self, probes: ProbeSet, bar: tqdm | None = None) -> dict[str, Tensor]:
        """Each candidate's outputs on ``probes`` ``{kind: [K, P, C, H, W]}``."""
        batch, images = self.evaluation.batch_size, self.evaluation.data.reference
        images = images.to(self.evaluation.device)
        # built per call, not kept: ELS's prepared patch sets reach GBs per side at N = 1,024
        return {
            kind: torch.stack(
                [
                    denoise_batched(
                        make_candidate(kind, images, k), probes.z, probes.sigma, batch, bar
                    )
                    for k in self.kind_candidates[kind]
                ]
            )
            for kind in self.fit_kinds
        }

    def fit_outputs(self, bar: tqdm | None = None) -> dict[str, Tensor]:
        """Each candidate's outputs on the forward probes ``{kind: [K, M*S, C, H, W]}``
        (computed once)."""
        if self._fit_outputs is None:
            self._fit_outputs = self.candidate_outputs(self.probes, bar)
        return self._fit_outputs

    def reverse_fit_probes(
        self, network: Denoiser, bar: tqdm | None = None
    ) -> tuple[ProbeSet, Tensor]:
        """States of ``network``'s Heun trajectories from the member's fixed noise at its sigmas
        (``R*S`` probes, seed-major) and the network's outputs on them ``[R*S, C, H, W]`` (the
        sampler's first evaluation at each step)."""
        probes, outputs, _ = reverse_probes(network, self.reverse_noise, self.trajectory_sigmas)
        if bar is not None:
            bar.update(self.num_reverse_probes * (2 * len(self.trajectory_sigmas) - 1))
        on_grid = torch.zeros(len(probes), dtype=torch.bool, device=probes.sigma.device)
        for s in self.sigmas:
            on_grid |= at_sigma(probes.sigma, s)
        keep = on_grid.nonzero().squeeze(1)
        picked = ProbeSet(probes.z[keep], probes.sigma[keep], probes.source[keep])
        return picked, outputs[keep]

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> LocalityResult:
        sig = self.probes.sigma
        grid = torch.tensor(self.sigmas, dtype=torch.float64, device=sig.device)
        reverse = None
        with torch.no_grad():
            fit = self.fit_outputs(bar)
            out = denoise_batched(network, self.probes.z, sig, self.evaluation.batch_size, bar)
            if self.num_reverse_probes and self.fit_kinds:
                probes, rev_out = self.reverse_fit_probes(network, bar)
                reverse = (probes, rev_out, self.candidate_outputs(probes, bar))
        hm = heatmaps_at_sigmas(network, self.probes, grid, self.pixels).cpu()  # [S, P, H, W]
        if bar is not None:
            bar.update(len(self.probes))
        sizes = {
            f: [sensitivity_patch_size(hm[i], f, self.pixels) for i in range(len(self.sigmas))]
            for f in self.fractions
        }
        fits = self.best_fit(out, fit, reverse)
        used = "forward+reverse" if reverse is not None else "forward"
        best, mse_table = fits[used]
        by_probes = (
            {p: {"patch_size": fits[p][0], "mse": fits[p][1]} for p in ("forward", "reverse")}
            if reverse is not None
            else {}
        )
        counts = {"forward": self.num_probes, "reverse": self.num_reverse_probes}
        return LocalityResult(
            list(self.sigmas),
            sizes,
            best,
            mse_table,
            {k: self.kind_candidates[k] for k in self.fit_kinds},
            hm,
            self.pixels,
            used,
            by_probes,
            counts if reverse is not None else {"forward": self.num_probes},
        )

    def best_fit(
        self,
        outputs: Tensor,
        fit: dict[str, Tensor] | None = None,
        reverse: tuple[ProbeSet, Tensor, dict[str, Tensor]] | None = None,
    ) -> dict[str, tuple[dict[str, list[int]], dict[str, list[list[float]]]]]:
        """Best-fit patch size per sigma ``{kind: [S]}`` and the MSE table ``{kind: [S][K]}`` of
        the network's ``outputs [M*S, C, H, W]`` on the member's forward probes (``fit``: the
        candidates' outputs there, default :meth:`fit_outputs`), keyed by probe set:
        ``"forward"``, and with ``reverse = (probes, network outputs, candidates' outputs)`` on
        reverse probes also ``"reverse"`` and ``"forward+reverse"`` (pooled: the mean over every
        probe at a sigma). Records the sizes of the pooled set (else the forward one) in
        ``evaluation.calibration`` (read by the ``ls`` / ``els`` references)."""
        fit = self.fit_outputs() if fit is None else fit
        errors = {"forward": (self.probes.sigma, _errors(fit, outputs))}
        if reverse is not None:
            probes, rev_out, rev_fit = reverse
            errors["reverse"] = (probes.sigma, _errors(rev_fit, rev_out))
            errors["forward+reverse"] = (
                torch.cat([self.probes.sigma, probes.sigma]),
                {k: torch.cat([errors["forward"][1][k], errors["reverse"][1][k]], 1) for k in fit},
            )
        fits = {}
        for name, (sigma, err) in errors.items():
            best, mse_table = {}, {}
            for kind, e in err.items():
                per_sigma = per_sigma_mse(e, sigma, self.sigmas)  # [S, K]
                cands = self.kind_candidates[kind]
                best[kind] = [cands[i] for i in per_sigma.argmin(1).tolist()]
                mse_table[kind] = per_sigma.cpu().tolist()
            fits[name] = (best, mse_table)
        best = fits["forward+reverse" if reverse is not None else "forward"][0]
        for kind, sizes in best.items():
            self.evaluation.calibration[kind] = (list(self.sigmas), list(sizes))
        return fits

    def record(self, result: LocalityResult) -> dict[str, Any]:
        return result.to_json()

    def figures(
        self, result: LocalityResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """Sensitivity patch size against sigma (one line per evaluation), heatmaps of a few
        output pixels, and over time the epoch x sigma heat map of the patch size (first
        fraction) and the best-fit patch size over epochs per sigma."""
        figs = {"patch_size_vs_sigma": patch_size_vs_sigma_figure(result.sigmas, history)}
        if self.num_pixels_shown:
            figs["heatmaps"] = heatmap_pixels_figure(
                result.heatmaps, result.pixels, result.sigmas, self.num_pixels_shown
            )
        if over_time and history:
            key = fraction_key(self.fractions[0])
            figs["patch_size_heatmap"] = patch_size_heatmap_figure(result.sigmas, history, key)
            if result.best_fit:
                figs["best_fit_over_epochs"] = best_fit_figure(result.sigmas, history)
        return figs


def _errors(candidate_outputs: dict[str, Tensor], outputs: Tensor) -> dict[str, Tensor]:
    """Per kind, each candidate's MSE to ``outputs [P, C, H, W]`` on every probe ``[K, P]``
    (float64) from its outputs ``[K, P, C, H, W]``."""
    return {
        kind: (cand - outputs.unsqueeze(0)).pow(2).flatten(2).mean(2).double()
        for kind, cand in candidate_outputs.items()
    }
