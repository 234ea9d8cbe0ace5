"""Fraction of generated samples that copy a training image (Gu et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from .functional import DEFAULT_CHUNK_SIZE, check_chunk_size, check_train_images, memorized_mask


class MemorizedFraction(Metric):
    """Fraction of samples with ``||s - NN1|| / ||s - NN2|| < threshold`` (Gu et al. 2023).

    ``NN1``, ``NN2`` are the nearest and second-nearest training images by pixel L2 distance,
    computed from exact float64 differences while streaming the training set in ``chunk_size``
    chunks (:func:`~lightning_pspc.metrics.functional.memorized_mask`).

    Args:
        train_images: ``[N, C, H, W]`` training set, ``N >= 2``. Kept as a plain attribute where
            you put it (not a metric state, not a buffer: it is never synced, broadcast by DDP or
            saved in checkpoints); each chunk moves to the samples' device during ``update``.
        threshold: ratio below which a sample counts as memorized; ``1/3`` in Gu et al.
        chunk_size: training images compared at once (memory ``O(M * chunk_size)``).

    ``update(samples [M, C, H, W])``; ``compute()`` -> float64 scalar in ``[0, 1]``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    memorized: Tensor
    total: Tensor

    def __init__(
        self,
        train_images: Tensor,
        threshold: float = 1 / 3,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0 (Gu et al. use 1/3), got {threshold}")
        check_chunk_size(chunk_size)
        self.train_images = check_train_images(train_images, min_images=2)
        self.threshold, self.chunk_size = float(threshold), chunk_size
        self.add_state("memorized", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        """Count memorized samples among ``samples [M, C, H, W]``."""
        mask = memorized_mask(samples, self.train_images, self.threshold, self.chunk_size)
        self.memorized += mask.sum().to(self.memorized.device)
        self.total += mask.numel()

    def compute(self) -> Tensor:
        """Memorized fraction, float64 scalar in ``[0, 1]`` (NaN before any sample)."""
        if self.total == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        return self.memorized.double() / self.total.double()
