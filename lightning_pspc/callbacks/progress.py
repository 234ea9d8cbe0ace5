"""Progress for logs: one line per epoch instead of progress-bar redraws."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning
from lightning.pytorch.callbacks import ProgressBar


class EpochLines(ProgressBar):
    """Prints one line per training epoch (rank 0): epoch, step, the progress-bar metrics
    (``train/loss``, ``val/loss``, ...) and the epoch's wall time.

    ``train.py`` uses it instead of the TQDM bar when standard error is not a terminal (a log
    file, CI, a sweep's subprocess), where every redraw of a bar would add a line: a 20-epoch run
    then logs 20 lines instead of megabytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        limit = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{limit}", f"step {trainer.global_step}"]
        parts += [f"{k} {_fmt(v)}" for k, v in sorted(metrics.items())]
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        print(" | ".join(parts), file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
