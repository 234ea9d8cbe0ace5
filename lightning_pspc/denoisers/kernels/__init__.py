"""Compiled backends of the closed-form denoisers, behind one interface.

The public denoisers (:mod:`lightning_pspc.denoisers`) read as their algorithms and call only
the names below; how each is computed (numba kernels with LLVM vector types on the CPU, a Triton
kernel on CUDA) stays in this folder:

* PSPC-Square on the CPU: :class:`TrainingLayout` (the training set laid out for the kernels)
  and :func:`pspc_fused_sum` (:mod:`.pspc_cpu`, with the band-of-rows kernel :mod:`.pspc_rows`
  and the vector intrinsics :mod:`.simd`); 1x1 patches through a table of each pixel's distinct
  training values, :func:`value_table` / :func:`pspc_values_posterior_mean` (:mod:`.pspc_values`);
* the FPMC engine and ELS on the CPU: :class:`FusedCollection`, :func:`feature_major`,
  :func:`els_centres_cpu` (:mod:`.fpmc_cpu`);
* ELS on CUDA: :func:`els_centres_triton`, :func:`triton_patch_set` (:mod:`.els_triton`,
  imported when first called: Triton is needed only there);
* :mod:`.numba_target`: the CPU target every numba kernel compiles for.
"""

from __future__ import annotations

from typing import Any

from .fpmc_cpu import FusedCollection, els_centres_cpu, feature_major
from .pspc_cpu import PATHS, TrainingLayout, pspc_fused_sum
from .pspc_values import ValueTable, pspc_values_posterior_mean, value_table


def els_centres_triton(*args: Any, **kwargs: Any) -> Any:
    """:func:`.els_triton.els_centres_triton` (Triton imported on first use)."""
    from .els_triton import els_centres_triton as kernel

    return kernel(*args, **kwargs)


def triton_patch_set(*args: Any, **kwargs: Any) -> Any:
    """:func:`.els_triton.triton_patch_set` (Triton imported on first use)."""
    from .els_triton import triton_patch_set as layout

    return layout(*args, **kwargs)


__all__ = [
    "PATHS",
    "FusedCollection",
    "TrainingLayout",
    "ValueTable",
    "els_centres_cpu",
    "els_centres_triton",
    "feature_major",
    "pspc_fused_sum",
    "pspc_values_posterior_mean",
    "triton_patch_set",
    "value_table",
]
