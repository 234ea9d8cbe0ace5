"""Empirical denoiser: the posterior mean under the training set (docs/reference.md section
2.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser
from .softmax import OnlineSoftmax


def empirical_posterior_mean(
    z: Tensor, sigma: Tensor, images: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> Tensor:
    """``sum_i softmax_i(-||z - x_i||^2 / 2 sigma^2) x_i`` for flat vectors.

    ``z [B, D]`` float64, ``sigma [B]`` float64, ``images [N, D]`` (any float dtype, same device)
    -> ``[B, D]`` float64. Streams over the training set in chunks of at most
    ``chunk_elements // B`` images with an online softmax.

    Logits are computed in float64 as ``(2 z.x - ||x||^2) / 2 sigma^2`` (the ``||z||^2`` term is
    constant over i and cancels in the softmax) with one matrix product per chunk against
    ``[x, ||x||^2]``. In float64 the cancellation of this expanded form is harmless even at
    sigma = 0.002 (logit error ~1e-8), unlike float32 where logits of ~1e5 lose all digits.
    """
    b, d = z.shape
    inv_s2 = (1.0 / sigma.square()).unsqueeze(1)  # [B, 1]
    lhs = torch.cat([z * inv_s2, -0.5 * inv_s2], dim=1)  # [B, D+1]
    state = OnlineSoftmax.empty((b,), d, like=z)
    step = max(1, chunk_elements // max(b, 1))
    for start in range(0, images.shape[0], step):
        x = images[start : start + step].to(torch.float64)  # [n, D]
        rhs = torch.cat([x, x.square().sum(1, keepdim=True)], dim=1)  # [n, D+1]
        state.update(lhs @ rhs.T, x)  # logits [B, n]
    return state.result()


class EmpiricalDenoiser(ClosedFormDenoiser):
    """Optimal denoiser for the training set: ``D(z, s) = sum_i w_i x_i``,
    ``w = softmax_i(-||z - x_i||^2 / (2 s^2))`` (docs/reference.md section 2.1; Niedoba et al. 2024
    eq. 3).

    A network that matches it has memorized its training set: it reproduces training images.

    Args:
        images: the training set ``[N, C, H, W]`` in [-1, 1], exactly as the network sees it (with
            x-flipped copies when training used x-flips: ``ImageDataModule.reference_images()``).
        chunk_elements: bound on the elements of the per-chunk logit matrix (memory, not N).
    """

    def __init__(self, images: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
        super().__init__(images, chunk_elements)
        self.register_buffer("images", images.float().flatten(1).contiguous(), persistent=False)

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        out = empirical_posterior_mean(z.flatten(1), sigma, self.images, self.chunk_elements)
        return out.view_as(z)
