"""EDM training loss (Karras et al. 2022, eq. 2 and table 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..types import Denoiser
from .schedule import sample_training_sigmas


class EDMLoss:
    """``lambda(sigma) ||D(x + sigma eps, sigma) - x||^2`` with ``ln sigma ~ N(P_mean, P_std^2)``.

    ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``. Calling the loss returns the
    per-element loss ``[B]`` (mean over pixels) so callers choose the reduction.
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> None:
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def weight(self, sigma: Tensor) -> Tensor:
        """Loss weight ``lambda(sigma)`` for ``sigma [B]``."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        sigma: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """Per-element weighted loss ``[B]`` for clean images ``x [B,C,H,W]``.

        ``augment_labels [B, L]``: ``x`` was augmented by an :class:`AugmentPipe`; the labels are
        passed to ``denoiser(z, sigma, augment_labels)``.
        """
        if sigma is None:
            sigma = sample_training_sigmas(x.shape[0], self.p_mean, self.p_std, generator, x.device)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = x + sigma.view(-1, 1, 1, 1).to(x.dtype) * noise
        d = denoiser(z, sigma) if augment_labels is None else denoiser(z, sigma, augment_labels)
        err = (d.float() - x.float()).pow(2).flatten(1).mean(1)
        return self.weight(sigma.float()) * err
