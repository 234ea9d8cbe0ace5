"""Distance between two denoisers per noise level (Niedoba et al. 2025, figs. 2 and 7)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from .functional import denoiser_mse, nearest_sigma_index


class DenoiserDistance(Metric):
    """Mean ``MSE(D_a(z, s), D_b(z, s))`` over probes, separately for each sigma of a grid.

    ``update(out_a, out_b, sigma)`` takes both denoisers' outputs ``[B, C, H, W]`` on the same
    probes ``z`` and the probes' noise levels ``sigma [B]`` (or a float). Each probe goes to the
    grid sigma nearest in log space (an exact grid value maps to itself; see
    :func:`~lightning_pspc.metrics.functional.nearest_sigma_index`), and its MSE (mean over
    C, H, W) is summed per grid index in float64. ``compute()`` returns ``[num_sigmas]`` float64:
    the mean MSE per grid sigma, NaN where no probe fell.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    sum_mse: Tensor
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
        self.add_state("sum_mse", torch.zeros(num, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, out_a: Tensor, out_b: Tensor, sigma: Tensor | float) -> None:
        """Accumulate ``out_a, out_b [B, C, H, W]`` with noise levels ``sigma [B]`` or a float."""
        mse = denoiser_mse(out_a, out_b)  # [B]
        sigma = torch.as_tensor(sigma, device=mse.device).flatten()
        if sigma.numel() == 1:
            sigma = sigma.expand(mse.shape[0])
        if sigma.numel() != mse.shape[0]:
            raise ValueError(
                f"sigma has {sigma.numel()} values for a batch of {mse.shape[0]}; "
                "pass one sigma per batch element or a single float"
            )
        idx = nearest_sigma_index(sigma, self.sigmas).to(self.count.device)  # [B]
        self.sum_mse.index_add_(0, idx, mse.to(self.sum_mse.device))
        self.count.index_add_(0, idx, torch.ones_like(idx))

    def compute(self) -> Tensor:
        """Mean MSE per grid sigma ``[num_sigmas]`` (float64), NaN where no probe fell."""
        mean = self.sum_mse / self.count.clamp_min(1)
        return torch.where(self.count > 0, mean, torch.full_like(mean, float("nan")))

    def _wrap_compute(self, compute: Callable[[], Tensor]) -> Callable[[], Tensor]:
        # torchmetrics squeezes every one-element result to 0-d; a one-sigma grid must still
        # give one value per sigma, [1]. (Metric.__init__ and __setstate__ both wrap here.)
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def per_sigma() -> Tensor:
            return wrapped().reshape(self.sigmas.numel())

        return per_sigma
