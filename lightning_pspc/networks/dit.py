"""Pixel-space Diffusion Transformer with adaLN-Zero (Peebles & Xie 2023, "DiT").

A raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]`` meant to be wrapped by
:class:`~lightning_pspc.diffusion.EDMPrecond`. The image is cut into ``patch_size^2`` patches
(tokens) with a fixed 2D sin-cos position embedding; every block is conditioned on the noise
embedding by adaLN-Zero (sec. 3.2): LayerNorm shift/scale and a residual gate regressed from the
embedding, with the regression layer zero-initialised so each block starts as the identity.
``DiT-B/4`` on 32x32 CIFAR-10 (Niedoba et al. 2025, table 2) is about 130M parameters.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention, Mlp, PatchEmbed
from torch import Tensor, nn

from .embedding import NoiseEmbedding, check_images, check_noise_labels

__all__ = ["DIT_CONFIGS", "DiT", "DiTBlock", "dit_from_name", "sincos_pos_embed_2d"]

_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
DIT_CONFIGS: dict[str, dict[str, int]] = {
    f"DiT-{size}/{p}": dict(hidden_size=h, depth=d, num_heads=n, patch_size=p)
    for size, (h, d, n) in _SIZES.items()
    for p in (2, 4, 8)
}
"""Model sizes of Peebles & Xie (table 1): ``"DiT-{S,B,L,XL}/{2,4,8}"`` -> constructor kwargs."""


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos position embedding ``[grid*grid, dim]`` (MAE / DiT).

    Half the channels encode the row, half the column, each with 1D sin-cos features
    ``[sin(p w_k), cos(p w_k)]``, ``w_k = 10000^(-k / (dim/4))``. Tokens are in row-major order.
    """
    if dim % 4:
        raise ValueError(
            f"hidden_size must be divisible by 4 for the 2D position embedding, got {dim}"
        )
    omega = 1.0 / 10_000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # [dim/4]
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")  # [grid, grid] each

    def emb_1d(p: Tensor) -> Tensor:
        out = p.reshape(-1, 1) * omega.reshape(1, -1)  # [T, dim/4]
        return torch.cat([out.sin(), out.cos()], dim=1)  # [T, dim/2]

    return torch.cat([emb_1d(rows), emb_1d(cols)], dim=1).float()  # [T, dim]


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 (stable under bf16 autocast), returned in the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` -> normalised ``[..., D]``."""
        with torch.autocast(x.device.type, enabled=False):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            y = F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return y.to(x.dtype)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x [B,T,D] * (1 + scale [B,D]) + shift [B,D]`` (adaLN)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, fig. 3)."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0
    ):
        super().__init__()
        self.norm1 = LayerNorm32(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(
            hidden_size, num_heads=num_heads, qkv_bias=True, attn_drop=dropout, proj_drop=dropout
        )
        self.norm2 = LayerNorm32(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(
            hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=lambda: nn.GELU(approximate="tanh"),
            drop=dropout,
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """Tokens ``x [B,T,D]``, conditioning ``c [B,D]`` -> ``[B,T,D]``."""
        mod = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x [B,D]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = self.attn(_modulate(self.norm1(x), shift_msa, scale_msa))  # [B,T,D]
        x = x + gate_msa.unsqueeze(1) * h  # [B,T,D]
        h = self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))  # [B,T,D]
        return x + gate_mlp.unsqueeze(1) * h  # [B,T,D]


class FinalLayer(nn.Module):
    """adaLN (shift/scale) then a linear map from tokens to ``patch^2 * out_channels`` pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = LayerNorm32(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``x [B,T,D]``, ``c [B,D]`` -> ``[B,T,p*p*C_out]``."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x [B,D]
        return self.linear(_modulate(self.norm_final(x), shift, scale))  # [B,T,p*p*C_out]


class DiT(nn.Module):
    """Pixel-space DiT: raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,out_channels,H,W]``.

    ``H = W = img_resolution`` must be divisible by ``patch_size``; ``(H/p)^2`` tokens of width
    ``hidden_size``. Unconditional (no class labels); the noise embedding is sinusoidal features
    of ``c_noise`` followed by an MLP. ``dropout`` applies to attention weights, attention output
    and the MLP (Niedoba et al. use 0.12). ``augment_dim`` (9 with EDM's augmentation) adds the
    augmentation labels to the noise features, as in EDM's networks.
    """

    def __init__(
        self,
        img_resolution: int = 32,
        in_channels: int = 3,
        out_channels: int | None = None,
        patch_size: int = 4,
        hidden_size: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        frequency_embedding_size: int = 256,
        augment_dim: int = 0,
    ):
        super().__init__()
        if patch_size < 1 or img_resolution % patch_size:
            raise ValueError(
                f"resolution {img_resolution} is not divisible by patch_size={patch_size}; use a "
                f"patch_size that divides {img_resolution} or resize the data in the data module"
            )
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; choose "
                f"num_heads dividing hidden_size (e.g. hidden_size = 64 * num_heads)"
            )
        if hidden_size % 4:
            raise ValueError(
                f"hidden_size={hidden_size} must be divisible by 4 (2D sin-cos position "
                f"embedding); use e.g. 384, 768 or 1152"
            )
        self.img_resolution, self.in_channels = img_resolution, in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.patch_size, self.grid = patch_size, img_resolution // patch_size

        self.x_embedder = PatchEmbed(
            img_resolution, patch_size, in_channels, hidden_size, bias=True
        )
        self.augment_dim = augment_dim
        self.t_embedder = NoiseEmbedding(
            frequency_embedding_size, hidden_size, "positional", augment_dim=augment_dim
        )
        pos = sincos_pos_embed_2d(hidden_size, self.grid)[None]  # [1,T,D]
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT initialisation: Xavier linears, N(0, 0.02) embedder MLP, zero adaLN and output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for layer in self.t_embedder.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        final = self.final_layer
        for layer in (final.adaLN_modulation[-1], final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """Tokens ``[B, T, p*p*C]`` (row-major grid, ``(p, p, C)`` per token) -> ``[B, C, H, W]``."""
        b, g, p, c = x.shape[0], self.grid, self.patch_size, self.out_channels
        x = x.reshape(b, g, g, p, p, c)  # [B,gh,gw,p,q,C]
        x = torch.einsum("nhwpqc->nchpwq", x)  # [B,C,gh,p,gw,q]
        return x.reshape(b, c, g * p, g * p)  # [B,C,H,W]

    def forward(self, x: Tensor, c_noise: Tensor, augment_labels: Tensor | None = None) -> Tensor:
        """``x [B,C_in,H,W]`` (unit variance), ``c_noise [B]`` -> ``[B,C_out,H,W]``.

        ``augment_labels [B, augment_dim]``: the :class:`~lightning_pspc.diffusion.AugmentPipe`
        labels of augmented training images; ``None`` (evaluation, sampling) means zeros.
        """
        check_images(x, self.in_channels, self.img_resolution, "DiT")
        c_noise = check_noise_labels(c_noise, x.shape[0]).to(x.device)
        x = self.x_embedder(x) + self.pos_embed  # [B,T,D], T = (H/p)^2
        c = self.t_embedder(c_noise, augment_labels)  # [B,D]
        for block in self.blocks:
            x = block(x, c)  # [B,T,D]
        x = self.final_layer(x, c)  # [B,T,p*p*C_out]
        return self.unpatchify(x)  # [B,C_out,H,W]


def dit_from_name(name: str, **overrides: Any) -> DiT:
    """Build a :class:`DiT` from a registry name such as ``"DiT-B/4"``; ``overrides`` win.

    Example: ``dit_from_name("DiT-B/4", img_resolution=32, dropout=0.12)`` (Niedoba et al. table 2).
    """
    if name not in DIT_CONFIGS:
        raise ValueError(f"unknown DiT size {name!r}; choose one of {sorted(DIT_CONFIGS)}")
    return DiT(**{**DIT_CONFIGS[name], **overrides})
