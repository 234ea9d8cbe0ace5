"""Per-epoch memorization of the EMA network's samples (Gu et al. 2023; Kadkhodaie et al. 2024)."""

from __future__ import annotations

import lightning
import torch

from ..evaluation.engine import memorization_stats, nearest_training_images, sample_batched
from ..evaluation.plots import neighbours_figure
from ..evaluation.probes import fixed_noise
from .periodic import PeriodicEvaluation


class MemorizationMonitor(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: sample ``num_samples`` images and compare them to the data.

    Samples come from the EMA network with the deterministic Heun sampler (``num_steps`` steps,
    EDM algorithm 1) from fixed seeds, so successive epochs start from the same noise. Against
    the training images (``trainer.datamodule.train_images()``, without x-flipped copies) it logs

    * ``memorization/memorized_fraction``: fraction with ``||s - NN1|| / ||s - NN2|| <
      threshold`` (Gu et al. 2023; nearest and second-nearest training images, pixel L2);
    * ``memorization/nn_dist_{mean,median}``: L2 distance to the nearest training image;
    * ``memorization/max_cos_{mean,median}``: cosine similarity to the most similar training
      image (Kadkhodaie et al. 2024);

    and ``memorization/seconds``. Under DDP each process samples its share of the seeds and the
    statistics are reduced across processes. With ``log_images``, rank 0 draws its first
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
        super().__init__(every_n_epochs, log_images, progress, dirpath)
        if min(num_samples, num_steps, batch_size, grid_size) < 1 or not threshold > 0:
            raise ValueError(
                f"MemorizationMonitor: num_samples={num_samples}, num_steps={num_steps}, "
                f"batch_size={batch_size} and grid_size={grid_size} must be >= 1 and "
                f"threshold={threshold} > 0"
            )
        self.num_samples, self.num_steps, self.seed = num_samples, num_steps, seed
        self.threshold, self.batch_size, self.grid_size = threshold, batch_size, grid_size
        self.noise: torch.Tensor | None = None
        self.train_images: torch.Tensor | None = None
        self.last_stats: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, num_samples=self.num_samples)

    def prepare(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, device: torch.device
    ) -> None:
        """Fix this process's share of the seeds; keep the training images on the device."""
        dm = trainer.datamodule
        if dm.train_images().shape[0] < 2:
            raise ValueError(
                "MemorizationMonitor needs at least 2 training images (nearest and second-nearest "
                "neighbours); increase data.num_train or remove the callback"
            )
        noise = fixed_noise(self.num_samples, dm.image_shape, self.seed)
        self.noise = noise[trainer.global_rank :: trainer.world_size].to(device)
        self.train_images = dm.train_images().to(device)

    def evaluate(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        """Sample, log the statistics and (rank 0) draw the nearest-neighbour grid."""
        bar = self.progress_bar(trainer, self.noise.shape[0], "MemorizationMonitor")
        try:
            samples = sample_batched(
                pl_module.denoiser, self.noise, self.num_steps, self.batch_size, bar
            )
        finally:
            bar.close()
        self.last_stats = memorization_stats(samples, self.train_images, self.threshold)
        pl_module.log_dict(
            {f"{self.prefix}/{k}": v for k, v in self.last_stats.items()},
            on_step=False,
            on_epoch=True,
        )
        if trainer.is_global_zero and self.log_images and samples.shape[0]:
            shown = samples[: self.grid_size]
            neighbours, ratio = nearest_training_images(shown, self.train_images)
            fig = neighbours_figure(shown, neighbours, ratio, self.threshold)
            self.publish(trainer, fig, f"{self.prefix}/neighbours", epoch)
