"""``train.py``: the LightningCLI of :class:`DiffusionModule` + :class:`ImageDataModule`.

``python train.py fit --config configs/<preset>.yaml [--run_name NAME] [--data.num_train 64] ...``
writes everything of a run into ``<run_root>/<run_name>/``: ``config.yaml`` (the resolved
configuration), ``last.ckpt`` (rewritten after every epoch) and ``best.ckpt`` (lowest
``val/loss``), ``samples/``, the logger's files and, with a ``WandbLogger``, ``wandb_id.txt`` (the
W&B run that ``--ckpt_path`` resumes). Run folders, checkpoint checks and rebuilding a run
from its folder are library code in :mod:`lightning_pspc.runs`; this module only wires them into
the CLI.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from ..callbacks.checkpoint import LastCheckpoint, RunCheckpoint
from ..callbacks.progress import EpochLines
from ..data.datamodule import ImageDataModule
from ..module import DiffusionModule
from ..runs.checkpoint_io import CheckpointWriteError, use_atomic_checkpoint_io
from ..runs.checkpoints import check_checkpoint_matches, read_checkpoint
from ..runs.files import write_atomic
from ..runs.folders import (
    CONFIG_FILE,
    RunSetupError,
    refuse_to_clobber,
    store_wandb_id,
)
from ..runs.rebuild import check_config_syntax, check_network_accepts, image_shape_of
from .train_config import (
    SPECIAL_CKPT,
    assign_wandb_id,
    check_accelerator,
    check_wandb_can_log,
    config_files,
    default_logger_dir,
    follow_moved_run,
    point_loggers_at,
    run_dir_of,
    saved_run_dirs,
)


class _Parser(LightningArgumentParser):
    """Prints a configuration error as one message with its fix (no 100-line usage dump)."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        sys.stderr.write(
            f"error: {message}\nFix: correct or remove that key or value; `python train.py fit --help` "
            f"lists every key and `python train.py fit --config <file> --print_config` prints a "
            f"complete configuration.\n"
        )
        self.exit(2)


class RunConfig(SaveConfigCallback):
    """Writes the resolved configuration to ``<run folder>/config.yaml`` (atomically, rank 0)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved or stage != "fit":  # validate/test must not replace the run's config
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            write_atomic(path, self.parser.dump(self.config, skip_none=False))
        self.already_saved = True


class TrainCLI(LightningCLI):
    """``LightningCLI`` for :class:`DiffusionModule` + :class:`ImageDataModule`.

    Extra arguments: ``--run_name`` (default ``<preset>-<date>-<time>``, or the folder of
    ``--ckpt_path`` when resuming) and ``--run_root`` (default ``checkpoints``). The
    ``--checkpoint.*`` group configures the ``ModelCheckpoint`` of ``best.ckpt`` (by
    ``val/loss``); a :class:`LastCheckpoint` in the same folder rewrites ``last.ckpt`` after every
    epoch. Loggers without a ``save_dir`` write into the run folder. A ``WandbLogger`` gets a run
    id, kept in ``<run folder>/wandb_id.txt``; ``--ckpt_path`` continues that W&B run.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        # config.yaml is written into the run folder before the first checkpoint, on purpose
        warnings.filterwarnings(
            "ignore", message=r"Checkpoint directory .* exists and is not empty"
        )
        quiet_library_noise()
        kwargs.setdefault("save_config_callback", RunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True, "config_filename": CONFIG_FILE})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_class", _Parser)
        super().__init__(DiffusionModule, ImageDataModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str | None, default=None, help="Run folder name.")
        parser.add_argument(
            "--run_root", type=str, default="checkpoints", help="Parent of run folders."
        )
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best",
                "checkpoint.save_top_k": 1,
                # last.ckpt comes from LastCheckpoint: this Lightning version's save_last rewrites
                # it only when val/loss improves
                "checkpoint.save_last": False,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        from_argv = args is None
        if args is None or isinstance(args, (list, tuple)):
            args = default_logger_dir(list(sys.argv[1:] if args is None else args))
            for path in config_files(args):  # the parser's own message names no file
                check_config_syntax(path)
        with warnings.catch_warnings():
            if from_argv:  # the command line itself comes back as args: not the misuse warned of
                warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
            super().parse_arguments(parser, args)
        cfg = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in SPECIAL_CKPT:
            read_checkpoint(ckpt)  # fails with a clear message before Lightning reads it

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(cfg.trainer)
        check_wandb_can_log(cfg.trainer)
        saved = saved_run_dirs(cfg)
        run_dir = run_dir_of(cfg)
        if cfg.get("ckpt_path") and cfg.ckpt_path not in SPECIAL_CKPT:
            follow_moved_run(cfg, saved, run_dir)
        if self.subcommand == "fit" and rank_zero_only.rank == 0:
            refuse_to_clobber(run_dir, cfg.get("ckpt_path"))
        cfg.trainer.default_root_dir = str(run_dir)
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(run_dir)
        point_loggers_at(cfg.trainer, run_dir)
        self.run_dir_of = run_dir
        self._wandb_id, self._wandb_init = assign_wandb_id(
            cfg.trainer, run_dir, resuming=bool(cfg.get("ckpt_path"))
        )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            raise RunSetupError(f"cannot build the run from its configuration: {err}") from err
        finally:
            if self._wandb_init is not None:
                # the drawn id lives in wandb_id.txt, not in config.yaml: a new run started from
                # a copy of config.yaml must not continue this run's W&B run
                self._wandb_init["id"] = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured Trainer plus a :class:`LastCheckpoint` beside its ``ModelCheckpoint``;
        checkpoints are written by :class:`~lightning_pspc.runs.checkpoint_io.AtomicCheckpointIO`.

        Logs stay readable when standard error is not a terminal: Lightning's default progress
        bar becomes :class:`EpochLines` (one line per epoch), and W&B is not handed the
        ``anonymous`` setting it warns about.
        """
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoint_io(trainer.strategy)  # every process, DDP ranks included
        bar = trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar and not sys.stderr.isatty():
            trainer.callbacks[trainer.callbacks.index(bar)] = EpochLines()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._wandb_init.get("anonymous") is None:
                logger._wandb_init.pop("anonymous", None)  # "has no effect" warning otherwise
        best = trainer.checkpoint_callback
        if best is None:  # enable_checkpointing=False
            return trainer
        if best.save_last:  # set in configs written before LastCheckpoint existed
            rank_zero_warn(
                "checkpoint.save_last is ignored: LastCheckpoint rewrites last.ckpt after every "
                "epoch (save_last would add last-v1.ckpt beside it)."
            )
            best.save_last = False
        trainer.callbacks.append(LastCheckpoint(best.dirpath))
        return trainer

    def before_fit(self) -> None:
        shape = image_shape_of(self.datamodule)
        check_network_accepts(self.model, shape)
        ckpt = self.config["fit"].get("ckpt_path")
        if ckpt and ckpt not in SPECIAL_CKPT:
            check_checkpoint_matches(self.model, ckpt)
        if self._wandb_id is not None and rank_zero_only.rank == 0:
            store_wandb_id(self.run_dir_of, self._wandb_id)

    def after_fit(self) -> None:
        # Close the W&B run so that a later fit in the same process starts its own run.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()


def quiet_library_noise() -> None:
    """Drop messages that say nothing about the run: Lightning's advertisement for its cloud
    logger, and the ``LeafSpec`` deprecation that Lightning 2.6 raises under torch 2.14 at every
    step."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in log.filters):
        log.addFilter(_DropTips())


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def main(args: list[str] | None = None) -> TrainCLI:
    """Entry point of ``train.py``: a :class:`RunSetupError` (bad input) or a
    :class:`CheckpointWriteError` (full disk) prints one line and exits with 2."""
    try:
        return TrainCLI(args=args)
    except (RunSetupError, CheckpointWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
