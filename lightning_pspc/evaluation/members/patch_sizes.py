"""Locality of the network: sensitivity patch sizes and best-fit patch sizes (docs/reference.md 3b).

The :class:`Locality` member of an :class:`~lightning_pspc.evaluation.Evaluation` measures, at a
few noise levels, the network's sensitivity heatmaps on fixed held-out forward probes (the
evaluation's held-out images and seed, :class:`~lightning_pspc.evaluation.EvalSeeds`), the
sensitivity patch size they imply (Niedoba et al. 2024, sec. 5) and the best-fit patch size: the
PSPC-Square, LS (or ELS) patch side whose output is closest to the network's (Kamb & Ganguli
2024's calibration, :class:`~lightning_pspc.evaluation.calibration.BestFit`), on the held-out
forward probes and, with ``num_reverse_probes``, on the states of the network's own Heun
trajectories (pooled). It measures; the references of an evaluation are calibrated by the
evaluation itself (:class:`~lightning_pspc.evaluation.calibration.Calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ...denoisers.network_fitted import FMNIST_LOCAL_SIGMAS
from ...locality import heatmaps_at_sigmas, sensitivity_patch_size, strided_pixels
from ...types import Denoiser
from ..batching import denoise_batched
from ..calibration import (
    DEFAULT_CANDIDATES,
    DEFAULT_FIT_KINDS,
    REVERSE_STEPS,
    BestFit,
    check_fit_settings,
)
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.locality_charts import (
    best_fit_figure,
    heatmap_pixels_figure,
    patch_size_heatmap_figure,
    patch_size_vs_sigma_figure,
)
from ..probes import fixed_noise, forward_probes

#: Mass fractions of the sensitivity patch size (docs/reference.md 3b).
DEFAULT_FRACTIONS = (0.5, 0.75, 0.95)


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
        sigmas: noise levels (default: 10, 3, 1, 0.5, 0.2, 0.05, where docs/reference.md 3b
            gives the small UNet's best fit). Cost is linear in their number.
        num_probes: held-out forward probes per sigma (the first of the evaluation's held-out
            images, seed ``EvalSeeds.heldout_probes``). Heatmaps are means over probes: more
            probes, less noise in the patch sizes; cost linear.
        stride: output pixels on a grid of this step (:func:`strided_pixels`); the patch size is
            the mean over them. 1 = all ``H*W`` pixels (exact mean, ``C*H*W`` VJPs per probe);
            ``s`` costs ``~1/s^2`` of that and samples border and interior pixels alike.
        fractions: mass fractions of the sensitivity patch size.
        candidates: patch sides (odd, >= 1) tried for the best fit; PSPC-Square clips a side to
            the image (the empirical denoiser). A coarser list is cheaper and coarser.
        fit_kinds: a subset of ``"pspc"``, ``"ls"``, ``"els"``
            (:data:`~lightning_pspc.evaluation.calibration.FIT_KINDS`): which closed forms are
            fitted. The candidates' outputs on the fixed forward probes are computed once (first
            evaluation). ELS (zero padding) costs minutes per call on the CPU at N = 1,024, so
            it is not in the default :data:`DEFAULT_FIT_KINDS`.
        num_reverse_probes: seeds of reverse-process probes for the best fit: the states of the
            network's own Heun trajectories (EDM schedule of 18 steps with ``sigmas`` inserted;
            starting noise seeded by ``EvalSeeds.reverse_noise``) at each sigma, where Kamb &
            Ganguli calibrate. With ``R > 0`` the best fit is on the pooled probes (``num_probes + R`` per sigma, every probe
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
        problems += check_fit_settings(candidates, fit_kinds)
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

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        data = evaluation.data
        self.sigmas = evaluation.clip_sigmas(self.sigmas).tolist()  # the network's range
        grid = torch.tensor(self.sigmas, dtype=torch.float64)
        self.probes = forward_probes(
            evaluation.heldout_pool(), grid, self.num_probes, evaluation.seeds.heldout_probes
        ).to(evaluation.device)
        _, h, w = data.image_shape
        self.pixels = strided_pixels(h, w, self.stride)
        self.fit = BestFit(
            data.reference.to(evaluation.device),
            self.sigmas,
            self.probes,
            fixed_noise(
                self.num_reverse_probes, data.image_shape, evaluation.seeds.reverse_noise
            ).to(evaluation.device),
            self.candidates,
            self.fit_kinds,
            evaluation.batch_size,
            evaluation.sampler_sigmas(REVERSE_STEPS),
        )

    def work(self) -> int:
        return 2 * len(self.probes) + self.fit.work()

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> LocalityResult:
        sig = self.probes.sigma
        grid = torch.tensor(self.sigmas, dtype=torch.float64, device=sig.device)
        with torch.no_grad():
            out = denoise_batched(network, self.probes.z, sig, self.evaluation.batch_size, bar)
            fits = self.fit.fit(network, out, bar)
        hm = heatmaps_at_sigmas(network, self.probes, grid, self.pixels).cpu()  # [S, P, H, W]
        if bar is not None:
            bar.update(len(self.probes))
        sizes = {
            f: [patch_size_or_nan(hm[i], f, self.pixels) for i in range(len(self.sigmas))]
            for f in self.fractions
        }
        used = self.fit.pooled(fits)
        best, mse_table = fits[used]
        pooled = used != "forward"
        by_probes = (
            {p: {"patch_size": fits[p][0], "mse": fits[p][1]} for p in ("forward", "reverse")}
            if pooled
            else {}
        )
        counts = {"forward": self.num_probes, "reverse": self.num_reverse_probes}
        return LocalityResult(
            list(self.sigmas),
            sizes,
            best,
            mse_table,
            self.fit.candidates(),
            hm,
            self.pixels,
            used,
            by_probes,
            counts if pooled else {"forward": self.num_probes},
        )

    def report(self, result: LocalityResult) -> dict[str, Any]:
        return {"locality": result.to_json()}

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


@dataclass
class LocalityOptions(OptionGroup):
    """``eval.py`` options of the :class:`Locality` member; ``locality_fit_kinds`` also names the
    closed forms the evaluation's calibration fits (``els``: the ``els`` reference gets its own
    window sides, else LS's)."""

    key = "locality"
    locality_probes: int = option(
        4, "held-out probes per sigma of the sensitivity / best-fit patch sizes (0: skip)"
    )
    locality_stride: int = option(
        2, "output-pixel grid step of the sensitivity heatmaps (1: every pixel)"
    )
    locality_sigmas: list[float] | None = option(
        None, "noise levels of the patch sizes (default 10 3 1 0.5 0.2 0.05)", item=float
    )
    locality_reverse_probes: int = option(
        2,
        "seeds of the network's own Heun trajectories whose states join the held-out probes "
        "of the best fit (pooled; 0: forward probes only)",
    )
    locality_fit_kinds: tuple[str, ...] = option(
        DEFAULT_FIT_KINDS,
        "closed forms the best fit and the calibration fit: pspc, ls, els (els gives the els "
        "reference its own calibration, else it uses ls's; slow on CPU)",
    )

    def check(self) -> None:
        if self.locality_probes < 0:
            raise ValueError(
                f"--locality-probes {self.locality_probes} must be >= 0 (0: no locality "
                "measurement)"
            )
        self.build(None)

    def build(self, settings: Any) -> list[EvaluationMember]:
        if self.locality_probes == 0:
            return []
        try:
            return [
                Locality(
                    self.locality_sigmas,
                    self.locality_probes,
                    self.locality_stride,
                    fit_kinds=self.locality_fit_kinds,
                    num_reverse_probes=self.locality_reverse_probes,
                )
            ]
        except ValueError as err:
            raise ValueError(
                "--locality-sigmas/--locality-probes/--locality-stride/--locality-fit-kinds/"
                f"--locality-reverse-probes: {err}"
            ) from None


def patch_size_or_nan(rows: Tensor, fraction: float, pixels: Tensor) -> float:
    """:func:`sensitivity_patch_size` of heatmap rows ``[P, H, W]``, or NaN where it has none
    (NaN or inf values, or a row without mass: a diverged network), so that a monitor reports
    the network's state instead of stopping its training."""
    usable = bool(torch.isfinite(rows).all()) and bool((rows.abs().flatten(1).sum(1) > 0).all())
    return sensitivity_patch_size(rows, fraction, pixels) if usable else math.nan
