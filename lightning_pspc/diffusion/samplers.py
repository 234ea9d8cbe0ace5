"""Deterministic PF-ODE samplers (Karras et al. 2022, algorithm 1).

All samplers share one signature and accept any denoiser ``D(z, sigma)``: a trained network
behind :class:`~lightning_pspc.diffusion.EDMPrecond` or a closed-form denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..types import Denoiser
from .schedule import edm_sigmas


def _schedule(sigmas: Tensor | None, num_steps: int, device: torch.device) -> Tensor:
    if sigmas is None:
        sigmas = edm_sigmas(num_steps, append_zero=True)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=device)
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas


def _call(denoiser: Denoiser, z: Tensor, sigma: Tensor) -> Tensor:
    return denoiser(z, sigma.to(z.dtype).expand(z.shape[0]).contiguous())


@torch.no_grad()
def euler_sample(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor | None = None,
    num_steps: int = 18,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Euler steps of ``dz/dsigma = (z - D(z, sigma)) / sigma`` from ``z = sigma_0 * noise``.

    ``noise [B,C,H,W]`` is unit Gaussian; ``sigmas`` decreasing (a final 0 is appended if absent),
    default the EDM schedule with ``num_steps`` steps. With ``return_trajectory`` also returns the
    states ``z_i`` at each ``sigma_i`` before the final step (``len == num_steps``).
    """
    sig = _schedule(sigmas, num_steps, noise.device)
    z = noise.double() * sig[0]
    traj = []
    for s, s_next in zip(sig[:-1], sig[1:]):
        traj.append(z.float())
        d = (z - _call(denoiser, z.float(), s).double()) / s
        z = z + (s_next - s) * d
    out = z.float()
    return (out, traj) if return_trajectory else out


@torch.no_grad()
def heun_sample(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor | None = None,
    num_steps: int = 18,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Heun (2nd order) PF-ODE sampler, EDM algorithm 1 (deterministic, no churn).

    Same signature as :func:`euler_sample`. The second evaluation is skipped on the last step
    (to sigma = 0), so 18 steps cost 35 denoiser evaluations.
    """
    sig = _schedule(sigmas, num_steps, noise.device)
    z = noise.double() * sig[0]
    traj = []
    for s, s_next in zip(sig[:-1], sig[1:]):
        traj.append(z.float())
        d = (z - _call(denoiser, z.float(), s).double()) / s
        z_next = z + (s_next - s) * d
        if s_next > 0:
            d2 = (z_next - _call(denoiser, z_next.float(), s_next).double()) / s_next
            z_next = z + (s_next - s) * (d + d2) / 2
        z = z_next
    out = z.float()
    return (out, traj) if return_trajectory else out
