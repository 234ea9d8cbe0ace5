"""Base class: the mean of a per-probe value, separately for each sigma of a grid."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from .functional import nearest_sigma_index


class PerSigmaMean(Metric):
    """Mean of a per-probe float value over the probes that fall on each grid sigma.

    Subclasses compute one value per probe ``[B]`` in ``update`` and pass it, with the probes'
    noise levels, to :meth:`_accumulate`. Each probe goes to the grid sigma nearest in log space
    (an exact grid value maps to itself; see
    :func:`~lightning_pspc.metrics.functional.nearest_sigma_index`) and its value is summed per
    grid index in float64 (``dist_reduce_fx="sum"`` states). ``compute()`` returns
    ``[num_sigmas]`` float64: the mean per grid sigma, NaN where no probe fell.
    """

    is_differentiable = False
    full_state_update = False

    sum_value: Tensor
    count: Tensor
    sigmas: Tensor

    def __init__(self, sigmas: Sequence[float] | Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        grid = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        if grid.numel() == 0 or (grid <= 0).any() or not torch.isfinite(grid).all():
            raise ValueError(
                f"sigmas must be a non-empty list of positive finite noise levels, got {sigmas}"
            )
        # a plain attribute, not a buffer: module dtype casts (``.to(bfloat16)``) must not touch it
        self.sigmas = grid
        num = grid.numel()
        self.add_state("sum_value", torch.zeros(num, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor, sigma: Tensor | float) -> None:
        """Add ``values [B]`` of probes with noise levels ``sigma [B]`` (or one float)."""
        sigma = torch.as_tensor(sigma, device=values.device).flatten()
        if sigma.numel() == 1:
            sigma = sigma.expand(values.shape[0])
        if sigma.numel() != values.shape[0]:
            raise ValueError(
                f"sigma has {sigma.numel()} values for a batch of {values.shape[0]}; "
                "pass one sigma per batch element or a single float"
            )
        idx = nearest_sigma_index(sigma, self.sigmas).to(self.count.device)  # [B]
        self.sum_value.index_add_(0, idx, values.to(self.sum_value.device, torch.float64))
        self.count.index_add_(0, idx, torch.ones_like(idx))

    def compute(self) -> Tensor:
        """Mean per grid sigma ``[num_sigmas]`` (float64), NaN where no probe fell."""
        mean = self.sum_value / self.count.clamp_min(1)
        return torch.where(self.count > 0, mean, torch.full_like(mean, float("nan")))

    def _wrap_compute(self, compute: Callable[[], Tensor]) -> Callable[[], Tensor]:
        # torchmetrics squeezes every one-element result to 0-d; a one-sigma grid must still
        # give one value per sigma, [1]. (Metric.__init__ and __setstate__ both wrap here.)
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def per_sigma() -> Tensor:
            return wrapped().reshape(self.sigmas.numel())

        return per_sigma
