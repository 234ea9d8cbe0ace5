"""Noise-level embeddings shared by the UNet and the DiT.

Both networks receive the EDM noise label ``c_noise = ln(sigma) / 4`` (Karras et al. 2022,
table 1), a real number roughly in ``[-1.6, 1.1]``, and turn it into a feature vector with
sinusoidal (or random Fourier) features followed by a small MLP.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionalEmbedding(nn.Module):
    """Transformer sinusoidal features ``[cos(c f_k), sin(c f_k)]`` (Vaswani et al. 2017).

    Frequencies ``f_k = (1 / max_positions)^(k / (K - endpoint))`` for ``k < K = num_channels/2``,
    as in EDM's ``PositionalEmbedding`` (``endpoint=True``, DDPM++) and DiT's ``TimestepEmbedder``
    (``endpoint=False``).
    """

    def __init__(self, num_channels: int, max_positions: int = 10_000, endpoint: bool = False):
        super().__init__()
        if num_channels < 2 or num_channels % 2:
            raise ValueError(
                f"num_channels must be an even number >= 2, got {num_channels}; use e.g. 128"
            )
        half = num_channels // 2
        k = torch.arange(half, dtype=torch.float32) / max(half - int(endpoint), 1)
        self.register_buffer("freqs", (1.0 / max_positions) ** k, persistent=False)
        self.num_channels = num_channels

    def forward(self, c: Tensor) -> Tensor:
        """Noise labels ``c [B]`` -> features ``[B, num_channels]`` (always float32)."""
        args = c.float().reshape(-1, 1) * self.freqs.reshape(1, -1)  # [B, K]
        return torch.cat([args.cos(), args.sin()], dim=1)  # [B, 2K]


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2 pi c b_k), sin(2 pi c b_k)]``, ``b_k ~ N(0, scale^2)``.

    Tancik et al. 2020; used by NCSN++ (Song et al. 2021) and EDM's ``FourierEmbedding``.
    The frequencies are a fixed (saved) buffer.
    """

    def __init__(self, num_channels: int, scale: float = 16.0):
        super().__init__()
        if num_channels < 2 or num_channels % 2:
            raise ValueError(
                f"num_channels must be an even number >= 2, got {num_channels}; use e.g. 128"
            )
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)
        self.num_channels = num_channels

    def forward(self, c: Tensor) -> Tensor:
        """Noise labels ``c [B]`` -> features ``[B, num_channels]`` (always float32)."""
        args = c.float().reshape(-1, 1) * (2 * math.pi * self.freqs.reshape(1, -1))  # [B, K]
        return torch.cat([args.cos(), args.sin()], dim=1)  # [B, 2K]


class NoiseEmbedding(nn.Module):
    """``c_noise [B]`` -> ``[B, emb_channels]``: features -> Linear -> SiLU -> Linear.

    With ``augment_dim > 0`` the augmentation labels ``[B, augment_dim]`` of
    :class:`~lightning_pspc.diffusion.AugmentPipe` are mapped by a bias-free linear layer and added
    to the features before the MLP (EDM's ``map_augment``); missing labels mean zeros, i.e. "not
    augmented".

    The final activation is left to the caller: the UNet applies SiLU (EDM's mapping network),
    DiT's adaLN modulation starts with SiLU (Peebles & Xie 2023, sec. 3.2).
    """

    def __init__(
        self,
        feature_channels: int,
        emb_channels: int,
        embedding_type: str = "positional",
        endpoint: bool = False,
        fourier_scale: float = 16.0,
        augment_dim: int = 0,
    ):
        super().__init__()
        if augment_dim < 0:
            raise ValueError(f"augment_dim={augment_dim} must be >= 0 (9 for AugmentPipe())")
        if embedding_type == "positional":
            self.features: nn.Module = PositionalEmbedding(feature_channels, endpoint=endpoint)
        elif embedding_type == "fourier":
            self.features = FourierEmbedding(feature_channels, scale=fourier_scale)
        else:
            raise ValueError(
                f"embedding_type must be 'positional' or 'fourier', got {embedding_type!r}"
            )
        self.mlp = nn.Sequential(
            nn.Linear(feature_channels, emb_channels),
            nn.SiLU(),
            nn.Linear(emb_channels, emb_channels),
        )
        self.augment_dim = augment_dim
        self.map_augment = (
            nn.Linear(augment_dim, feature_channels, bias=False) if augment_dim else None
        )

    def forward(self, c_noise: Tensor, augment_labels: Tensor | None = None) -> Tensor:
        """Noise labels ``c_noise [B]`` (and augmentation labels ``[B, augment_dim]``) ->
        embedding ``[B, emb_channels]``."""
        f = self.features(c_noise).to(self.mlp[0].weight.dtype)  # [B, F]
        if augment_labels is not None:
            if self.map_augment is None:
                raise ValueError(
                    "augmentation labels were given to a network built with augment_dim=0; "
                    "build it with augment_dim = AugmentPipe(...).label_dim (9 for the defaults)"
                )
            if augment_labels.shape != (f.shape[0], self.augment_dim):
                raise ValueError(
                    f"augment_labels must have shape [B, augment_dim] = "
                    f"[{f.shape[0]}, {self.augment_dim}], got {tuple(augment_labels.shape)}"
                )
            f = f + self.map_augment(augment_labels.to(f.dtype))  # [B, F]
        return self.mlp(f)  # [B, E]


def check_noise_labels(c_noise: Tensor, batch: int) -> Tensor:
    """Return ``c_noise`` as shape ``[batch]``; a scalar or ``[1]`` is broadcast.

    Raises ``ValueError`` for any other shape.
    """
    c_noise = torch.as_tensor(c_noise)
    if c_noise.numel() == 1:
        return c_noise.reshape(1).expand(batch)
    if c_noise.shape != (batch,):
        raise ValueError(
            f"c_noise must have shape [B] = [{batch}] (one noise label per image), "
            f"got {tuple(c_noise.shape)}; pass c_noise = ln(sigma) / 4 with sigma of shape [B]"
        )
    return c_noise


def check_images(x: Tensor, in_channels: int, resolution: int, network: str) -> None:
    """Raise a ``ValueError`` naming the fix unless ``x`` is ``[B, in_channels, res, res]``."""
    expected = (in_channels, resolution, resolution)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{network} expects input [B, {expected[0]}, {expected[1]}, {expected[2]}], got "
            f"{list(x.shape)}; set img_resolution/in_channels to match the data"
        )
