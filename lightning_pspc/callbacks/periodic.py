"""Base of the evaluation callbacks: when to run, timing, progress bars, PNG + W&B charts."""

from __future__ import annotations

import abc
from pathlib import Path

import lightning
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..evaluation.plots import save_figure
from ..evaluation.timing import OverheadClock


class PeriodicEvaluation(lightning.Callback, abc.ABC):
    """Runs :meth:`evaluate` every ``every_n_epochs`` epochs and after the last one.

    The evaluation runs under ``torch.no_grad()`` with the module in eval mode (its mode is
    restored afterwards) and its wall time, together with :meth:`prepare`, is charged to
    :attr:`clock`; at the end of the fit rank 0 prints the fraction of the fit's wall time it
    took and logs it as ``<prefix>/overhead_fraction``. Charts go to ``<run folder>/plots/``
    (the Trainer's ``default_root_dir``, or ``dirpath``) and, with a ``WandbLogger``, to W&B.
    """

    prefix = "eval"

    def __init__(
        self,
        every_n_epochs: int = 1,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__}: every_n_epochs={every_n_epochs} must be >= 1")
        self.every_n_epochs, self.log_images = every_n_epochs, log_images
        self.progress, self.dirpath = progress, dirpath
        self.clock = OverheadClock()
        self.overhead_fraction: float | None = None
        self.evaluated_epochs: list[int] = []  # completed-epoch counts at which it ran

    # --- hooks ----------------------------------------------------------------------------
    def setup(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str
    ) -> None:
        """Start the fit clock and build what every evaluation reuses (on the training device)."""
        if stage != "fit":
            return
        self.clock.start()
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "reference_images"):
            raise ValueError(
                f"{type(self).__name__} needs the training set: fit with an ImageDataModule "
                "(trainer.fit(model, datamodule=...)), not with bare dataloaders"
            )
        with self.clock.measure(trainer.strategy.root_device):
            self.prepare(trainer, pl_module, trainer.strategy.root_device)

    def on_train_epoch_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        """Evaluate when the epoch count hits the period or training ends."""
        epoch = trainer.current_epoch + 1
        if trainer.sanity_checking or not (
            epoch % self.every_n_epochs == 0 or is_last_epoch(trainer)
        ):
            return
        self.evaluated_epochs.append(epoch)
        was_training = pl_module.training
        with self.clock.measure(pl_module.device), torch.no_grad():
            pl_module.eval()
            try:
                self.evaluate(trainer, pl_module, epoch)
            finally:
                pl_module.train(was_training)
        pl_module.log(f"{self.prefix}/seconds", self.clock.last, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        """Print (rank 0) and log the fraction of the fit's wall time the evaluations took."""
        self.overhead_fraction = self.clock.fraction()
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer: lightning.Trainer) -> None:
        print(self.clock.summary(type(self).__name__), flush=True)
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"{self.prefix}/overhead_fraction": self.overhead_fraction},
                step=trainer.global_step,
            )

    # --- for subclasses -------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, device: torch.device
    ) -> None:
        """Build fixed probes, seeds and reference data once, at setup."""

    @abc.abstractmethod
    def evaluate(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        """One evaluation after ``epoch`` completed epochs (every rank calls it)."""

    def progress_bar(self, trainer: lightning.Trainer, total: int, desc: str) -> tqdm:
        """A progress bar on rank 0 when progress bars are on (a silent one elsewhere)."""
        show = (
            self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None
        )
        return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not show)

    def plot_dir(self, trainer: lightning.Trainer) -> Path:
        """``<run folder>/plots`` (``dirpath/plots`` when given)."""
        return Path(self.dirpath or trainer.default_root_dir) / "plots"

    def publish(self, trainer: lightning.Trainer, fig: Figure, key: str, epoch: int) -> Path:
        """Save ``fig`` as ``plots/<key with / as _>_epoch_XXXX.png``; log it to W&B as ``key``.

        Call on rank 0 only.
        """
        name = f"{key.replace('/', '_')}_epoch_{epoch:04d}.png"
        path = save_figure(fig, self.plot_dir(trainer) / name)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key=key,
                    images=[str(path)],
                    step=trainer.global_step,
                    caption=[f"epoch {epoch}"],
                )
        return path


def is_last_epoch(trainer: lightning.Trainer) -> bool:
    """Whether the epoch ending now is the fit's last one, by ``max_epochs`` or ``max_steps``.

    With ``max_steps`` and no ``max_epochs`` Lightning sets ``max_epochs = -1`` (no limit), so
    the epoch count alone must not be trusted.
    """
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
