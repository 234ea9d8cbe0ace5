"""Evaluation: fixed probes, denoiser comparisons, memorization statistics, charts and reports.

Shared by the callbacks (:mod:`lightning_pspc.callbacks`) and ``eval.py``
(:mod:`lightning_pspc.evaluation.evaluate`).
"""

from .engine import (
    PROBE_KINDS,
    REFERENCE_DENOISERS,
    SIGMA_BANDS,
    ComparisonResult,
    DenoiserComparer,
    DenoiserPanel,
    band_means,
    build_references,
    check_reference_names,
    denoise_batched,
    distance_table,
    memorization_stats,
    nearest_training_images,
    sample_batched,
)
from .probes import ProbeSet, fixed_noise, forward_probes, probe_sigmas, reverse_probes
from .report import json_safe, staged_output, write_json_atomic
from .timing import OverheadClock

__all__ = [
    "PROBE_KINDS",
    "REFERENCE_DENOISERS",
    "SIGMA_BANDS",
    "ComparisonResult",
    "DenoiserComparer",
    "DenoiserPanel",
    "OverheadClock",
    "ProbeSet",
    "band_means",
    "build_references",
    "check_reference_names",
    "denoise_batched",
    "distance_table",
    "fixed_noise",
    "forward_probes",
    "json_safe",
    "memorization_stats",
    "nearest_training_images",
    "probe_sigmas",
    "reverse_probes",
    "sample_batched",
    "staged_output",
    "write_json_atomic",
]
