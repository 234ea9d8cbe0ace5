"""EDM preconditioning (Karras et al. 2022, table 1 and eq. 7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def edm_coefficients(
    sigma: Tensor, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma [B]`` (EDM table 1)."""
    s2, sd2 = sigma**2, sigma_data**2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1 / (s2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(nn.Module):
    """Wraps a raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]`` as a denoiser.

    ``D(z, sigma) = c_skip z + c_out F(c_in z, c_noise)`` (EDM eq. 7). The raw network sees
    unit-variance inputs and targets at every noise level; ``sigma`` may differ per element.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, z: Tensor, sigma: Tensor, augment_labels: Tensor | None = None) -> Tensor:
        """``z [B,C,H,W]``, ``sigma [B]`` (or a scalar) -> denoised ``[B,C,H,W]`` in z's dtype.

        ``augment_labels [B, L]`` (training with :class:`AugmentPipe`) are passed on to the
        network; ``None`` (the denoiser contract ``D(z, sigma)``) means "not augmented".
        """
        sigma = torch.as_tensor(sigma, device=z.device, dtype=torch.float32)
        sigma = sigma.reshape(-1).expand(z.shape[0])
        c_skip, c_out, c_in, c_noise = (
            c.view(-1, 1, 1, 1) for c in edm_coefficients(sigma, self.sigma_data)
        )
        args = (c_in * z.float(), c_noise.flatten())
        if augment_labels is None:
            f = self.net(*args)  # [B,C,H,W]
        else:
            f = self.net(*args, augment_labels=augment_labels)  # [B,C,H,W]
        return (c_skip * z.float() + c_out * f.float()).to(z.dtype)
