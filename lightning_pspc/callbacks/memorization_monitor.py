"""Per-epoch memorization of the EMA network's samples (Gu et al. 2023; Kadkhodaie et al. 2024)."""

from __future__ import annotations

import lightning
import torch

from ..evaluation.members.memorization import Memorization, MemorizationOverTime
from ..evaluation.pipeline import EvaluationMember
from .periodic import PeriodicEvaluation


class MemorizationMonitor(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: sample ``num_samples`` images and compare them to the data.

    The :class:`~lightning_pspc.evaluation.Memorization` member of the evaluation pipeline.
    Samples come from the EMA network with the deterministic Heun sampler (``num_steps`` steps,
    EDM algorithm 1) from fixed noise (derived from ``seed``), so successive epochs start from
    the same noise. Against the training images (``trainer.datamodule.train_images()``, without
    x-flipped copies) it logs

    * ``memorization/memorized_fraction``: fraction with ``||s - NN1|| / ||s - NN2|| <
      threshold`` (Gu et al. 2023; nearest and second-nearest training images, pixel L2);
    * ``memorization/nn_dist_{mean,median}``: L2 distance to the nearest training image;
    * ``memorization/max_cos_{mean,median}``: cosine similarity to the most similar training
      image (Kadkhodaie et al. 2024);

    and ``memorization/seconds``. Every evaluation's record (in :attr:`histories`, saved in
    checkpoints) also holds the training images seen, and with ``log_images`` rank 0 charts the
    memorized fraction against images seen (Bonnaire et al. 2025). Under DDP each process
    samples its share of the seeds and the statistics are reduced across processes. With ``log_images``, rank 0 draws its first
    ``grid_size`` samples above their nearest training images (``<run>/plots/`` and W&B).
    """

    prefix = "memorization"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 16,
        num_steps: int = 18,
        seed: int = 0,
        threshold: float = 1 / 3,
        batch_size: int = 64,
        grid_size: int = 16,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
    ) -> None:
        super().__init__(
            every_n_epochs, log_images, progress, dirpath, seed=seed, batch_size=batch_size
        )
        try:
            self.member = MemorizationOverTime(num_samples, num_steps, threshold, grid_size)
        except ValueError as err:
            raise ValueError(f"MemorizationMonitor: {err}") from None
        self.num_samples = num_samples

    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        return [self.member]

    def evaluate(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        self.member.images_seen = int(getattr(pl_module, "images_seen", trainer.global_step))
        super().evaluate(trainer, pl_module, epoch)

    @property
    def history(self) -> list[tuple[int, dict]]:
        """``(epoch, record)`` of every evaluation: ``memorized_fraction``, ``nearest_neighbour``
        and ``images_seen`` (what ``eval.py`` reads back for the phase diagram)."""
        return self.histories.get(Memorization.name, [])

    @property
    def noise(self) -> torch.Tensor:
        """This process's share of the fixed starting noise (after setup)."""
        return self.member.noise

    @property
    def last_stats(self) -> dict[str, float]:
        """The statistics of the latest evaluation (``{}`` before the first)."""
        history = self.histories.get(Memorization.name)
        if not history:
            return {}
        record = history[-1][1]
        return {"memorized_fraction": record["memorized_fraction"], **record["nearest_neighbour"]}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, num_samples=self.num_samples)
