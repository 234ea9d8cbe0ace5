"""Locality of denoisers: sensitivity heatmaps and the patch sizes they imply (docs/reference.md 3b)."""

from .sensitivity import (
    heatmaps_at_sigmas,
    sensitivity_heatmaps,
    sensitivity_patch_size,
    strided_pixels,
)

__all__ = [
    "heatmaps_at_sigmas",
    "sensitivity_heatmaps",
    "sensitivity_patch_size",
    "strided_pixels",
]
