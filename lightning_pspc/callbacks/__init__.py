"""Training callbacks: checkpoints, sample grids, throughput and periodic evaluations."""

from .checkpoint import LastCheckpoint, RunCheckpoint
from .comparison import DenoiserComparison
from .generalization import GeneralizationMonitor
from .locality import LocalityMonitor
from .memorization import MemorizationMonitor
from .periodic import PeriodicEvaluation, is_last_epoch
from .progress import EpochLines
from .samples import SampleGrid
from .throughput import Throughput

__all__ = [
    "DenoiserComparison",
    "EpochLines",
    "GeneralizationMonitor",
    "LastCheckpoint",
    "LocalityMonitor",
    "RunCheckpoint",
    "MemorizationMonitor",
    "PeriodicEvaluation",
    "SampleGrid",
    "Throughput",
    "is_last_epoch",
]
