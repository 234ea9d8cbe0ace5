"""DDPM++ UNet (Song et al. 2021) in the form used by EDM (Karras et al. 2022, ``SongUNet``).

A raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]`` meant to be wrapped by
:class:`~lightning_pspc.diffusion.EDMPrecond`. With the defaults (128 channels, multipliers
``(2, 2, 2)``, 4 blocks per resolution, attention at 16x16, 32x32x3 input) it is EDM's CIFAR-10
DDPM++ network, about 55.7M parameters.

Resampling: down = 2x2 average pooling, up = nearest-neighbour 2x, each followed by the block's
convolution. This is exactly EDM's default ``resample_filter=[1, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embedding import NoiseEmbedding, check_images, check_noise_labels

__all__ = ["UNet", "UNetBlock", "GroupNorm32"]


def _num_groups(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """``min(32, C // 4)`` groups (EDM), lowered to the nearest divisor of ``C`` if needed."""
    g = min(max_groups, max(1, channels // min_per_group))
    while channels % g:
        g -= 1
    return g


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (stable under bf16 autocast), returned in the input dtype."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(_num_groups(channels), channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B,C,H,W]`` -> normalised ``[B,C,H,W]``."""
        with torch.autocast(x.device.type, enabled=False):
            w, b = self.weight.float(), self.bias.float()
            y = F.group_norm(x.float(), self.num_groups, w, b, self.eps)
        return y.to(x.dtype)


def _init(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Module:
    """EDM initialisation: Xavier-uniform weights scaled by ``gain``, zero bias."""
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


_ZERO = 1e-5  # EDM's init_zero: near-zero so every block starts close to the identity
_ATTN = math.sqrt(0.2)  # EDM's init_attn for the qkv projection


def _resample(x: Tensor, up: bool, down: bool) -> Tensor:
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        return F.avg_pool2d(x, 2)
    return x


class UNetBlock(nn.Module):
    """Pre-activation residual block with noise shift (or scale/shift) and optional attention.

    ``x -> GN -> SiLU -> [resample] -> conv3x3 -> GN (+shift / *(1+scale)+shift from emb) -> SiLU
    -> dropout -> conv3x3``, added to the (resampled, projected) input and scaled by ``1/sqrt(2)``;
    then, with attention, ``x + proj(softmax(q k^T / sqrt(d)) v)`` scaled by ``1/sqrt(2)``
    (EDM ``UNetBlock``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int = 1,
        dropout: float = 0.0,
        adaptive_scale: bool = False,
        skip_scale: float = math.sqrt(0.5),
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down = up, down
        self.adaptive_scale, self.skip_scale = adaptive_scale, skip_scale
        self.num_heads = num_heads if attention else 0
        self.norm0 = GroupNorm32(in_channels)
        self.conv0 = _init(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.affine = _init(nn.Linear(emb_channels, out_channels * (2 if adaptive_scale else 1)))
        self.norm1 = GroupNorm32(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _init(nn.Conv2d(out_channels, out_channels, 3, padding=1), _ZERO)
        self.skip = None
        if in_channels != out_channels or up or down:
            self.skip = _init(nn.Conv2d(in_channels, out_channels, 1))
        if self.num_heads:
            self.norm2 = GroupNorm32(out_channels)
            self.qkv = _init(nn.Conv2d(out_channels, 3 * out_channels, 1), _ATTN)
            self.proj = _init(nn.Conv2d(out_channels, out_channels, 1), _ZERO)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x [B,Cin,H,W]``, ``emb [B,E]`` -> ``[B,Cout,H',W']`` (``H' = 2H``, ``H/2`` or ``H``)."""
        orig = x
        x = self.conv0(_resample(F.silu(self.norm0(x)), self.up, self.down))  # [B,Co,H',W']
        params = self.affine(emb)[:, :, None, None].to(x.dtype)  # [B,Co or 2Co,1,1]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(self.norm1(x) * (1 + scale) + shift)
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(self.dropout(x))  # [B,Co,H',W']
        skip = _resample(orig, self.up, self.down)
        if self.skip is not None:
            skip = self.skip(skip)
        x = (x + skip) * self.skip_scale
        if self.num_heads:
            b, c, h, w = x.shape
            qkv = self.qkv(self.norm2(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
            q, k, v = qkv.transpose(-1, -2).unbind(1)  # 3 x [B,heads,HW,C/heads]
            a = F.scaled_dot_product_attention(q, k, v)  # [B,heads,HW,C/heads]
            a = a.transpose(-1, -2).reshape(b, c, h, w)
            x = (x + self.proj(a)) * self.skip_scale
        return x


class UNet(nn.Module):
    """DDPM++ UNet: raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,out_channels,H,W]``.

    Encoder: a 3x3 conv, then per level ``num_blocks`` residual blocks (a down-sampling block
    between levels); decoder: two bottleneck blocks (the first with attention), then per level
    ``num_blocks + 1`` blocks fed with the encoder skips (an up-sampling block between levels);
    output GroupNorm -> SiLU -> conv3x3. Attention at the resolutions in ``attn_resolutions``.

    ``augment_dim`` (EDM: 9 with augmentation) adds the augmentation labels to the noise features.
    ``adaptive_scale=False`` (EDM's DDPM++) injects the noise embedding as a per-channel shift
    before the second GroupNorm; ``True`` (NCSN++/ADM style) as ``GN(x) * (1 + scale) + shift``.
    """

    def __init__(
        self,
        img_resolution: int = 32,
        in_channels: int = 3,
        out_channels: int | None = None,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (2, 2, 2),
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        channel_mult_emb: int = 4,
        num_heads: int = 1,
        adaptive_scale: bool = False,
        augment_dim: int = 0,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        channel_mult, attn_resolutions = tuple(channel_mult), tuple(attn_resolutions)
        self._check_config(
            img_resolution, channel_mult, attn_resolutions, model_channels, num_heads
        )
        self.img_resolution = img_resolution
        self.in_channels, self.out_channels = in_channels, out_channels
        emb_channels = model_channels * channel_mult_emb
        self.augment_dim = augment_dim
        self.map_noise = NoiseEmbedding(
            model_channels * channel_mult_noise,
            emb_channels,
            embedding_type,
            endpoint=True,
            augment_dim=augment_dim,
        )
        for layer in self.map_noise.modules():
            if isinstance(layer, nn.Linear):
                _init(layer)
        kw = dict(
            emb_channels=emb_channels,
            num_heads=num_heads,
            dropout=dropout,
            adaptive_scale=adaptive_scale,
        )

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = _init(nn.Conv2d(cout, model_channels, 3, padding=1))
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **kw)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                attn = res in attn_resolutions
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **kw)
        skips = [
            m.out_channels if isinstance(m, UNetBlock) else model_channels
            for m in self.enc.values()
        ]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **kw)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **kw)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **kw)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **kw)
        self.out_norm = GroupNorm32(cout)
        self.out_conv = _init(nn.Conv2d(cout, out_channels, 3, padding=1), _ZERO)

    @staticmethod
    def _check_config(
        res: int,
        channel_mult: tuple[int, ...],
        attn_resolutions: tuple[int, ...],
        model_channels: int,
        num_heads: int,
    ) -> None:
        levels = len(channel_mult)
        if levels < 1:
            raise ValueError("channel_mult must have at least one level, e.g. (2, 2, 2)")
        factor = 2 ** (levels - 1)
        if res < factor or res % factor:
            raise ValueError(
                f"resolution {res} is not divisible by {factor} ({levels} levels in "
                f"channel_mult={list(channel_mult)}); use a resolution divisible by {factor} in "
                f"the data module or a channel_mult with fewer levels"
            )
        level_res = [res >> i for i in range(levels)]
        bad = [r for r in attn_resolutions if r not in level_res]
        if bad:
            raise ValueError(
                f"attn_resolutions={list(attn_resolutions)} contains {bad}, which are not level "
                f"resolutions of this UNet ({level_res}); choose attn_resolutions among "
                f"{level_res} (or [] for none)"
            )
        widths = {model_channels * m for m in channel_mult}
        if any(w % num_heads for w in widths):
            raise ValueError(
                f"num_heads={num_heads} must divide every block width {sorted(widths)}; "
                f"use num_heads=1"
            )

    def forward(self, x: Tensor, c_noise: Tensor, augment_labels: Tensor | None = None) -> Tensor:
        """``x [B,C_in,H,W]`` (unit variance), ``c_noise [B]`` -> ``[B,C_out,H,W]``.

        ``augment_labels [B, augment_dim]``: the :class:`~lightning_pspc.diffusion.AugmentPipe`
        labels of augmented training images; ``None`` (evaluation, sampling) means zeros.
        """
        check_images(x, self.in_channels, self.img_resolution, "UNet")
        c_noise = check_noise_labels(c_noise, x.shape[0]).to(x.device)
        emb = F.silu(self.map_noise(c_noise, augment_labels))  # [B,E]

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)  # [B,Ci,Hi,Wi]
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)  # [B,C+Cskip,Hi,Wi]
            x = block(x, emb)  # [B,Ci,Hi,Wi]
        return self.out_conv(F.silu(self.out_norm(x)))  # [B,C_out,H,W]
