"""How close generated samples lie to the training set (Kadkhodaie et al. 2024; Gu et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .functional import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_train_images,
    nearest_neighbours,
    pairwise_cosine_max,
)


class NearestNeighbourStats(Metric):
    """Per sample: L2 distance to the nearest training image, cosine to the most similar one.

    A model that generalizes produces samples whose similarity to their closest training image
    stays clearly below 1 (Kadkhodaie et al. 2024); a memorizing one copies training images
    (distance near 0, cosine near 1). Both use pixel vectors; distances come from exact float64
    differences, the training set is streamed in ``chunk_size`` chunks.

    Args:
        train_images: ``[N, C, H, W]`` training set, ``N >= 1``. Kept as a plain attribute where
            you put it (never synced, broadcast or checkpointed).
        chunk_size: training images compared at once.

    ``update(samples [M, C, H, W])``; ``compute()`` -> dict of float64 scalars ``nn_dist_mean``,
    ``nn_dist_median``, ``max_cos_mean``, ``max_cos_median`` (median: 0.5 quantile, interpolated).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    nn_dist: list[Tensor]
    max_cos: list[Tensor]

    def __init__(
        self, train_images: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        check_chunk_size(chunk_size)
        self.train_images = check_train_images(train_images, min_images=1)
        self.chunk_size = chunk_size
        # medians need every value, hence "cat" states
        self.add_state("nn_dist", [], dist_reduce_fx="cat")
        self.add_state("max_cos", [], dist_reduce_fx="cat")

    def update(self, samples: Tensor) -> None:
        """Record nearest-neighbour distance and max cosine of ``samples [M, C, H, W]``."""
        dist, _ = nearest_neighbours(samples, self.train_images, k=1, chunk_size=self.chunk_size)
        cos, _ = pairwise_cosine_max(samples, self.train_images, chunk_size=self.chunk_size)
        self.nn_dist.append(dist[:, 0].to(self.device))
        self.max_cos.append(cos.to(self.device))

    def compute(self) -> dict[str, Tensor]:
        """Mean and median of the nearest-neighbour distance and of the max cosine similarity."""
        if isinstance(self.nn_dist, list) and not self.nn_dist:  # no update yet: NaN, no crash
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
            return dict.fromkeys(
                ("nn_dist_mean", "nn_dist_median", "max_cos_mean", "max_cos_median"), nan
            )
        dist, cos = dim_zero_cat(self.nn_dist), dim_zero_cat(self.max_cos)
        return {
            "nn_dist_mean": dist.mean(),
            "nn_dist_median": dist.quantile(0.5),
            "max_cos_mean": cos.mean(),
            "max_cos_median": cos.quantile(0.5),
        }
