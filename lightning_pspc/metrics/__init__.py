"""Metrics of memorization and generalization (REFERENCE.md section 3).

Each metric is a ``torchmetrics.Metric`` whose states declare their DDP reduction, built on a pure
function in :mod:`lightning_pspc.metrics.functional`.
"""

from .denoiser_distance import DenoiserDistance
from .functional import (
    denoiser_mse,
    linearity_score,
    memorized_mask,
    nearest_neighbours,
    nearest_sigma_index,
    nn_distance_ratio,
    paired_cosine_similarity,
    pairwise_cosine_max,
)
from .memorization import MemorizedFraction
from .similarity import NearestNeighbourStats

__all__ = [
    "DenoiserDistance",
    "MemorizedFraction",
    "NearestNeighbourStats",
    "denoiser_mse",
    "linearity_score",
    "memorized_mask",
    "nearest_neighbours",
    "nearest_sigma_index",
    "nn_distance_ratio",
    "paired_cosine_similarity",
    "pairwise_cosine_max",
]
