"""Base of the evaluation callbacks: when to run, timing, progress bars, history, PNG + W&B charts.

What is measured comes from :mod:`lightning_pspc.evaluation`: each callback names its
members and settings, builds one :class:`~lightning_pspc.evaluation.Evaluation` at setup and calls
it every ``every_n_epochs`` epochs.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..denoisers.network_fitted import ReferenceOptions
from ..evaluation.calibration import CalibrationSettings
from ..evaluation.curves import curve_rows, member_curves, merge_rows, wandb_line_plots
from ..evaluation.pipeline import EvalData, Evaluation, EvaluationMember, figures_of
from ..evaluation.plots import save_figure
from ..evaluation.probes import probe_sigmas
from ..evaluation.timing import OverheadClock


class PeriodicEvaluation(lightning.Callback, abc.ABC):
    """Runs an :class:`~lightning_pspc.evaluation.Evaluation` every ``every_n_epochs`` epochs and
    after the last one.

    Subclasses say what to measure (:meth:`members`); this class builds the evaluation at setup from
    the data module's images on the training device (each DDP process its share), logs every
    member's scalars under :attr:`prefix`, keeps each member's record per evaluation in
    :attr:`histories` (saved in checkpoints, so the charts of a resumed run go on) and, on rank 0
    with ``log_images``, draws the members' charts. The evaluation runs under ``torch.no_grad()``
    with the module in eval mode (its mode is restored afterwards) and its wall time, together with
    :meth:`prepare`, is charged to :attr:`clock`; at the end of the fit rank 0 prints the fraction
    of the fit's wall time it took and logs it as ``<prefix>/overhead_fraction``. Charts go to
    ``<run folder>/plots/`` (the Trainer's ``default_root_dir``, or ``dirpath``) and, with a
    ``WandbLogger``, to W&B.
    """

    prefix = "eval"

    def __init__(
        self,
        every_n_epochs: int = 1,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
        references: Sequence[str] = (),
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__}: every_n_epochs={every_n_epochs} must be >= 1")
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size={batch_size} must be >= 1")
        probe_sigmas(sigmas)  # a bad grid fails here, not at setup
        self.every_n_epochs, self.log_images = every_n_epochs, log_images
        self.progress, self.dirpath = progress, dirpath
        self.references, self.sigmas = tuple(references), sigmas
        self.seed, self.batch_size = seed, batch_size
        #: how the evaluation's calibrated references fit the network (default settings if None)
        self.calibration: CalibrationSettings | None = None
        #: settings of the network-dependent references (defaults if None)
        self.reference_options: ReferenceOptions | None = None
        self.evaluation: Evaluation | None = None
        #: ``{member: [(epoch, record), ...]}`` of every evaluation, for the charts
        self.histories: dict[str, list[tuple[int, Any]]] = {}
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
    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        """The measurements of this callback (built anew at every setup)."""

    def prepare(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, device: torch.device
    ) -> None:
        """Build the evaluation (references, fixed probes and noise) once, at setup."""
        self.evaluation = Evaluation(
            EvalData.from_datamodule(trainer.datamodule),
            self.members(trainer),
            self.references,
            self.sigmas,
            self.seed,
            self.batch_size,
            device,
            trainer.global_rank,
            trainer.world_size,
            reference_options=self.reference_options,
            calibration=self.calibration,
        )

    def evaluate(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        """One evaluation after ``epoch`` completed epochs (every rank calls it): measure, log the
        scalars, keep the records and (rank 0) draw the charts."""
        bar = self.progress_bar(trainer, self.evaluation.work(), type(self).__name__)
        try:
            results = self.evaluation.evaluate(pl_module.denoiser, bar)
        finally:
            bar.close()
        scalars = {}
        for name, result in results.items():
            record = self.evaluation.members[name].record(result)
            history = [h for h in self.histories.get(name, []) if h[0] != epoch]
            self.histories[name] = [*history, (epoch, record)]
            scalars |= result.scalars(self.prefix)
        pl_module.log_dict(scalars, on_step=False, on_epoch=True)
        if trainer.is_global_zero and self.log_images:
            figs = figures_of(self.evaluation, results, self.histories, over_time=True)
            for key, fig in figs.items():
                self.publish(trainer, fig, f"{self.prefix}/{key}", epoch)
            self.publish_curves(trainer)

    # --- checkpointing: keep the histories so the charts of a resumed run go on ----------------
    def state_dict(self) -> dict[str, Any]:
        return {"histories": {k: [[e, r] for e, r in h] for k, h in self.histories.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.histories = {
            k: [(int(e), r) for e, r in h] for k, h in state_dict.get("histories", {}).items()
        }

    def progress_bar(self, trainer: lightning.Trainer, total: int, desc: str) -> tqdm:
        """A progress bar on rank 0 when progress bars are on (a silent one elsewhere)."""
        show = (
            self.progress
            and trainer.is_global_zero
            and isinstance(trainer.progress_bar_callback, TQDMProgressBar)
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

    def publish_curves(self, trainer: lightning.Trainer) -> dict[str, Any]:
        """Log the per-sigma curves of every evaluation so far (:mod:`~lightning_pspc.evaluation.
        curves`) to W&B as tables with line plots under ``<prefix>/curves/<chart>``, one line per
        epoch and series, so that epochs (and runs) overlay. Call on rank 0 only. Returns the
        ``{key: plot}`` logged (empty without a ``WandbLogger``)."""
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return {}
        sigmas = self.evaluation.sigmas.tolist()
        rows: dict[str, list[list]] = {}
        for name, history in self.histories.items():
            for epoch, record in history:
                merge_rows(rows, curve_rows("", epoch, member_curves(name, record, sigmas)))
        plots = wandb_line_plots(rows, f"{self.prefix}/") if rows else {}
        for logger in loggers:
            if plots:
                logger.log_metrics(plots, step=trainer.global_step)
        return plots


def is_last_epoch(trainer: lightning.Trainer) -> bool:
    """Whether the epoch ending now is the fit's last one, by ``max_epochs`` or ``max_steps``.

    With ``max_steps`` and no ``max_epochs`` Lightning sets ``max_epochs = -1`` (no limit), so
    the epoch count alone must not be trusted.
    """
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
