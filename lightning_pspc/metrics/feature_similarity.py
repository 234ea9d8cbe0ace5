"""Cosine similarity of paired samples in a feature space (Zhang et al. 2023; Niedoba et al. 2025,
fig. 9; docs/reference.md section 3b.4)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric

from .functional import cat_state, paired_cosine_similarity, summary_statistics


class FeatureCosine(Metric):
    """Cosine similarity of each pair of feature descriptors, summarised.

    ``update(features_a, features_b)`` with ``[M, D]`` each: the descriptors of two sets of
    samples drawn from the same noise (pair ``i`` is row ``i`` of both), e.g. from SSCD
    (:class:`~lightning_pspc.pretrained.FeatureExtractor`). Per-pair cosines are kept in a
    ``cat`` state (gathered under DDP), so the quantiles are exact. ``compute()`` -> float64
    ``{prefix}_{mean, median, q25, q75}`` (NaN before any update).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    cosine: list[Tensor]

    def __init__(self, prefix: str = "feature_cosine", **kwargs) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.add_state("cosine", [], dist_reduce_fx="cat")

    def update(self, features_a: Tensor, features_b: Tensor) -> None:
        """Record the cosines of the pairs ``features_a[i], features_b[i]`` (``[M, D]``)."""
        self.cosine.append(paired_cosine_similarity(features_a, features_b).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        return summary_statistics(cat_state(self.cosine, self.device), self.prefix)
