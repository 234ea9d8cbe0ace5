"""The one contract every denoiser of the project meets (STYLE.md convention 2)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """``D(z [B, C, H, W], sigma [B]) -> [B, C, H, W]``: an estimate of ``E[x | z]`` (EDM conventions).

    Trained networks (through :class:`~lightning_pspc.diffusion.EDMPrecond`) and the closed-form
    denoisers of :mod:`lightning_pspc.denoisers` both satisfy it.
    """

    def __call__(self, z: Tensor, sigma: Tensor) -> Tensor: ...
