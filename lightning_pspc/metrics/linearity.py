"""Linearity of a denoiser per noise level (Li et al. 2024, "hidden Gaussian structure")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .functional import Denoiser, check_alpha, linearity_cosine
from .per_sigma import PerSigmaMean


class LinearityScore(PerSigmaMean):
    """Mean over probe pairs of ``cos(D(a z1 + b z2, s), a D(z1, s) + b D(z2, s))`` per sigma.

    Li et al. (2024): ``a = sqrt(alpha)``, ``b = sqrt(1 - alpha)``, ``z_i = x_i + s eps_i``. Near 1
    at high and low sigma, lowest in between; a linear denoiser scores 1 at every sigma.

    ``update(out_mixed, out_1, out_2, sigma)`` takes the three outputs ``[B, C, H, W]``
    (``D(a z1 + b z2, s)``, ``D(z1, s)``, ``D(z2, s)``; :func:`linearity_outputs` builds the
    probes and computes them) and the pairs' noise levels ``sigma [B]`` or a float.
    ``compute()`` -> ``[num_sigmas]`` float64, the mean cosine per grid sigma (probes go to the
    nearest grid sigma in log space), NaN where no pair fell.
    """

    higher_is_better = True

    def __init__(self, sigmas: Sequence[float] | Tensor, alpha: float = 0.5, **kwargs) -> None:
        super().__init__(sigmas, **kwargs)
        check_alpha(alpha)
        self.alpha = float(alpha)

    def update(
        self, out_mixed: Tensor, out_1: Tensor, out_2: Tensor, sigma: Tensor | float
    ) -> None:
        """Accumulate the per-pair cosine of ``[B, C, H, W]`` outputs at ``sigma [B]``/float."""
        self._accumulate(linearity_cosine(out_mixed, out_1, out_2, self.alpha), sigma)


class LinearityOutputs(NamedTuple):
    """Denoiser outputs on linearity probes, ``[S * B, C, H, W]`` each, sigma-major.

    Unpacks into :meth:`LinearityScore.update`: ``metric.update(*linearity_outputs(...))``.
    """

    out_mixed: Tensor  # D(a z1 + b z2, s)
    out_1: Tensor  # D(z1, s)
    out_2: Tensor  # D(z2, s)
    sigma: Tensor  # [S * B]


@torch.no_grad()
def linearity_outputs(
    denoiser: Denoiser,
    x1: Tensor,
    x2: Tensor,
    sigmas: Sequence[float] | Tensor,
    seed: int,
    alpha: float = 0.5,
) -> LinearityOutputs:
    """Build Li et al.'s linearity probes from clean pairs and evaluate the denoiser on them.

    For each grid sigma ``s`` (in order): ``z_i = x_i + s eps_i`` with fresh ``eps_1, eps_2``,
    then ``D(a z1 + b z2, s)``, ``D(z1, s)``, ``D(z2, s)`` (three calls of batch ``B``) with
    ``a = sqrt(alpha)``, ``b = sqrt(1 - alpha)``.

    Args:
        denoiser: ``D(z [B, C, H, W], sigma [B]) -> [B, C, H, W]``.
        x1, x2: ``[B, C, H, W]`` clean images (e.g. held-out images), paired row by row.
        sigmas: ``[S]`` positive noise levels.
        seed: the noise comes from a CPU ``torch.Generator`` seeded with it (drawn in float32,
            then moved to ``x1``'s device and dtype), so probes do not depend on the device.

    Returns:
        :class:`LinearityOutputs` with ``[S * B, ...]`` tensors (rows ``k * B .. (k+1) * B - 1``
        at ``sigmas[k]``) on ``x1``'s device; ``sigma`` has ``x1``'s dtype.
    """
    if x1.shape != x2.shape or x1.ndim != 4:
        raise ValueError(
            f"x1 and x2 must be paired image batches [B, C, H, W] of one shape, got "
            f"{tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    check_alpha(alpha)
    grid = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if grid.numel() == 0 or (grid <= 0).any() or not torch.isfinite(grid).all():
        raise ValueError(f"sigmas must be positive finite noise levels, got {sigmas}")
    a, b = math.sqrt(alpha), math.sqrt(1 - alpha)
    gen = torch.Generator().manual_seed(seed)
    outs: list[tuple[Tensor, Tensor, Tensor]] = []
    for s in grid.tolist():
        eps = torch.randn((2, *x1.shape), generator=gen).to(x1.device, x1.dtype)  # [2, B, C, H, W]
        z1, z2 = x1 + s * eps[0], x2 + s * eps[1]
        sigma = torch.full((x1.shape[0],), s, dtype=x1.dtype, device=x1.device)  # [B]
        outs.append((denoiser(a * z1 + b * z2, sigma), denoiser(z1, sigma), denoiser(z2, sigma)))
    mixed, out_1, out_2 = (torch.cat(parts) for parts in zip(*outs))
    sigma_all = grid.to(x1.device, x1.dtype).repeat_interleave(x1.shape[0])  # [S * B]
    return LinearityOutputs(mixed, out_1, out_2, sigma_all)
