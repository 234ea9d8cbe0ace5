"""Patch-size schedules for PSPC-Square: data, not code (Niedoba et al. 2024, sec. 5)."""

from __future__ import annotations

from torch import Tensor

from ..diffusion.schedule import edm_sigmas

#: CIFAR-10 (32x32) patch sides on the 18 EDM sigmas, largest sigma first (the paper's schedule).
CIFAR10_PATCH_SIZES: tuple[int, ...] = (32,) * 7 + (23, 15, 11, 7, 5) + (3,) * 6


def scale_patch_sizes(
    resolution: int, base: tuple[int, ...] = CIFAR10_PATCH_SIZES, base_resolution: int = 32
) -> tuple[int, ...]:
    """Carries a schedule to another resolution.

    Rule: a size covering the whole base image stays the whole image; any other size ``P`` becomes
    the odd integer nearest to ``P * resolution / base_resolution`` (odd so that a patch has a
    centre pixel, as all of the paper's local sizes do), at least 3 and at most ``resolution``.
    For 28x28 (Fashion-MNIST, MNIST) this gives ``28 x7, 21, 13, 9, 7, 5, 3 x6``.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    out = []
    for p in base:
        if p >= base_resolution:
            out.append(resolution)
            continue
        scaled = p * resolution / base_resolution
        odd = 2 * round((scaled - 1) / 2) + 1
        out.append(int(min(max(odd, 3), resolution)))
    return tuple(out)


#: Presets by image side. 32 is the paper's; others follow :func:`scale_patch_sizes`.
PATCH_SIZE_PRESETS: dict[int, tuple[int, ...]] = {
    32: CIFAR10_PATCH_SIZES,
    28: scale_patch_sizes(28),
    64: scale_patch_sizes(64),
}


def default_patch_schedule(height: int, width: int) -> tuple[Tensor, tuple[int, ...]]:
    """``(sigmas [18], patch_sizes)`` for an image of ``height x width``: the preset for its side
    when there is one, else :func:`scale_patch_sizes` of the larger side."""
    side = max(height, width)
    sizes = PATCH_SIZE_PRESETS.get(side) or scale_patch_sizes(side)
    return edm_sigmas(len(sizes)), sizes


#: CIFAR-10 PSPC-Flex mass fractions ``tau`` on the 18 EDM sigmas, largest sigma first
#: (Niedoba et al. 2024, published code): whole image (``tau = 1``) at the seven largest sigmas.
CIFAR10_TAUS: tuple[float, ...] = (1.0,) * 7 + (0.7, 0.7, 0.5) + (0.4,) * 4 + (0.3,) * 4
