"""Denoisers and samplers over many probes, a batch at a time."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..diffusion import heun_sample
from ..types import Denoiser


@torch.no_grad()
def denoise_batched(
    denoiser: Denoiser, z: Tensor, sigma: Tensor, batch_size: int, bar: tqdm | None = None
) -> Tensor:
    """``D(z, sigma)`` for ``z [P, C, H, W]``, ``sigma [P]`` in batches -> ``[P, C, H, W]`` float32."""
    outs = [z.new_zeros((0, *z.shape[1:]))]
    for start in range(0, z.shape[0], batch_size):
        zb, sb = z[start : start + batch_size], sigma[start : start + batch_size]
        outs.append(denoiser(zb, sb.to(zb.dtype)).float())
        if bar is not None:
            bar.update(zb.shape[0])
    return torch.cat(outs)


@torch.no_grad()
def sample_batched(
    denoiser: Denoiser,
    noise: Tensor,
    num_steps: int,
    batch_size: int,
    bar: tqdm | None = None,
    sigmas: Tensor | None = None,
) -> Tensor:
    """Heun PF-ODE samples (EDM algorithm 1) from ``noise [M, C, H, W]`` -> ``[M, C, H, W]``, on
    the schedule ``sigmas`` (default: the EDM schedule of ``num_steps`` steps)."""
    outs = [noise.new_zeros((0, *noise.shape[1:]))]
    for start in range(0, noise.shape[0], batch_size):
        chunk = noise[start : start + batch_size]
        outs.append(heun_sample(denoiser, chunk, sigmas, num_steps=num_steps).float())
        if bar is not None:
            bar.update(chunk.shape[0])
    return torch.cat(outs)
