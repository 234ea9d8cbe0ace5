"""Distance between two denoisers per noise level (Niedoba et al. 2025, figs. 2 and 7)."""

from __future__ import annotations

from torch import Tensor

from .functional import denoiser_mse
from .per_sigma import PerSigmaMean


class DenoiserDistance(PerSigmaMean):
    """Mean ``MSE(D_a(z, s), D_b(z, s))`` over probes, separately for each sigma of a grid.

    ``update(out_a, out_b, sigma)`` takes both denoisers' outputs ``[B, C, H, W]`` on the same
    probes ``z`` and the probes' noise levels ``sigma [B]`` (or a float). Each probe goes to the
    grid sigma nearest in log space (:class:`~lightning_pspc.metrics.per_sigma.PerSigmaMean`),
    and its MSE (mean over C, H, W) is summed per grid index in float64. ``compute()`` returns
    ``[num_sigmas]`` float64: the mean MSE per grid sigma, NaN where no probe fell.
    """

    higher_is_better = False

    def update(self, out_a: Tensor, out_b: Tensor, sigma: Tensor | float) -> None:
        """Accumulate ``out_a, out_b [B, C, H, W]`` with noise levels ``sigma [B]`` or a float."""
        self._accumulate(denoiser_mse(out_a, out_b), sigma)
