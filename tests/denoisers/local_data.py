"""Tiny data sets and mixed-sigma probes shared by the local-family tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_pspc.diffusion import edm_sigmas

SIGMAS = edm_sigmas(18)


def smooth_images(n: int, c: int, side: int, seed: int = 0) -> torch.Tensor:
    """``[n, c, side, side]`` smooth random images in [-1, 1] (some local structure)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, 4, 4, generator=g) * 2 - 1
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def mixed_probes(images: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """18 probes, element i at the i-th EDM sigma: ``(z [18, C, H, W] float32, sigma [18])``."""
    g = torch.Generator().manual_seed(seed)
    x = images[torch.arange(18) % images.shape[0]]
    sigma = SIGMAS.float()
    return x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g), sigma
