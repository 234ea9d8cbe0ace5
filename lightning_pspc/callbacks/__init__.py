"""Training callbacks: sample grids and throughput."""

from .samples import SampleGrid
from .throughput import Throughput

__all__ = ["SampleGrid", "Throughput"]
