"""EDM's non-leaky geometric augmentation (Karras et al. 2022, appendix F.2).

Each training image is transformed with probability ``p`` times a per-transformation multiplier,
and the random parameters become *augmentation labels* ``[B, label_dim]`` that the network is
conditioned on (``augment_dim`` of :class:`~lightning_pspc.networks.UNet` and
:class:`~lightning_pspc.networks.DiT`). All-zero labels mean "not augmented", so a denoiser called
without labels models the un-augmented training distribution: the augmentations do not leak into
the samples, and the closed-form denoisers stay the right comparison.

The transformations and their parameter distributions follow EDM's ``AugmentPipe`` (built on
StyleGAN2-ADA, Karras et al. 2020) with EDM's CIFAR-10 settings as defaults (``p=0.12``; x-flip
always random, y-flip, isotropic scaling, rotation, anisotropic scaling and fractional translation
with multiplier 1). Geometric transformations resample with a 2x ``sym6`` wavelet up-sampling, a
bilinear lookup and a ``sym6`` down-sampling, which is the identity for the identity transform.
EDM's colour transformations (unused in its diffusion configurations) are not implemented.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Decomposition low-pass filter of the Daubechies symlet with 6 vanishing moments
# (PyWavelets: ``pywt.Wavelet("sym6").dec_lo``). Orthonormal: sum_k h[k] h[k + 2n] = [n == 0].
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)
_BORDER = len(SYM6) // 4  # extra output pixels on each side, cropped after down-sampling


class AugmentPipe(nn.Module):
    """Random geometric augmentation with conditioning labels: ``(x [B,C,H,W]) -> (x', labels)``.

    Args:
        p: overall probability multiplier (EDM and Niedoba et al.: 0.12 on CIFAR-10; 0 = off).
        xflip, yflip, scale, rotate_frac, aniso, translate_frac: per-transformation multipliers;
            a transformation happens to an image with probability ``min(p * multiplier, 1)``
            (x-flip: then flips with probability 1/2), and 0 removes it and its labels.
        scale_std: log2 standard deviation of the isotropic scaling.
        rotate_frac_max: range of the rotation angle, as a fraction of a half turn either way.
        aniso_std: log2 standard deviation of the anisotropic scaling.
        aniso_rotate_prob: probability that the anisotropic scaling acts along rotated axes.
        translate_frac_std: standard deviation of the translation, as a fraction of the size.

    Labels, in this order, for the enabled transformations (:attr:`label_dim` columns, 9 with
    the defaults): x-flip (0/1), y-flip (0/1), scale (the normal draw ``w``, ``s = 2^(w std)``),
    rotation (``cos a - 1``, ``sin a``), anisotropy (``w cos r``, ``w sin r``), translation
    (``tx``, ``ty`` in units of ``translate_frac_std`` times the size). Pixel values outside the
    image come from reflecting it.
    """

    def __init__(
        self,
        p: float = 0.12,
        xflip: float = 1e8,
        yflip: float = 1.0,
        scale: float = 1.0,
        rotate_frac: float = 1.0,
        aniso: float = 1.0,
        translate_frac: float = 1.0,
        scale_std: float = 0.2,
        rotate_frac_max: float = 1.0,
        aniso_std: float = 0.2,
        aniso_rotate_prob: float = 0.5,
        translate_frac_std: float = 0.125,
    ) -> None:
        super().__init__()
        settings = dict(
            p=p,
            xflip=xflip,
            yflip=yflip,
            scale=scale,
            rotate_frac=rotate_frac,
            aniso=aniso,
            translate_frac=translate_frac,
            scale_std=scale_std,
            rotate_frac_max=rotate_frac_max,
            aniso_std=aniso_std,
            aniso_rotate_prob=aniso_rotate_prob,
            translate_frac_std=translate_frac_std,
        )
        for name, value in settings.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"AugmentPipe: {name}={value!r} must be a finite number >= 0 "
                    f"(EDM's CIFAR-10 setting: AugmentPipe(p=0.12))"
                )
            setattr(self, name, float(value))
        if p > 1:
            raise ValueError(f"AugmentPipe: p={p} must be in [0, 1] (EDM: 0.12)")

    @property
    def label_dim(self) -> int:
        """Number of label columns: the ``augment_dim`` the network must be built with."""
        dims = (
            (self.xflip, 1),
            (self.yflip, 1),
            (self.scale, 1),
            (self.rotate_frac, 2),
            (self.aniso, 2),
            (self.translate_frac, 2),
        )
        return sum(d for multiplier, d in dims if multiplier > 0)

    def extra_repr(self) -> str:
        return f"p={self.p}, label_dim={self.label_dim}"

    def forward(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Augment ``images [B,C,H,W]`` -> ``(images [B,C,H,W], labels [B, label_dim] float32)``."""
        if images.ndim != 4:
            raise ValueError(
                f"AugmentPipe expects images of shape [B, C, H, W], got {tuple(images.shape)}"
            )
        b, _, h, w = images.shape
        dev = images.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=dev)

        def randn(*shape: int) -> Tensor:
            return torch.randn(shape, generator=generator, device=dev)

        def happens(multiplier: float) -> Tensor:
            return rand(b) < multiplier * self.p  # [B] bool

        labels: list[Tensor] = []
        for multiplier, dim in ((self.xflip, 3), (self.yflip, 2)):
            if multiplier > 0:
                flip = (rand(b) < 0.5) & happens(multiplier)  # [B]
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(dim), images)
                labels.append(flip.float())

        g_inv = torch.eye(3, device=dev).expand(b, 3, 3)  # output -> input pixel coordinates
        zero = torch.zeros(b, device=dev)
        if self.scale > 0:
            v = torch.where(happens(self.scale), randn(b), zero)
            s = torch.exp2(v * self.scale_std)
            g_inv = g_inv @ _scale(1 / s, 1 / s)
            labels.append(v)
        if self.rotate_frac > 0:
            a = (rand(b) * 2 - 1) * (math.pi * self.rotate_frac_max)
            a = torch.where(happens(self.rotate_frac), a, zero)
            g_inv = g_inv @ _rotate(a)
            labels += [a.cos() - 1, a.sin()]
        if self.aniso > 0:
            v, r = randn(b), (rand(b) * 2 - 1) * math.pi
            on = happens(self.aniso)
            v = torch.where(on, v, zero)
            r = torch.where(on & (rand(b) < self.aniso_rotate_prob), r, zero)
            s = torch.exp2(v * self.aniso_std)
            g_inv = g_inv @ _rotate(-r) @ _scale(1 / s, s) @ _rotate(r)
            labels += [v * r.cos(), v * r.sin()]
        if self.translate_frac > 0:
            t = randn(2, b)
            t = torch.where(happens(self.translate_frac), t, torch.zeros_like(t))
            tx, ty = t[0] * (w * self.translate_frac_std), t[1] * (h * self.translate_frac_std)
            g_inv = g_inv @ _translate(-tx, -ty)
            labels += [t[0], t[1]]

        # Only images with a geometric transformation are resampled (the resampling of the
        # others would be the identity up to float rounding).
        moved = (g_inv != torch.eye(3, device=dev)).flatten(1).any(dim=1)  # [B]
        if bool(moved.any()):
            images = images.clone()
            images[moved] = warp(images[moved], g_inv[moved]).to(images.dtype)
        out = torch.stack(labels, dim=1) if labels else torch.zeros(b, 0, device=dev)
        return images, out.float()


def warp(images: Tensor, g_inv: Tensor) -> Tensor:
    """Resample ``images [B,C,H,W]``: output pixel ``q`` takes the input at ``g_inv[b] @ q``.

    Coordinates are pixels relative to the image centre, ``(x, y) = (j - (W-1)/2, i - (H-1)/2)``;
    ``g_inv [B,3,3]`` is affine. The input is reflect-padded as far as the transformed corners
    reach (at most ``H-1``/``W-1``; zeros beyond), up-sampled 2x with the ``sym6`` low-pass
    filter, looked up bilinearly, and down-sampled 2x with the same filter. The separable filters
    are applied as products with banded matrices (a few BLAS calls, fast on CPU and GPU). Computed
    in float32 at least.
    """
    b, c, h, w = images.shape
    dev, dtype = images.device, images.dtype
    images = images.float() if dtype in (torch.float16, torch.bfloat16) else images
    cx, cy = (w - 1) / 2, (h - 1) / 2
    g_inv = g_inv.to(device=dev, dtype=torch.float32)

    # Reflect padding that covers the transformed output corners plus the filter support.
    corners = torch.tensor(
        [[-cx, -cy, 1.0], [cx, -cy, 1.0], [cx, cy, 1.0], [-cx, cy, 1.0]], device=dev
    )
    reach = (g_inv[:, :2, :] @ corners.T).permute(1, 0, 2).flatten(1)  # [2, B*4]: x, y
    lo = (-reach).amax(dim=1) - torch.tensor([cx, cy], device=dev) + 2 * _BORDER
    hi = reach.amax(dim=1) - torch.tensor([cx, cy], device=dev) + 2 * _BORDER
    limit = torch.tensor([w - 1, h - 1], device=dev, dtype=torch.float32)
    (px0, py0), (px1, py1) = (
        v.clamp(min=0).minimum(limit).ceil().long().tolist() for v in (lo, hi)
    )
    images = F.pad(images, [px0, px1, py0, py1], mode="reflect")

    # Up-sample 2x: up-sampled pixel n lies at padded coordinate n/2 (the filter's centre of
    # energy is at tap 4.9; the filter matrices below delay by 5 taps, as EDM's convolutions).
    hp, wp = images.shape[-2:]
    up = _filter_matrix(hp, True, dev).T @ images @ _filter_matrix(wp, True, dev)
    hu, wu = up.shape[-2:]  # [B, C, 2Hp, 2Wp]

    # Output grid, 2x finer and _BORDER pixels wider than the output on each side.
    ho, wo = 2 * (h + 2 * _BORDER), 2 * (w + 2 * _BORDER)
    yo = torch.arange(ho, device=dev, dtype=torch.float32) / 2 - _BORDER - cy
    xo = torch.arange(wo, device=dev, dtype=torch.float32) / 2 - _BORDER - cx
    yy, xx = torch.meshgrid(yo, xo, indexing="ij")
    q = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(-1, 3)  # [ho*wo, 3]
    src = q @ g_inv[:, :2, :].transpose(1, 2)  # [B, ho*wo, 2] input coordinates
    n_x = 2 * (src[..., 0] + cx + px0)  # up-sampled pixel index
    n_y = 2 * (src[..., 1] + cy + py0)
    grid = torch.stack([(2 * n_x + 1) / wu - 1, (2 * n_y + 1) / hu - 1], dim=-1)
    grid = grid.reshape(b, ho, wo, 2).to(up.dtype)
    out = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Down-sample 2x and drop the _BORDER pixels: [B, C, H, W].
    out = _filter_matrix(h, False, dev).T @ out @ _filter_matrix(w, False, dev)
    return out.to(dtype)


@functools.lru_cache(maxsize=64)
def _filter_matrix_cpu(n: int, up: bool) -> Tensor:
    """Banded float32 matrix of one filtering step along an axis (right-multiplied).

    ``up``: ``[n, 2n]``, zero-insertion up-sampling of ``n`` samples followed by the filter,
    ``out[k] = sum_j x[j] h[k + 5 - 2j]``. Otherwise: ``[2(n + 2 B), n]``, the filter with stride 2
    on the ``_BORDER``-extended grid, cropped to the ``n`` inner samples,
    ``out[k] = sum_i x[i] h[i - 2k - 1]`` (``B = _BORDER``).
    """
    h = torch.tensor(SYM6, dtype=torch.float64)
    taps = h.numel()
    if up:
        rows, cols = torch.arange(n).view(-1, 1), torch.arange(2 * n).view(1, -1)
        m = cols + 5 - 2 * rows
    else:
        rows = torch.arange(2 * (n + 2 * _BORDER)).view(-1, 1)
        cols = torch.arange(n).view(1, -1)
        m = rows - 2 * cols - 1
    inside = (m >= 0) & (m < taps)
    return torch.where(inside, h[m.clamp(0, taps - 1)], 0.0).float()


def _filter_matrix(n: int, up: bool, device: torch.device) -> Tensor:
    return _filter_matrix_cpu(n, up).to(device)


def _matrix(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """``[B, 3, 3]`` from 3x3 nested entries that are ``[B]`` tensors or numbers."""
    cols = [
        torch.as_tensor(v, dtype=like.dtype, device=like.device).expand_as(like)
        for row in rows
        for v in row
    ]
    return torch.stack(cols, dim=-1).view(-1, 3, 3)


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], sx)


def _rotate(a: Tensor) -> Tensor:
    c, s = a.cos(), a.sin()
    return _matrix([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], a)


def _translate(tx: Tensor, ty: Tensor) -> Tensor:
    return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], tx)
