"""Pure image preprocessing: index selection, uint8 -> [-1, 1], channels, resize / pad."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# ITU-R BT.601 luma weights, the usual RGB -> grey conversion (also PIL's "L" mode).
LUMA_601 = (0.299, 0.587, 0.114)


def select_indices(
    num_images: int,
    num_train: int | None,
    num_heldout: int,
    subset: Literal["a", "b"] | None,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Deterministic, nested train / held-out split of ``num_images`` images.

    ``perm = randperm(M, seed)``; held-out = the last ``num_heldout`` entries of ``perm``; the
    training pool is the rest in ``perm`` order; subset ``None`` takes ``pool[:N]``, ``"a"`` takes
    ``pool[0::2][:N]`` and ``"b"`` ``pool[1::2][:N]``. So, for one seed, smaller training sets are
    prefixes of larger ones, and subsets ``a`` and ``b`` at size N are the two disjoint halves of
    the ``2N`` set ``pool[:2N]`` (twin models, Kadkhodaie et al. 2024). Both subsets hold
    ``len(pool) // 2`` images (an odd pool's last image is in neither), so an N one twin can
    have, the other can have too.
    Returns ``(train_idx [N], heldout_idx [num_heldout])`` as int64 tensors.
    """
    if subset not in (None, "a", "b"):
        raise ValueError(f"subset={subset!r} is not valid; use None, 'a' or 'b'.")
    if num_heldout < 0 or num_heldout >= num_images:
        raise ValueError(
            f"num_heldout={num_heldout} must be in [0, {num_images - 1}] for a data set of "
            f"{num_images} images; lower num_heldout."
        )
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_images, generator=generator)
    heldout = perm[num_images - num_heldout :]
    pool = perm[: num_images - num_heldout]
    which, why = "the training pool", ""
    if subset is not None:
        pool = pool[: len(pool) // 2 * 2]  # halves of equal size
        pool = pool[0::2] if subset == "a" else pool[1::2]
        which = f"subset {subset!r}"
        why = f", half of the {2 * len(pool)} images that split into two disjoint subsets"
    if num_train is None:
        return pool, heldout
    if num_train < 1 or num_train > len(pool):
        raise ValueError(
            f"num_train={num_train} is not available: {which} holds at most {len(pool)} "
            f"images{why} ({num_images} images, num_heldout={num_heldout}); use 1 <= num_train <= "
            f"{len(pool)}, or num_train=None for all of them."
        )
    return pool[:num_train], heldout


def to_signed_unit(images: Tensor) -> Tensor:
    """uint8 ``[..., H, W]`` in 0..255 -> float32 in [-1, 1] (``x / 127.5 - 1``)."""
    return images.to(torch.float32) / 127.5 - 1.0


def convert_channels(images: Tensor, channels: int | None) -> Tensor:
    """``[M, C, H, W]`` -> ``[M, channels, H, W]``: 1 -> 3 repeats, 3 -> 1 takes BT.601 luma."""
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if channels == 1 and images.shape[1] == 3:
        weights = torch.tensor(LUMA_601, dtype=images.dtype, device=images.device)
        return torch.einsum("mchw,c->mhw", images, weights).unsqueeze(1)
    raise ValueError(
        f"cannot convert {images.shape[1]}-channel images to channels={channels}; use 1 or 3."
    )


def resize_images(
    images: Tensor, resolution: int | None, mode: Literal["resize", "pad"] = "resize"
) -> Tensor:
    """float ``[M, C, H, W]`` in [-1, 1] -> ``[M, C, resolution, resolution]``.

    ``"resize"``: bilinear with antialiasing (non-square images are stretched to a square).
    ``"pad"``: centred, padded with -1 (black); the images must fit in ``resolution``.
    """
    if resolution is None:
        return images
    height, width = images.shape[-2:]
    if (height, width) == (resolution, resolution):
        return images
    if mode == "resize":
        out = TF.resize(
            images, [resolution, resolution], InterpolationMode.BILINEAR, antialias=True
        )
        return out.clamp_(-1.0, 1.0)
    if mode == "pad":
        if height > resolution or width > resolution:
            raise ValueError(
                f"resolution={resolution} is smaller than the {height}x{width} images, so "
                f"resize_mode='pad' cannot fit them; use resize_mode='resize' or "
                f"resolution >= {max(height, width)}."
            )
        top, left = (resolution - height) // 2, (resolution - width) // 2
        padding = [left, top, resolution - width - left, resolution - height - top]
        return TF.pad(images, padding, fill=-1.0)
    raise ValueError(f"resize_mode={mode!r} is not valid; use 'resize' or 'pad'.")
