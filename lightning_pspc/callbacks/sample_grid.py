"""Sample-grid callback: Heun samples of the EMA denoiser from fixed seeds, every n epochs."""

from __future__ import annotations

from pathlib import Path

import lightning
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import make_grid, save_image

from ..runs.files import write_atomic
from .periodic import is_last_epoch


class SampleGrid(lightning.Callback):
    """Every ``every_n_epochs`` epochs (and after the last one) draw ``num_samples`` images.

    The noise comes from a generator seeded with ``seed``, so grids of successive epochs show
    the same starting points. Rank 0 writes ``<run folder>/samples/epoch_XXXX.png`` (the run
    folder is the Trainer's ``default_root_dir``) and, when the logger is a ``WandbLogger``,
    logs the grid as the image ``samples``. The module must provide ``sample(noise, num_steps)``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        num_steps: int = 18,
        seed: int = 0,
        dirpath: str | None = None,
    ) -> None:
        if every_n_epochs < 1 or num_samples < 1 or num_steps < 1:
            raise ValueError(
                f"SampleGrid: every_n_epochs={every_n_epochs}, num_samples={num_samples} and "
                f"num_steps={num_steps} must all be >= 1."
            )
        self.every_n_epochs, self.num_samples = every_n_epochs, num_samples
        self.num_steps, self.seed, self.dirpath = num_steps, seed, dirpath

    def noise(self, shape: tuple[int, int, int]) -> Tensor:
        """The fixed unit noise ``[num_samples, C, H, W]`` for image shape ``(C, H, W)``."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn((self.num_samples, *shape), generator=gen)

    def on_train_epoch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Draw and save a grid when the epoch count hits the period or training ends."""
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs == 0 or is_last_epoch(trainer):
            self._log_grid(trainer, pl_module, epoch)

    @rank_zero_only
    def _log_grid(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        shape = _image_shape(trainer)
        if shape is None:
            return
        samples = pl_module.sample(self.noise(shape), num_steps=self.num_steps)  # [N,C,H,W]
        grid = make_grid((samples.float().cpu().clamp(-1, 1) + 1) / 2, nrow=_nrow(self.num_samples))
        path = Path(self.dirpath or trainer.default_root_dir) / "samples" / f"epoch_{epoch:04d}.png"
        write_atomic(path, lambda tmp: save_image(grid, tmp))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="samples",
                    images=[str(path)],
                    step=trainer.global_step,
                    caption=[f"epoch {epoch}"],
                )


def _image_shape(trainer: lightning.Trainer) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the training images, from the data module or a training batch."""
    dm = trainer.datamodule
    if dm is not None and hasattr(dm, "image_shape"):
        return tuple(dm.image_shape)
    return None


def _nrow(n: int) -> int:
    """Columns of a near-square grid of ``n`` images."""
    return max(1, int(round(n**0.5)))
