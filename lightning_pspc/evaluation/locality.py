"""Locality of the network: sensitivity patch sizes and best-fit patch sizes (REFERENCE.md 3b).

The :class:`Locality` member of an :class:`~lightning_pspc.evaluation.Evaluation` measures, at a
few noise levels, the network's sensitivity heatmaps on fixed held-out forward probes (the
evaluation's held-out images and seed, :class:`~lightning_pspc.evaluation.EvalSeeds`), the
sensitivity patch size they imply (Niedoba et al. 2024, sec. 5) and the best-fit patch size: the
PSPC-Square (or LS) patch side whose output is closest to the network's (Kamb & Ganguli 2024's
calibration). Its best-fit LS sizes calibrate the ``ls`` / ``els`` references
(``evaluation.calibration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ..denoisers import LocalDenoiser, PSPCSquareDenoiser
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
from .probes import forward_probes

#: Mass fractions of the sensitivity patch size (REFERENCE.md 3b).
DEFAULT_FRACTIONS = (0.5, 0.75, 0.95)
#: Candidate patch sides of the best fit (odd: LS windows need a centre; 55 = whole image at 28).
DEFAULT_CANDIDATES = (1, 3, 5, 7, 9, 13, 17, 21, 55)
FIT_KINDS = ("pspc", "ls")


def fraction_key(fraction: float) -> str:
    """``0.5 -> "f50"`` (metric keys)."""
    return f"f{round(100 * fraction):d}"


@dataclass
class LocalityResult:
    """Patch sizes per sigma: ``patch_size[f]`` (sensitivity, mean over the pixels) ``[S]``,
    ``best_fit[kind]`` ``[S]`` and ``fit_mse[kind]`` ``[S, K]`` over ``candidates``; ``heatmaps``
    ``[S, P, H, W]`` of the output ``pixels [P, 2]`` (for the charts)."""

    sigmas: list[float]
    patch_size: dict[float, list[float]]
    best_fit: dict[str, list[int]]
    fit_mse: dict[str, list[list[float]]]
    candidates: dict[str, list[int]]
    heatmaps: Tensor = field(repr=False)
    pixels: Tensor = field(repr=False)

    def scalars(self, prefix: str = "locality") -> dict[str, float]:
        """``{prefix}/patch_size_f50/sigma_{s:.3g}`` ... and ``{prefix}/best_fit_{kind}/sigma_..``."""
        out = {}
        for f, sizes in self.patch_size.items():
            for s, v in zip(self.sigmas, sizes):
                out[f"{prefix}/patch_size_{fraction_key(f)}/sigma_{s:.3g}"] = v
        for kind, sizes in self.best_fit.items():
            for s, v in zip(self.sigmas, sizes):
                out[f"{prefix}/best_fit_{kind}/sigma_{s:.3g}"] = float(v)
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"sigmas", "sensitivity_patch_size": {"f50": [S]}, "best_fit_patch_size": {kind:
        [S]}, "best_fit_candidates": {kind: [K]}, "best_fit_mse": {kind: [S][K]}}``."""
        return {
            "sigmas": self.sigmas,
            "sensitivity_patch_size": {fraction_key(f): v for f, v in self.patch_size.items()},
            "best_fit_patch_size": self.best_fit,
            "best_fit_candidates": self.candidates,
            "best_fit_mse": self.fit_mse,
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
        fit_kinds: ``"pspc"`` and/or ``"ls"``: which closed form the best fit calibrates. The
            candidates' outputs on the fixed probes are computed once (first evaluation).
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
        fit_kinds: Sequence[str] = FIT_KINDS,
        num_pixels_shown: int = 4,
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
        if problems:
            raise ValueError("; ".join(problems))
        self.sigmas = sorted((float(s) for s in sig), reverse=True)
        self.num_probes, self.stride = num_probes, stride
        self.fractions = tuple(float(f) for f in fractions)
        self.candidates = tuple(int(k) for k in candidates)
        self.fit_kinds, self.num_pixels_shown = tuple(fit_kinds), num_pixels_shown
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
        }

    def work(self) -> int:
        fit = (
            0
            if self._fit_outputs is not None
            else len(self.probes) * sum(len(self.kind_candidates[k]) for k in self.fit_kinds)
        )
        return 2 * len(self.probes) + fit

    def fit_outputs(self, bar: tqdm | None = None) -> dict[str, Tensor]:
        """Each candidate's outputs on the probes ``{kind: [K, M*S, C, H, W]}`` (computed once)."""
        if self._fit_outputs is None:
            ev, images = self.evaluation, self.evaluation.data.reference.to(self.evaluation.device)
            outs = {}
            for kind in self.fit_kinds:
                per = []
                for k in self.kind_candidates[kind]:
                    ref = (
                        PSPCSquareDenoiser(images, patch_size=k)
                        if kind == "pspc"
                        else (LocalDenoiser(images, patch_size=k))
                    )
                    per.append(
                        denoise_batched(ref, self.probes.z, self.probes.sigma, ev.batch_size, bar)
                    )
                outs[kind] = torch.stack(per)
            self._fit_outputs = outs
        return self._fit_outputs

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> LocalityResult:
        sig = self.probes.sigma
        grid = torch.tensor(self.sigmas, dtype=torch.float64, device=sig.device)
        with torch.no_grad():
            fit = self.fit_outputs(bar)
            out = denoise_batched(network, self.probes.z, sig, self.evaluation.batch_size, bar)
        hm = heatmaps_at_sigmas(network, self.probes, grid, self.pixels).cpu()  # [S, P, H, W]
        if bar is not None:
            bar.update(len(self.probes))
        sizes = {
            f: [sensitivity_patch_size(hm[i], f, self.pixels) for i in range(len(self.sigmas))]
            for f in self.fractions
        }
        best, mse_table = self.best_fit(out, fit)
        return LocalityResult(
            list(self.sigmas), sizes, best, mse_table, dict(self.kind_candidates), hm, self.pixels
        )

    def best_fit(
        self, outputs: Tensor, fit: dict[str, Tensor] | None = None
    ) -> tuple[dict[str, list[int]], dict[str, list[list[float]]]]:
        """Best-fit patch size per sigma ``{kind: [S]}`` and the MSE table ``{kind: [S][K]}`` of
        the network's ``outputs [M*S, C, H, W]`` on the member's probes; records the sizes in
        ``evaluation.calibration`` (read by the ``ls`` / ``els`` references)."""
        fit = self.fit_outputs() if fit is None else fit
        sig = self.probes.sigma
        best, mse_table = {}, {}
        for kind, cand_out in fit.items():
            err = (cand_out - outputs.unsqueeze(0)).pow(2).flatten(2).mean(2).double()  # [K, M*S]
            per_sigma = torch.stack(
                [err[:, (sig - s).abs() < 1e-9 * s].mean(1) for s in self.sigmas]
            )  # [S, K]
            cands = self.kind_candidates[kind]
            best[kind] = [cands[i] for i in per_sigma.argmin(1).tolist()]
            mse_table[kind] = per_sigma.cpu().tolist()
            self.evaluation.calibration[kind] = (list(self.sigmas), list(best[kind]))
        return best, mse_table

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
