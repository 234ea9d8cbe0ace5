"""How closely a reference denoiser fits the network per noise level (Li et al.; Lukoianov et al.)."""

from __future__ import annotations

from torch import Tensor

from .functional import normalized_mse, r_squared
from .per_sigma import PerSigmaMean


class NormalizedMSE(PerSigmaMean):
    """Li et al. (2024): ``||D_net - D_gauss||^2 / ||D_gauss||^2`` per sigma.

    The **mean of per-sample ratios** (each probe's squared distance divided by its own Gaussian
    output's energy, as docs/reference.md suggests), not the ratio of sums over the probes.
    ``update(out, ref, sigma)``: ``out [B, C, H, W]`` the network's output, ``ref`` the reference
    (Gaussian) denoiser's output on the same probes, ``sigma [B]`` or a float. ``compute()`` ->
    ``[num_sigmas]`` float64, NaN where no probe fell (nearest grid sigma in log space). A probe
    with ``ref = 0`` counts as 0 if ``out = 0`` else ``inf``.
    """

    higher_is_better = False

    def update(self, out: Tensor, ref: Tensor, sigma: Tensor | float) -> None:
        """Accumulate per-probe ``||out - ref||^2 / ||ref||^2`` of ``[B, C, H, W]`` outputs."""
        self._accumulate(normalized_mse(out, ref), sigma)


class RSquared(PerSigmaMean):
    """Lukoianov et al. (2025): per-sample ``R^2`` of a reference's output against the network's.

    ``1 - ||a - b||^2 / (D * Var(b))`` with ``a`` the reference (closed-form) output, ``b`` the
    network's, ``D`` pixels per sample, ``Var`` the population variance of ``b``'s pixels;
    averaged over probes per grid sigma. One instance per reference denoiser (empirical,
    Gaussian, PSPC, ...). ``update(ref, net, sigma)`` with ``[B, C, H, W]`` outputs and
    ``sigma [B]`` or a float; ``compute()`` -> ``[num_sigmas]`` float64, NaN where no probe fell.
    A constant network output gives 1 when the reference equals it, else ``-inf``.
    """

    higher_is_better = True

    def update(self, ref: Tensor, net: Tensor, sigma: Tensor | float) -> None:
        """Accumulate per-probe ``R^2`` of ``ref`` against ``net`` (``[B, C, H, W]`` each)."""
        self._accumulate(r_squared(ref, net), sigma)
