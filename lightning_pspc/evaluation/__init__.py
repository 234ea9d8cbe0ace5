"""Evaluation: one pipeline of fixed probes, references and measurements, charts and reports.

* :mod:`.pipeline`: the :class:`Evaluation` (data, seeds, references, calibration) and the
  contract of its members, :class:`EvaluationMember`;
* :mod:`.members`: the measurements (comparison, memorization, panel, generalization, agreement,
  locality, linear distillation), each with the ``eval.py`` options that configure it;
* :mod:`.probes` (fixed probes, sigma grid and bands, clipping to a network's sigma range),
  :mod:`.batching` (denoisers and samplers over many probes), :mod:`.calibration` (best-fit
  window sides);
* :mod:`.plots` (charts), :mod:`.curves` (per-sigma curves as W&B tables), :mod:`.report`
  (all-or-nothing output folders, W&B), :mod:`.timing`;
* for saved checkpoints: :mod:`.settings` (``eval.py``'s options), :mod:`.checkpoints`
  (evaluating them), :mod:`.network_runs` (networks trained elsewhere, ``--network``),
  :mod:`.twin_runs` (twin runs and memorization histories), :mod:`.transition` (the checks of
  a resolved transition).

The training callbacks (:mod:`lightning_pspc.callbacks`), ``eval.py``, the sweep and
``python -m lightning_pspc.commands.compare`` all build an :class:`Evaluation` and call it.
"""

from ..denoisers.registry import REFERENCE_DENOISERS, build_references, check_reference_names
from .batching import denoise_batched, sample_batched
from .calibration import BestFit, Calibration, CalibrationSettings
from .members import (
    Agreement,
    Comparison,
    ComparisonResult,
    DenoiserComparer,
    DenoiserPanel,
    Generalization,
    LinearDistillation,
    Locality,
    Memorization,
    MemorizationOverTime,
    Panel,
    distance_table,
    memorization_stats,
    nearest_training_images,
)
from .pipeline import EvalData, EvalSeeds, Evaluation, EvaluationMember, figures_of
from .plots import save_figure
from .probes import (
    PROBE_KINDS,
    SIGMA_BANDS,
    ProbeSet,
    band_means,
    fixed_noise,
    forward_probes,
    probe_sigmas,
    reverse_probes,
)
from .report import json_safe, staged_output, write_json_atomic
from .timing import OverheadClock

__all__ = [
    "PROBE_KINDS",
    "REFERENCE_DENOISERS",
    "SIGMA_BANDS",
    "Agreement",
    "BestFit",
    "Calibration",
    "CalibrationSettings",
    "Comparison",
    "ComparisonResult",
    "DenoiserComparer",
    "DenoiserPanel",
    "EvalData",
    "EvalSeeds",
    "Evaluation",
    "EvaluationMember",
    "Generalization",
    "LinearDistillation",
    "Locality",
    "Memorization",
    "MemorizationOverTime",
    "OverheadClock",
    "Panel",
    "ProbeSet",
    "band_means",
    "build_references",
    "check_reference_names",
    "denoise_batched",
    "distance_table",
    "figures_of",
    "fixed_noise",
    "forward_probes",
    "json_safe",
    "memorization_stats",
    "nearest_training_images",
    "probe_sigmas",
    "reverse_probes",
    "sample_batched",
    "save_figure",
    "staged_output",
    "write_json_atomic",
]
