"""Training throughput: Lightning's ``ThroughputMonitor`` counting images per batch."""

from __future__ import annotations

from lightning.pytorch.callbacks import ThroughputMonitor
from torch import Tensor


def batch_images(batch: Tensor) -> int:
    """Images in a training batch ``[B, C, H, W]``."""
    return int(batch.shape[0])


class Throughput(ThroughputMonitor):
    """Lightning's :class:`~lightning.pytorch.callbacks.ThroughputMonitor` for image batches.

    Logs (rank 0, every ``log_every_n_steps``) ``train/device/samples_per_sec`` (images per
    second of one process) and ``train/device/batches_per_sec``, averaged over the last ``window``
    batches, and with several processes ``train/samples_per_sec`` over all of them; validation
    time is left out. Set ``flops_per_batch`` on the
    module to also get MFU.
    """

    def __init__(self, window: int = 50) -> None:
        if window < 1:
            raise ValueError(f"Throughput: window={window} must be >= 1.")
        # Lightning's rolling window needs at least 2 points
        super().__init__(batch_size_fn=batch_images, window_size=max(window, 2))
