"""Metrics of memorization and generalization (docs/reference.md sections 3 and 3b).

Each metric is a ``torchmetrics.Metric`` whose states declare their DDP reduction, built on a pure
function in :mod:`lightning_pspc.metrics.functional`.
"""

from .denoiser_distance import DenoiserDistance
from .denoiser_fit import NormalizedMSE, RSquared
from .feature_similarity import FeatureCosine
from .functional import (
    denoiser_mse,
    linearity_cosine,
    linearity_score,
    memorized_mask,
    nearest_neighbours,
    nearest_sigma_index,
    nn_distance_ratio,
    normalized_mse,
    paired_cosine_similarity,
    paired_pearson_correlation,
    pairwise_cosine_max,
    r_squared,
    summary_statistics,
    twin_similarities,
)
from .linearity import LinearityOutputs, LinearityScore, linearity_outputs
from .memorized_fraction import MemorizedFraction
from .neighbour_stats import NearestNeighbourStats
from .per_sigma import PerSigmaMean
from .sample_agreement import SampleAgreement
from .twin_similarity import REPRODUCIBILITY_THRESHOLD, TwinSimilarity

__all__ = [
    "REPRODUCIBILITY_THRESHOLD",
    "DenoiserDistance",
    "FeatureCosine",
    "LinearityOutputs",
    "LinearityScore",
    "MemorizedFraction",
    "NearestNeighbourStats",
    "NormalizedMSE",
    "PerSigmaMean",
    "RSquared",
    "SampleAgreement",
    "TwinSimilarity",
    "denoiser_mse",
    "linearity_cosine",
    "linearity_outputs",
    "linearity_score",
    "memorized_mask",
    "nearest_neighbours",
    "nearest_sigma_index",
    "nn_distance_ratio",
    "normalized_mse",
    "paired_cosine_similarity",
    "paired_pearson_correlation",
    "pairwise_cosine_max",
    "r_squared",
    "summary_statistics",
    "twin_similarities",
]
