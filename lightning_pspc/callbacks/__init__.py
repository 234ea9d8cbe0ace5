"""Training callbacks: checkpoints, sample grids, throughput and periodic evaluations."""

from .checkpoint import LastCheckpoint, RunCheckpoint
from .denoiser_comparison import DenoiserComparison
from .generalization_monitor import GeneralizationMonitor
from .linear_distillation_monitor import LinearDistillationMonitor
from .locality_monitor import LocalityMonitor
from .memorization_monitor import MemorizationMonitor
from .periodic import PeriodicEvaluation, is_last_epoch
from .progress import EpochLines
from .sample_grid import SampleGrid
from .throughput import Throughput

__all__ = [
    "DenoiserComparison",
    "EpochLines",
    "GeneralizationMonitor",
    "LastCheckpoint",
    "LinearDistillationMonitor",
    "LocalityMonitor",
    "RunCheckpoint",
    "MemorizationMonitor",
    "PeriodicEvaluation",
    "SampleGrid",
    "Throughput",
    "is_last_epoch",
]
