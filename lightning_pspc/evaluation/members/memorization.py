"""Memorization of the network's samples (Gu et al. 2023) and over training time (Bonnaire et al.).

:class:`Memorization` draws Heun samples from fixed noise and compares them with the training
images (memorized fraction, nearest-neighbour distance and cosine; docs/reference.md sections 3.2,
3.3); :class:`MemorizationOverTime` also keeps the training images seen, for the chart of the
memorized fraction over training time (docs/reference.md section 3b.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ...metrics import MemorizedFraction, NearestNeighbourStats, nearest_neighbours
from ...types import Denoiser
from ..batching import sample_batched
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.comparison_charts import neighbours_figure
from ..plots.generalization_charts import memorized_vs_images_figure


def memorization_stats(
    samples: Tensor, train_images: Tensor, threshold: float = 1 / 3
) -> dict[str, float]:
    """Memorized fraction (Gu et al. 2023) and nearest-neighbour stats of ``samples [M, C, H, W]``.

    Synced over DDP processes (each passes its own samples). Keys: ``memorized_fraction``,
    ``nn_dist_mean``, ``nn_dist_median``, ``max_cos_mean``, ``max_cos_median``.
    """
    train = train_images.to(samples.device)
    memorized = MemorizedFraction(train, threshold=threshold).to(samples.device)
    stats = NearestNeighbourStats(train).to(samples.device)
    memorized.update(samples)
    stats.update(samples)
    out = {"memorized_fraction": float(memorized.compute())}
    out.update({k: float(v) for k, v in stats.compute().items()})
    return out


def nearest_training_images(samples: Tensor, train_images: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest training image ``[M, C, H, W]`` of each sample and the ratio ``d1 / d2`` ``[M]``.

    ``d1, d2``: pixel L2 distances to the nearest and second-nearest training images (Gu et al.
    2023; a ratio below 1/3 counts as memorized). Needs at least two training images.
    """
    train = train_images.to(samples.device)
    dist, idx = nearest_neighbours(samples, train, k=2)
    ratio = torch.where(dist[:, 1] > 0, dist[:, 0] / dist[:, 1].clamp_min(1e-300), 0.0)
    return train[idx[:, 0]], ratio


@dataclass
class MemorizationResult:
    """Samples of this process ``[M_local, C, H, W]`` and the global memorization statistics."""

    samples: Tensor
    stats: dict[str, float]
    threshold: float

    def scalars(self, prefix: str = "memorization") -> dict[str, float]:
        """``{prefix}/memorized_fraction``, ``{prefix}/nn_dist_mean`` ..."""
        return {f"{prefix}/{k}": v for k, v in self.stats.items()}

    def to_json(self) -> dict[str, Any]:
        """``{"memorized_fraction": f, "nearest_neighbour": {...}}``."""
        return {
            "memorized_fraction": self.stats["memorized_fraction"],
            "nearest_neighbour": {k: v for k, v in self.stats.items() if k != "memorized_fraction"},
        }


class Memorization(EvaluationMember):
    """Heun samples (``num_steps`` steps) from ``num_samples`` fixed noise images, compared with
    the training images: memorized fraction (``d1/d2 < threshold``, Gu et al. 2023), nearest-
    neighbour distance and cosine similarity (Kadkhodaie et al. 2024). ``grid_size`` samples are
    drawn above their nearest training images."""

    name = "memorization"

    def __init__(
        self, num_samples: int, num_steps: int = 18, threshold: float = 1 / 3, grid_size: int = 16
    ) -> None:
        if min(num_samples, num_steps, grid_size) < 1 or not threshold > 0:
            raise ValueError(
                f"num_samples={num_samples}, num_steps={num_steps} and grid_size={grid_size} must "
                f"be >= 1 and threshold={threshold} > 0"
            )
        self.num_samples, self.num_steps = num_samples, num_steps
        self.threshold, self.grid_size = threshold, grid_size

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        if evaluation.data.train.shape[0] < 2:
            raise ValueError(
                "memorization needs at least 2 training images (nearest and second-nearest "
                "neighbours); increase data.num_train"
            )
        self.noise = evaluation.noise(self.num_samples, evaluation.seeds.sample_noise)
        self.train_images = evaluation.data.train.to(evaluation.device)

    def work(self) -> int:
        return self.noise.shape[0]

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> MemorizationResult:
        batch = self.evaluation.batch_size
        schedule = self.evaluation.sampler_sigmas(self.num_steps)
        samples = sample_batched(network, self.noise, self.num_steps, batch, bar, schedule)
        self.last = (network, samples)  # reused by members that sample from the same noise
        stats = memorization_stats(samples, self.train_images, self.threshold)
        return MemorizationResult(samples, stats, self.threshold)

    def report(self, result: MemorizationResult) -> dict[str, Any]:
        return result.to_json()

    def samples(self, result: MemorizationResult) -> Tensor:
        return result.samples

    def figures(
        self, result: MemorizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        shown = result.samples[: self.grid_size]
        if not shown.shape[0]:
            return {}
        neighbours, ratio = nearest_training_images(shown, self.train_images)
        return {"neighbours": neighbours_figure(shown, neighbours, ratio, result.threshold)}


class MemorizationOverTime(Memorization):
    """:class:`~lightning_pspc.evaluation.Memorization` whose records also hold
    ``images_seen`` (set :attr:`images_seen` before each evaluation) and whose charts, over
    time, add the memorized fraction against training images seen (Bonnaire et al. 2025)."""

    images_seen: int = 0

    def record(self, result: MemorizationResult) -> dict[str, Any]:
        return {**result.to_json(), "images_seen": int(self.images_seen)}

    def figures(
        self, result: MemorizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        figs = super().figures(result, history, over_time)
        records = [r for _, r in history if r.get("images_seen") is not None]
        if over_time and records:
            figs["memorized_vs_images"] = memorized_vs_images_figure(records)
        return figs


@dataclass
class MemorizationOptions(OptionGroup):
    """``eval.py`` options of the :class:`Memorization` member."""

    key = "memorization"
    num_samples: int = option(64, "Heun samples for the memorization statistics")
    threshold: float = option(1 / 3, "memorized when d(NN1) / d(NN2) < threshold (Gu et al. 2023)")

    def check(self) -> None:
        if self.num_samples < 1 or not self.threshold > 0:
            raise ValueError(
                f"--num-samples {self.num_samples} must be >= 1 and --threshold "
                f"{self.threshold} > 0"
            )

    def build(self, settings: Any) -> list[EvaluationMember]:
        steps = settings.evaluation.num_steps
        return [Memorization(self.num_samples, steps, self.threshold)]
