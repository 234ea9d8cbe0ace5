"""Straightforward reference implementations, for verification and benchmarks only.

They follow the structure of the published PSPC code (plai-group/pspc): a Python loop over
every patch position, each computing a streaming (100 images at a time) empirical posterior mean
over the crops at that position, composited by averaging over covering patches. Slow by design.
"""

from __future__ import annotations

import torch
from torch import Tensor


def empirical_posterior_mean_loop(
    z: Tensor, sigma: Tensor, images: Tensor, chunk: int = 100
) -> Tensor:
    """Streaming posterior mean with exact differences: ``z [B, D]``, ``sigma [B]``,
    ``images [N, D]`` -> ``[B, D]``, in the dtype of ``z``."""
    b = z.shape[0]
    m = torch.full((b, 1), -torch.inf, dtype=z.dtype, device=z.device)
    den = torch.zeros((b, 1), dtype=z.dtype, device=z.device)
    mean = torch.zeros_like(z)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(z.dtype)
        scores = (z.unsqueeze(1) - x).square().sum(-1) / (-2 * sigma.view(b, 1).to(z.dtype) ** 2)
        m_new = torch.maximum(scores.max(1, keepdim=True).values, m)
        p = (scores - m_new).exp()
        adj = (m - m_new).exp()
        new_den = den * adj + p.sum(1, keepdim=True)
        mean = (mean * den * adj + (x * p.unsqueeze(-1)).sum(1)) / new_den
        m, den = m_new, new_den
    return mean


def pspc_square_loop(
    z: Tensor,
    sigma: Tensor,
    images: Tensor,
    patch_size: int,
    chunk: int = 100,
    window_rows: int | None = None,
) -> Tensor:
    """PSPC-Square by its definition (docs/reference.md section 2.3): ``z [B,C,H,W]``,
    ``sigma [B]``, ``images [N,C,H,W]``, one patch size for the batch -> ``[B,C,H,W]`` in z's
    dtype.

    Every window fully inside the image (stride 1) gets the empirical posterior mean over the
    same-position crops of the training images; each pixel is the mean over its covering windows.
    ``window_rows=k`` (benchmarks) visits only the first ``k`` rows of window positions: every
    row costs the same, and image rows ``< k`` are then complete (the others are not).
    """
    b, c, h, w = z.shape
    ph, pw = min(patch_size, h), min(patch_size, w)
    composite = torch.zeros_like(z)
    count = torch.zeros_like(z)
    rows = h - ph + 1 if window_rows is None else min(window_rows, h - ph + 1)
    for r in range(rows):
        for col in range(w - pw + 1):
            zc = z[:, :, r : r + ph, col : col + pw].reshape(b, -1)
            xc = images[:, :, r : r + ph, col : col + pw].reshape(images.shape[0], -1)
            mean = empirical_posterior_mean_loop(zc, sigma, xc, chunk)
            composite[:, :, r : r + ph, col : col + pw] += mean.view(b, c, ph, pw)
            count[:, :, r : r + ph, col : col + pw] += 1
    return composite / count
