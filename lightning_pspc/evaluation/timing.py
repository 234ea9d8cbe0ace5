"""Wall-clock accounting of evaluation callbacks against the whole fit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class OverheadClock:
    """Seconds spent inside :meth:`measure` blocks, and their fraction of the fit's wall time.

    ``start()`` marks the beginning of the fit; ``fraction()`` is the measured seconds divided by
    the seconds since then. CUDA work is synchronised at block edges so it is charged correctly.
    """

    def __init__(self) -> None:
        self.spent = 0.0
        self.last = 0.0
        self.started: float | None = None

    def start(self) -> None:
        """Mark the start of the fit (only the first call counts)."""
        if self.started is None:
            self.started = time.perf_counter()

    @contextmanager
    def measure(self, device: torch.device | None = None) -> Iterator[None]:
        """Add the wall time of the ``with`` block to :attr:`spent` (and keep it in
        :attr:`last`)."""
        _sync(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(device)
            self.last = time.perf_counter() - t0
            self.spent += self.last

    def total(self) -> float:
        """Seconds since :meth:`start` (0 before it)."""
        return 0.0 if self.started is None else time.perf_counter() - self.started

    def fraction(self) -> float:
        """Measured seconds / fit seconds so far (0 before any time has passed)."""
        total = self.total()
        return self.spent / total if total > 0 else 0.0

    def summary(self, name: str) -> str:
        """One line: ``name: X s of Y s of fit wall time (Z %)``."""
        return (
            f"{name}: {self.spent:.1f} s of {self.total():.1f} s of fit wall time "
            f"({100 * self.fraction():.1f} %)"
        )


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
