"""Gaussian denoiser (Li, Dai, Qu 2024): the optimal denoiser for a Gaussian fitted to the data."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ClosedFormDenoiser


def gaussian_moments(images: Tensor, rank: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Mean ``mu [D]``, top eigenvalues ``lam [k]`` and eigenvectors ``U [D, k]`` of the data.

    ``images [N, ...]``; population covariance (divisor N), computed in float64. Uses the SVD of
    the centred data when N < D (cheaper, and the covariance has rank < N anyway), otherwise the
    eigendecomposition of the D x D covariance. Eigenvalues are sorted in decreasing order;
    ``rank`` keeps the top ``rank`` pairs (default all).
    """
    x = images.reshape(images.shape[0], -1).to(torch.float64)
    n, d = x.shape
    mu = x.mean(0)
    xc = x - mu
    if n < d:
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)  # s [n], vh [n, D]
        lam, u = s.square() / n, vh.T
    else:
        lam, u = torch.linalg.eigh(xc.T @ xc / n)  # ascending
        lam, u = lam.flip(0), u.flip(1)
    lam = lam.clamp_min(0)  # round-off can leave tiny negative eigenvalues
    if rank is not None:
        if not 1 <= rank <= d:
            raise ValueError(f"rank must be in [1, {d}] (the data dimension), got {rank}")
        # With N < D only N eigenpairs exist; the rest have eigenvalue 0 and contribute nothing.
        lam, u = lam[:rank], u[:, :rank]
    return mu, lam, u


class GaussianDenoiser(ClosedFormDenoiser):
    """``D(z, s) = mu + U diag(lam / (lam + s^2)) U^T (z - mu)`` (Li et al. 2024, eq. 6).

    The posterior mean when the data are Gaussian with the training set's mean and (population)
    covariance ``U diag(lam) U^T``; generalizing networks approach it. Applied as two matrix
    products per batch (never a D x D matrix per element), in float64.

    Args:
        images: training set ``[N, C, H, W]`` in [-1, 1].
        rank: keep only the top ``rank`` eigenpairs (default: all).
    """

    def __init__(self, images: Tensor, rank: int | None = None) -> None:
        super().__init__(images)  # two matrix products per batch: nothing to chunk
        mu, lam, u = gaussian_moments(images, rank)
        self.rank = rank
        self.register_buffer("mean", mu)
        self.register_buffer("eigenvalues", lam)
        self.register_buffer("eigenvectors", u)

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        zc = z.flatten(1) - self.mean  # [B, D]
        coef = zc @ self.eigenvectors  # [B, k]
        shrink = self.eigenvalues / (self.eigenvalues + sigma.square().unsqueeze(1))  # [B, k]
        out = self.mean + (coef * shrink) @ self.eigenvectors.T  # [B, D]
        return out.view_as(z)
