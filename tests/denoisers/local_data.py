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


def els_source_and_queries(images: torch.Tensor, k: int = 3):
    """Circular ELS's prepared patch set and the query windows of :func:`mixed_probes`:
    ``(rhs, centres, queries [18, H*W, C k^2] float64, inv_s2 [18] float64)``."""
    from lightning_pspc.denoisers import EquivariantLocalDenoiser
    from lightning_pspc.denoisers.local import _unfold_windows

    z, s = mixed_probes(images)
    d = EquivariantLocalDenoiser(images, patch_size=k)
    d(z, s)
    rhs, centres = next(iter(d._patch_sets.values()))
    return rhs, centres, _unfold_windows(z.double(), k, "circular"), 1.0 / s.double().square()
