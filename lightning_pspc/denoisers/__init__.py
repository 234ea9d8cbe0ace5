"""Closed-form denoisers with the project's one call ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]``."""

from .base import ClosedFormDenoiser
from .empirical import EmpiricalDenoiser, empirical_posterior_mean
from .fpmc import FilteredPosteriorMeans, FPMCDenoiser, tile_order
from .gaussian import GaussianDenoiser, gaussian_moments
from .local import EquivariantLocalDenoiser, LocalDenoiser
from .pspc import PSPCSquareDenoiser, box_sum, box_sum_transposed, pspc_square_posterior_mean
from .pspc_flex import PSPCFlexDenoiser, masks_from_heatmaps
from .schedules import (
    CIFAR10_PATCH_SIZES,
    CIFAR10_TAUS,
    PATCH_SIZE_PRESETS,
    default_patch_schedule,
    scale_patch_sizes,
)
from .wiener import WienerLocalityDenoiser, wiener_masks

__all__ = [
    "CIFAR10_PATCH_SIZES",
    "CIFAR10_TAUS",
    "ClosedFormDenoiser",
    "EmpiricalDenoiser",
    "EquivariantLocalDenoiser",
    "FPMCDenoiser",
    "FilteredPosteriorMeans",
    "GaussianDenoiser",
    "LocalDenoiser",
    "PATCH_SIZE_PRESETS",
    "PSPCFlexDenoiser",
    "PSPCSquareDenoiser",
    "WienerLocalityDenoiser",
    "box_sum",
    "box_sum_transposed",
    "default_patch_schedule",
    "empirical_posterior_mean",
    "gaussian_moments",
    "masks_from_heatmaps",
    "pspc_square_posterior_mean",
    "scale_patch_sizes",
    "tile_order",
    "wiener_masks",
]
