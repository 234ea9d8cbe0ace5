"""Noise-level schedules (Karras et al. 2022, EDM)."""

from __future__ import annotations

import torch
from torch import Tensor

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0


def edm_sigmas(
    num_steps: int = 18,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    append_zero: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """EDM sampling schedule, eq. 5: ``[num_steps]`` sigmas from ``sigma_max`` down to ``sigma_min``.

    ``sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``; with
    ``append_zero`` a final ``0`` is appended (``[num_steps + 1]``).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    denom = max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + i / denom * (lo - hi)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(dtype)


def sample_training_sigmas(
    n: int,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """EDM training noise levels: ``ln sigma ~ N(p_mean, p_std^2)``; returns ``[n]`` float32."""
    ln_sigma = torch.randn(n, generator=generator, device=device) * p_std + p_mean
    return ln_sigma.exp()


#: How a sigma off a schedule's grid finds its grid sigma: ``"absolute"`` (the nearest by
#: ``|sigma - s|``, as the published PSPC code does) or ``"log"`` (the nearest by
#: ``|log sigma - log s|``, which a coarse calibrated grid needs: halfway between 0.1 and 10 in
#: log is 1, not 5).
NEAREST_RULES = ("absolute", "log")


def nearest_grid_index(sigma: Tensor, grid: Tensor, rule: str = "absolute") -> Tensor:
    """Index ``[B]`` (long) into ``grid [S]`` of the grid sigma nearest to each of ``sigma [B]``
    by ``rule`` (:data:`NEAREST_RULES`)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=grid.device).reshape(-1, 1)
    if rule == "log":
        return (sigma.log() - grid.double().log()).abs().argmin(1)
    if rule == "absolute":
        return (sigma - grid.double()).abs().argmin(1)
    raise ValueError(f"nearest={rule!r}: use one of {NEAREST_RULES}")
