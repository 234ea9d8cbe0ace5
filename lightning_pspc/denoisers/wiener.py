"""Wiener locality (Lukoianov et al., NeurIPS 2025, "Locality in image diffusion models emerges
from data statistics"; docs/reference.md section 2.7): masks from the data's Wiener filter, an FPMC
member (:mod:`.fpmc`) with per-dimension queries and responses."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser, check_images
from .fpmc import DEFAULT_BLOCK_SIZE, FilteredPosteriorMeans
from .gaussian import gaussian_moments

#: Diagonal entries of the Wiener filter below this magnitude are replaced by 1 (published code).
DIAGONAL_EPS = 1e-6


def wiener_masks(
    eigenvalues: Tensor, eigenvectors: Tensor, sigma: float, threshold: float
) -> Tensor:
    """Binary locality masks ``M [D, D]`` (float64) at noise level ``sigma``.

    ``W = U diag(lam / (lam + s^2)) U^T``; rows divided by their diagonal entry (entries below
    1e-6 in magnitude replaced by 1); ``M = |W_hat| >= threshold * max |W_hat|``. Output
    dimension ``m`` queries with the column ``M[:, m]``.
    """
    u = eigenvectors.to(torch.float64)
    shrink = eigenvalues.to(torch.float64) / (eigenvalues.to(torch.float64) + sigma**2)
    w = (u * shrink) @ u.T  # [D, D]
    diag = w.diagonal().clone()
    diag[diag.abs() < DIAGONAL_EPS] = 1.0
    w_hat = (w / diag.unsqueeze(1)).abs()
    return (w_hat >= threshold * w_hat.max()).to(torch.float64)


class WienerLocalityDenoiser(ClosedFormDenoiser):
    """Lukoianov et al.'s analytical locality model: output dimension ``m`` (of ``D = C*H*W``) is
    ``sum_n w_mn x_nm`` with ``w_mn = softmax_n(-sum_j M_jm (z_j - x_nj)^2 / (2 s^2 T))``.

    ``M`` (:func:`wiener_masks`) thresholds the training set's Wiener filter at ``sigma``
    (population covariance), so the masks come from the data, not from a network; ``threshold
    = 0`` is the empirical denoiser. Unlike the published code (softmax normalised within each
    data chunk, chunks averaged) the softmax is exact over the whole training set. Masks are built
    per distinct sigma of the batch and cached.

    Data with (near-)constant pixels: the global-maximum rule (as published) lets one row decide
    every mask. On Fashion-MNIST (1,024 images) 12 border pixels have variance < 1e-4; their
    Wiener diagonal is ~1e-6, just above the 1e-6 floor, so their rows divided by it reach
    ``max |W_hat|`` = 52 at sigma = 0.05 and 58 at 0.5, above ``1 / threshold`` = 50: then no mask
    holds its own pixel (all 784 diagonals fall below ``0.02 * max``), masks average 3-5
    neighbours, and the model denoises worse than the empirical denoiser at sigma <= 1. The
    published data (CelebA-HQ, AFHQ) have no constant pixels. Kept as published (docs/reference.md);
    a smaller ``threshold`` or data without constant pixels avoid it.

    Args:
        images: training set ``[N, C, H, W]`` in [-1, 1].
        threshold: mask threshold relative to the largest entry (0.02 default, 0.05 CIFAR-10).
        temperature: ``T`` dividing the logits.
    """

    def __init__(
        self,
        images: Tensor,
        threshold: float = 0.02,
        temperature: float = 1.0,
        block_size: int = DEFAULT_BLOCK_SIZE,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        cache_size: int = 64,
    ) -> None:
        images = check_images(images)
        super().__init__(images, chunk_elements)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1] (relative to max |W|), got {threshold}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.threshold, self.temperature = float(threshold), float(temperature)
        self.block_size, self.cache_size = int(block_size), int(cache_size)
        _, lam, u = gaussian_moments(images)
        self.register_buffer("images", images.contiguous(), persistent=False)
        self.register_buffer("eigenvalues", lam, persistent=False)
        self.register_buffer("eigenvectors", u, persistent=False)
        self._collections: dict[float, FilteredPosteriorMeans] = {}

    def collection(self, sigma: float) -> FilteredPosteriorMeans:
        """The prepared FPMC collection at noise level ``sigma`` (cached per value)."""
        if sigma not in self._collections:
            if len(self._collections) >= self.cache_size:
                self._collections.pop(next(iter(self._collections)))
            c, h, w = self.image_shape
            d = c * h * w
            m = wiener_masks(self.eigenvalues.cpu(), self.eigenvectors.cpu(), sigma, self.threshold)
            q = m.T.contiguous().view(d, c, h, w)  # element m queries with column M[:, m]
            r = torch.eye(d, dtype=torch.float64).view(d, c, h, w)
            self._collections[sigma] = FilteredPosteriorMeans(
                q, r, self.image_shape, self.block_size
            )
        return self._collections[sigma].to(self.images.device)

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        out = torch.empty_like(z)
        for s in sigma.unique().tolist():
            sel = (sigma == s).nonzero().squeeze(1)
            out[sel] = self.collection(float(s)).posterior_mean(
                z[sel], sigma[sel], self.images, self.temperature, self.chunk_elements
            )
        return out

    def extra_repr(self) -> str:
        return f"N={self.num_images}, threshold={self.threshold}, temperature={self.temperature}"
