"""Per-pair agreement of two sets of samples drawn from the same noise (docs/reference.md 3b)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric

from .functional import (
    cat_state,
    denoiser_mse,
    paired_cosine_similarity,
    paired_pearson_correlation,
    summary_statistics,
)

AGREEMENT_MEASURES = ("mse", "cosine", "pearson")


class SampleAgreement(Metric):
    """MSE, cosine similarity and Pearson correlation of each pair of final samples.

    From the same initial noise, sample with the network and with a closed-form denoiser (same
    sampler); pair ``i`` is ``(samples_a[i], samples_b[i])``. Kamb & Ganguli report the median
    per-sample Pearson r; Niedoba et al. (fig. 9) compare similarities of such pairs.

    ``update(samples_a, samples_b)`` with ``[M, C, H, W]`` each. Per-pair values are kept in
    ``cat`` states (gathered by torchmetrics under DDP) so quantiles are exact. ``compute()`` ->
    dict of float64 scalars ``{mse, cosine, pearson}_{mean, median, q25, q75}`` (quartiles by
    linear interpolation; NaN before any update). MSE is the mean over pixels; a zero (cosine) or
    constant (Pearson) image scores 0 against anything.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    mse: list[Tensor]
    cosine: list[Tensor]
    pearson: list[Tensor]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in AGREEMENT_MEASURES:
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, samples_a: Tensor, samples_b: Tensor) -> None:
        """Record the three per-pair measures of ``samples_a, samples_b [M, C, H, W]``."""
        self.mse.append(denoiser_mse(samples_a, samples_b).to(self.device))
        self.cosine.append(paired_cosine_similarity(samples_a, samples_b).to(self.device))
        self.pearson.append(paired_pearson_correlation(samples_a, samples_b).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        """Mean, median and quartiles of each per-pair measure."""
        result: dict[str, Tensor] = {}
        for name in AGREEMENT_MEASURES:
            result.update(summary_statistics(cat_state(getattr(self, name), self.device), name))
        return result
