"""Linear distillation of the network per sigma, against the Gaussian denoiser (Li et al. 2024).

:class:`LinearDistillation` reads the evaluation's ``linear_distilled`` reference (the network's
closed-form linear distillation on the evaluation's grid, refreshed with every network;
docs/reference.md section 3c) and measures, per grid sigma, how close that map is to the
Gaussian denoiser of the training set and to the network itself. Li et al. find the distilled
map close to the Gaussian denoiser, more so as the network generalizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ...denoisers.linear import PROBES_PER_DIMENSION
from ...metrics import DenoiserDistance, NormalizedMSE
from ...types import Denoiser
from ..batching import denoise_batched
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.linear_charts import (
    linear_distillation_figure,
    linear_distillation_heatmap,
    mid_band_mean,
)
from ..probes import forward_probes

#: ``auto`` turns the member on where ``D = C*H*W`` is at most this on a GPU ...
AUTO_MAX_DIM_GPU = 1024
#: ... and at most this on CPU (``4 * D`` network calls per sigma).
AUTO_MAX_DIM_CPU = 256


@dataclass
class LinearDistillationResult:
    """Per grid sigma ``[S]`` (float64, NaN where no probe fell): ``gaussian_nmse`` of the
    distilled map to the Gaussian denoiser, ``network_gaussian_nmse`` of the network to it and
    ``network_mse`` of the map to the network, on ``num_images`` training images noised at
    every sigma; ``num_probes`` and ``ridge`` of the fit."""

    sigmas: Tensor
    gaussian_nmse: Tensor
    network_gaussian_nmse: Tensor
    network_mse: Tensor
    num_probes: int
    ridge: float
    num_images: int

    def record(self) -> dict[str, Any]:
        """``{"sigmas", "gaussian_nmse", "network_gaussian_nmse", "network_mse", "num_probes",
        "ridge", "num_images"}`` (lists of ``S`` floats where per sigma)."""
        return {
            "sigmas": self.sigmas.tolist(),
            "gaussian_nmse": self.gaussian_nmse.tolist(),
            "network_gaussian_nmse": self.network_gaussian_nmse.tolist(),
            "network_mse": self.network_mse.tolist(),
            "num_probes": self.num_probes,
            "ridge": self.ridge,
            "num_images": self.num_images,
        }

    def to_json(self) -> dict[str, Any]:
        """``{"linear_distillation": record}``."""
        return {"linear_distillation": self.record()}

    def scalars(self, prefix: str = "linear_distillation") -> dict[str, float]:
        """``{prefix}/{measure}/sigma_{s:.3g}`` and ``{prefix}/{measure}/mid`` (mean over the
        mid sigma band) of the three measures (finite values only)."""
        out, record = {}, self.record()
        for key in ("gaussian_nmse", "network_gaussian_nmse", "network_mse"):
            for s, v in zip(record["sigmas"], record[key]):
                if math.isfinite(v):
                    out[f"{prefix}/{key}/sigma_{s:.3g}"] = v
            mid = mid_band_mean(record, key)
            if math.isfinite(mid):
                out[f"{prefix}/{key}/mid"] = mid
        return out


class LinearDistillation(EvaluationMember):
    """How close the network's linear distillation is to the Gaussian denoiser and to the network.

    The evaluation's ``linear_distilled`` reference is distilled from the network at every
    refresh (before this member runs). On ``num_images`` images of the training set as the
    network sees it, each noised once at every grid sigma (the evaluation's ``linear_scoring``
    seed, independent of the fit's probes), per sigma: ``||D_lin - D_gauss||^2 /
    ||D_gauss||^2`` and ``||D_net - D_gauss||^2 / ||D_gauss||^2`` (mean of per-probe ratios)
    and ``MSE(D_lin, D_net)``. The Gaussian outputs are computed once; each evaluation costs
    the fit (``num_probes * S`` network calls, shared over DDP processes) and
    ``num_images * S`` network calls (each process its share; the sums reduce across them).
    """

    name = "linear_distillation"
    uses_references = True

    def __init__(self, num_images: int = 16) -> None:
        if num_images < 1:
            raise ValueError(f"linear distillation num_images={num_images} must be >= 1")
        self.num_images = num_images

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        ev = evaluation
        self.linear = ev.reference("linear_distilled")
        self.gaussian = ev.reference("gaussian")
        probes = forward_probes(
            ev.data.reference, ev.sigmas, self.num_images, ev.seeds.linear_scoring
        )
        self.num_images_used = len(probes) // ev.sigmas.numel()
        self.probes = probes.shard(ev.rank, ev.world_size).to(ev.device)
        self._gaussian_out: Tensor | None = None

    def work(self) -> int:
        return len(self.probes) * (1 if self._gaussian_out is not None else 2)

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> LinearDistillationResult:
        ev, z, sigma = self.evaluation, self.probes.z, self.probes.sigma
        if self._gaussian_out is None:
            self._gaussian_out = denoise_batched(self.gaussian, z, sigma, ev.batch_size, bar)
        gauss = self._gaussian_out
        net = denoise_batched(network, z, sigma, ev.batch_size, bar)
        lin = denoise_batched(self.linear, z, sigma, ev.batch_size)
        lin_gauss, net_gauss = NormalizedMSE(ev.sigmas), NormalizedMSE(ev.sigmas)
        lin_net = DenoiserDistance(ev.sigmas)
        lin_gauss.to(ev.device).update(lin, gauss, sigma)
        net_gauss.to(ev.device).update(net, gauss, sigma)
        lin_net.to(ev.device).update(lin, net, sigma)
        dim = math.prod(ev.data.image_shape)
        options = ev.reference_options
        return LinearDistillationResult(
            ev.sigmas,
            lin_gauss.compute().cpu(),
            net_gauss.compute().cpu(),
            lin_net.compute().cpu(),
            options.linear_probes or PROBES_PER_DIMENSION * dim,
            options.linear_ridge,
            self.num_images_used,
        )

    def references_changed(self, names: Sequence[str]) -> None:
        if "gaussian" in names:
            self._gaussian_out = None

    def record(self, result: LinearDistillationResult) -> dict[str, Any]:
        return result.record()

    def report(self, result: LinearDistillationResult) -> dict[str, Any]:
        return result.to_json()

    def figures(
        self, result: LinearDistillationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """The measures against sigma (one line per evaluation); over time the epoch x sigma map."""
        history = list(history) or [(0, result.record())]
        figs = {"linear_distillation/vs_sigma": linear_distillation_figure(result.sigmas, history)}
        if over_time:
            figs["linear_distillation/heatmap"] = linear_distillation_heatmap(
                result.sigmas, history
            )
        return figs


def auto_enabled(image_shape: Sequence[int], device: torch.device | str) -> bool:
    """Whether ``--linear-distillation auto`` turns the member on for images of ``image_shape``
    (``[C, H, W]``) evaluated on ``device``: ``D = C*H*W`` at most :data:`AUTO_MAX_DIM_GPU` on
    CUDA, :data:`AUTO_MAX_DIM_CPU` elsewhere."""
    bound = AUTO_MAX_DIM_GPU if torch.device(device).type == "cuda" else AUTO_MAX_DIM_CPU
    return math.prod(image_shape) <= bound


@dataclass
class LinearDistillationOptions(OptionGroup):
    """``eval.py`` options of the :class:`LinearDistillation` member and its reference."""

    key = "linear"
    linear_distillation: str = option(
        "auto",
        "the network's closed-form linear distillation per sigma against the Gaussian "
        "denoiser (Li et al. 2024), with the linear map's samples in the agreement: on, off, or "
        f"auto (on where D = C*H*W <= {AUTO_MAX_DIM_GPU} on a GPU, e.g. 28x28 and 32x32 grey, "
        f"and <= {AUTO_MAX_DIM_CPU} on CPU, e.g. 16x16 grey: the fit costs "
        f"{PROBES_PER_DIMENSION} x D network calls per sigma)",
    )
    linear_probes: int = option(
        0, f"forward probes per sigma of the linear distillation (0: {PROBES_PER_DIMENSION} x D)"
    )
    linear_ridge: float = option(
        0.0, "ridge of the linear distillation, per probe (docs/reference.md section 3c.2)"
    )
    linear_images: int = option(
        16, "training images, each noised at every sigma, on which the linear map is scored"
    )

    def check(self) -> None:
        if self.linear_distillation not in ("auto", "on", "off"):
            raise ValueError(
                f"--linear-distillation {self.linear_distillation!r}: use auto, on or off"
            )
        if self.linear_probes < 0 or not self.linear_ridge >= 0 or self.linear_images < 1:
            raise ValueError(
                f"--linear-probes {self.linear_probes} and --linear-ridge {self.linear_ridge} "
                f"must be >= 0 and --linear-images {self.linear_images} >= 1"
            )

    def resolve(self, image_shape: Sequence[int], device: torch.device) -> dict[str, Any]:
        """``auto`` decided by :func:`auto_enabled`; ``ValueError`` when the fit would be
        singular (``0 < --linear-probes <= D`` without a ridge)."""
        dim = math.prod(image_shape)
        if 0 < self.linear_probes <= dim and self.linear_ridge == 0:
            raise ValueError(
                f"--linear-probes {self.linear_probes} must exceed D = C*H*W = {dim} for a "
                "unique linear fit: raise it, leave it 0 (4 x D) or set --linear-ridge > 0"
            )
        if self.linear_distillation != "auto":
            return {}
        return {"linear_distillation": "on" if auto_enabled(image_shape, device) else "off"}

    def build(self, settings: Any) -> list[EvaluationMember]:
        return [LinearDistillation(self.linear_images)] if self.linear_distillation == "on" else []
