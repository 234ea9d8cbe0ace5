"""Closed-form denoisers with the project's one call ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]``.

One algorithm per module (docs/reference.md section 2): :mod:`.empirical`, :mod:`.gaussian`,
:mod:`.pspc` (PSPC-Square), the FPMC engine :mod:`.fpmc` and on it :mod:`.pspc_flex`,
:mod:`.local` (LS / ELS), :mod:`.wiener` and :mod:`.linear` (linear distillation of any
denoiser); shared maths in :mod:`.softmax` (the streaming
softmax-weighted mean) and :mod:`.schedules` (patch-size and tau schedules); the references an
evaluation compares with, by name, in :mod:`.registry` (with those fitted to the network in
:mod:`.network_fitted`). Compiled backends are in :mod:`.kernels`, the slow loops of the
definitions and of the published code's structure (tests and benchmarks) in :mod:`.loops`.
"""

from .base import ClosedFormDenoiser
from .empirical import EmpiricalDenoiser, empirical_posterior_mean
from .fpmc import FilteredPosteriorMeans, FPMCDenoiser, tile_order
from .gaussian import GaussianDenoiser, gaussian_moments
from .linear import LinearDenoiser, LinearFitStats, distillation_probes
from .linear_distilled import LinearDistilledReference
from .local import EquivariantLocalDenoiser, LocalDenoiser
from .pspc import PSPCSquareDenoiser, box_sum, box_sum_transposed, pspc_square_posterior_mean
from .pspc_flex import PSPCFlexDenoiser, masks_from_heatmaps
from .registry import REFERENCE_DENOISERS, build_references, check_reference_names
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
    "LinearDenoiser",
    "LinearDistilledReference",
    "LinearFitStats",
    "LocalDenoiser",
    "PATCH_SIZE_PRESETS",
    "PSPCFlexDenoiser",
    "PSPCSquareDenoiser",
    "REFERENCE_DENOISERS",
    "WienerLocalityDenoiser",
    "box_sum",
    "box_sum_transposed",
    "build_references",
    "check_reference_names",
    "default_patch_schedule",
    "distillation_probes",
    "empirical_posterior_mean",
    "gaussian_moments",
    "masks_from_heatmaps",
    "pspc_square_posterior_mean",
    "scale_patch_sizes",
    "tile_order",
    "wiener_masks",
]
