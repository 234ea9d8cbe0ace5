"""Training throughput in images per second over all processes."""

from __future__ import annotations

import time

import lightning
import torch
from torch import Tensor


class Throughput(lightning.Callback):
    """Logs ``train/images_per_sec`` every ``window`` steps and ``train/images_per_sec_epoch``.

    Counts ``batch size x world size`` images per training batch (DDP batches have equal sizes)
    and divides by wall time. Only the training batches are timed (validation and sampling at
    the end of an epoch are not). CUDA is synchronised at window ends only, so the measurement
    does not slow training down.
    """

    def __init__(self, window: int = 50) -> None:
        if window < 1:
            raise ValueError(f"Throughput: window={window} must be >= 1.")
        self.window = window
        self._epoch_start = self._window_start = 0.0
        self._epoch_images = self._window_images = self._window_steps = 0
        self._last_end = 0.0

    def on_train_epoch_start(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Start the epoch clock."""
        _sync(pl_module)
        self._epoch_start = self._window_start = self._last_end = time.perf_counter()
        self._epoch_images = self._window_images = self._window_steps = 0

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        outputs: object,
        batch: Tensor,
        batch_idx: int,
    ) -> None:
        """Count the batch; log the window's images/s when the window is full."""
        images = batch.shape[0] * trainer.world_size
        self._epoch_images += images
        self._window_images += images
        self._window_steps += 1
        if self._window_steps >= self.window:
            _sync(pl_module)
            now = time.perf_counter()
            rate = self._window_images / max(now - self._window_start, 1e-9)
            pl_module.log(
                "train/images_per_sec",
                rate,
                on_step=True,
                on_epoch=False,
                batch_size=batch.shape[0],
            )
            self._window_start, self._window_images, self._window_steps = now, 0, 0
        if trainer.is_last_batch:
            _sync(pl_module)
        self._last_end = time.perf_counter()

    def on_train_epoch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Log the images/s of the whole epoch's training batches."""
        if self._epoch_images:
            seconds = max(self._last_end - self._epoch_start, 1e-9)
            pl_module.log("train/images_per_sec_epoch", self._epoch_images / seconds, on_epoch=True)


def _sync(pl_module: lightning.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
