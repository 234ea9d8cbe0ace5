"""Locality of denoisers: sensitivity heatmaps and the patch sizes they imply (REFERENCE.md 3b)."""

from .sensitivity import (
    forward_probes,
    heatmaps_at_sigmas,
    sensitivity_heatmaps,
    sensitivity_patch_size,
    strided_pixels,
)

__all__ = [
    "forward_probes",
    "heatmaps_at_sigmas",
    "sensitivity_heatmaps",
    "sensitivity_patch_size",
    "strided_pixels",
]
