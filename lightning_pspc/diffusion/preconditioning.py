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


def batch_sigma(
    sigma: Tensor | float, batch_size: int, device: torch.device | None = None
) -> Tensor:
    """``sigma`` as ``[B]``: a scalar (or a single value) is repeated, ``[B]`` is kept as it is.

    Any other shape is an error rather than being flattened: ``[2, 2]`` for a batch of 4 would
    otherwise pair noise levels with images by memory order.
    """
    sigma = torch.as_tensor(sigma, device=device)
    if sigma.ndim == 0 or tuple(sigma.shape) == (1,):
        return sigma.reshape(1).expand(batch_size)
    if tuple(sigma.shape) != (batch_size,):
        raise ValueError(
            f"sigma must be a scalar or have shape [B] = [{batch_size}] (one noise level per "
            f"image of z), got shape {list(sigma.shape)}; pass a float or a 1-D tensor of "
            f"{batch_size} values"
        )
    return sigma


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
        sigma = batch_sigma(sigma, z.shape[0], z.device).float()  # [B]
        c_skip, c_out, c_in, c_noise = (
            c.view(-1, 1, 1, 1) for c in edm_coefficients(sigma, self.sigma_data)
        )
        args = (c_in * z.float(), c_noise.flatten())
        if augment_labels is None:
            f = self.net(*args)  # [B,C,H,W]
        else:
            f = self.net(*args, augment_labels=augment_labels)  # [B,C,H,W]
        return (c_skip * z.float() + c_out * f.float()).to(z.dtype)
