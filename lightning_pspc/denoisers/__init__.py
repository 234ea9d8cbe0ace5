"""Closed-form denoisers with the project's one call ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]``."""

from .base import ClosedFormDenoiser
from .empirical import EmpiricalDenoiser, empirical_posterior_mean
from .gaussian import GaussianDenoiser, gaussian_moments
from .pspc import PSPCSquareDenoiser, box_sum, box_sum_transposed, pspc_square_posterior_mean
from .schedules import (
    CIFAR10_PATCH_SIZES,
    PATCH_SIZE_PRESETS,
    default_patch_schedule,
    scale_patch_sizes,
)

__all__ = [
    "CIFAR10_PATCH_SIZES",
    "ClosedFormDenoiser",
    "EmpiricalDenoiser",
    "GaussianDenoiser",
    "PATCH_SIZE_PRESETS",
    "PSPCSquareDenoiser",
    "box_sum",
    "box_sum_transposed",
    "default_patch_schedule",
    "empirical_posterior_mean",
    "gaussian_moments",
    "pspc_square_posterior_mean",
    "scale_patch_sizes",
]
