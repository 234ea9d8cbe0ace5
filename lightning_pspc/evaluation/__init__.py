"""Evaluation: one pipeline of fixed probes, references and measurements, charts and reports.

:class:`Evaluation` (:mod:`.pipeline`) is the single entry point used by the callbacks
(:mod:`lightning_pspc.callbacks`), ``eval.py`` (:mod:`.evaluate`), the sweep and
``python -m lightning_pspc.compare``; :mod:`.engine` holds its building blocks (denoiser
comparisons, memorization statistics), :mod:`.probes` the fixed probes, :mod:`.plots` the
charts and :mod:`.report` the output files.
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
from .pipeline import (
    Comparison,
    EvalData,
    EvalSeeds,
    Evaluation,
    EvaluationMember,
    Memorization,
    Panel,
    figures_of,
)
from .plots import save_figure
from .probes import ProbeSet, fixed_noise, forward_probes, probe_sigmas, reverse_probes
from .report import json_safe, staged_output, write_json_atomic
from .timing import OverheadClock

__all__ = [
    "Comparison",
    "EvalData",
    "EvalSeeds",
    "Evaluation",
    "EvaluationMember",
    "Memorization",
    "Panel",
    "figures_of",
    "save_figure",
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
