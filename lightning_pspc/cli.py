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

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from .callbacks.checkpoint import LastCheckpoint, RunCheckpoint
from .callbacks.progress import EpochLines
from .data import ImageDataModule
from .files import write_atomic
from .module import DiffusionModule
from .runs import (
    CONFIG_FILE,
    RunSetupError,
    check_checkpoint_matches,
    check_network_accepts,
    check_run_name,
    default_run_name,
    image_shape_of,
    new_wandb_id,
    read_checkpoint,
    refuse_to_clobber,
    resume_dir,
    store_wandb_id,
    stored_wandb_id,
)
from .wandb_check import wandb_login_problem

RUN_NAME_ENV = "LIGHTNING_PSPC_RUN_NAME"
"""Passes the run name chosen by rank 0 to the DDP worker processes Lightning launches."""

_SPECIAL_CKPT = {"last", "best", "hpc", "registry"}
_LOGGER_DIR_ARG = {
    "WandbLogger": "save_dir",
    "CSVLogger": "save_dir",
    "TensorBoardLogger": "save_dir",
}


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
            args = _default_logger_dir(list(sys.argv[1:] if args is None else args))
        with warnings.catch_warnings():
            if from_argv:  # the command line itself comes back as args: not the misuse warned of
                warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
            super().parse_arguments(parser, args)
        cfg = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in _SPECIAL_CKPT:
            read_checkpoint(ckpt)  # fails with a clear message before Lightning reads it

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        _check_wandb_can_log(cfg.trainer)
        saved = _saved_run_dirs(cfg)
        run_dir = _run_dir(cfg)
        if cfg.get("ckpt_path") and cfg.ckpt_path not in _SPECIAL_CKPT:
            _follow_moved_run(cfg, saved, run_dir)
        if self.subcommand == "fit" and rank_zero_only.rank == 0:
            refuse_to_clobber(run_dir, cfg.get("ckpt_path"))
        cfg.trainer.default_root_dir = str(run_dir)
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(run_dir)
        _point_loggers_at(cfg.trainer, run_dir)
        self._run_dir = run_dir
        self._wandb_id, self._wandb_init = _assign_wandb_id(
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
        """The configured Trainer plus a :class:`LastCheckpoint` beside its ``ModelCheckpoint``.

        Logs stay readable when standard error is not a terminal: Lightning's default progress
        bar becomes :class:`EpochLines` (one line per epoch), and W&B is not handed the
        ``anonymous`` setting it warns about.
        """
        trainer = super().instantiate_trainer(**kwargs)
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
        if ckpt and ckpt not in _SPECIAL_CKPT:
            check_checkpoint_matches(self.model, ckpt)
        if self._wandb_id is not None and rank_zero_only.rank == 0:
            store_wandb_id(self._run_dir, self._wandb_id)

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
    """Entry point of ``train.py``: a :class:`RunSetupError` prints one line and exits with 2."""
    try:
        return TrainCLI(args=args)
    except RunSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _default_logger_dir(args: list[str]) -> list[str]:
    """``--trainer.logger CSVLogger`` (or TensorBoardLogger) alone: add ``save_dir=.`` (= run folder).

    Those loggers require a ``save_dir``; ``.`` is replaced by the run folder later.
    """
    if any(a.startswith("--trainer.logger.save_dir") for a in args):
        return args
    out, i = [], 0
    while i < len(args):
        if args[i] == "--trainer.logger" and i + 1 < len(args):
            value, taken = args[i + 1], args[i : i + 2]
        else:
            value, taken = None, args[i : i + 1]
            if args[i].startswith("--trainer.logger="):
                value = args[i].split("=", 1)[1]
        out += taken
        i += len(taken)
        if value and value.rsplit(".", 1)[-1] in ("CSVLogger", "TensorBoardLogger"):
            out.append("--trainer.logger.save_dir=.")
    return out


# --- run folders ---------------------------------------------------------------------------
def _run_dir(cfg: Namespace) -> Path:
    """The run folder: the checkpoint's folder when resuming, else ``<run_root>/<run_name>``.

    Rank 0 chooses a default name; DDP workers receive it through :data:`RUN_NAME_ENV`.
    """
    name, ckpt = cfg.get("run_name"), cfg.get("ckpt_path")
    if ckpt and ckpt not in _SPECIAL_CKPT:
        run_dir = resume_dir(ckpt)  # resume in place, wherever the caller stands
        if name is not None and name != run_dir.name:
            rank_zero_warn(
                f"--run_name {name!r} is ignored: a run resumed from --ckpt_path {ckpt} stays in "
                f"its folder {str(run_dir)!r}."
            )
        os.environ[RUN_NAME_ENV] = run_dir.name
        cfg.run_name, cfg.run_root = run_dir.name, str(run_dir.parent)
        return run_dir
    if name is None and rank_zero_only.rank != 0:
        name = os.environ.get(RUN_NAME_ENV)
    if name is None:
        configs = cfg.get("config") or []
        name = default_run_name(configs[-1] if configs else None)
    os.environ[RUN_NAME_ENV] = check_run_name(name)
    cfg.run_name = name
    return Path(cfg.run_root) / name


def _saved_run_dirs(cfg: Namespace) -> set[str]:
    """The run folder named in a configuration (a saved ``config.yaml`` names its own)."""
    dirs = {cfg.trainer.get("default_root_dir")}
    if cfg.get("run_root") and cfg.get("run_name"):
        dirs.add(str(Path(cfg.run_root) / cfg.run_name))
    return {str(Path(d).resolve()) for d in dirs if d}


def _follow_moved_run(cfg: Namespace, saved: set[str], run_dir: Path) -> None:
    """A resumed run writes into its checkpoint's folder: the checkpoint and logger folders that
    a moved run's ``config.yaml`` still names at the old place (``saved``) become ``run_dir``."""
    if cfg.checkpoint.get("dirpath") and str(Path(cfg.checkpoint.dirpath).resolve()) in saved:
        cfg.checkpoint.dirpath = str(run_dir)
    loggers = cfg.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or "class_path" not in logger:
            continue
        key = _LOGGER_DIR_ARG.get(str(logger.class_path).rsplit(".", 1)[-1])
        init = logger.get("init_args") or Namespace()
        if key and init.get(key) and str(Path(init[key]).resolve()) in saved:
            init[key] = str(run_dir)


def _point_loggers_at(trainer_cfg: Namespace, run_dir: Path) -> None:
    """Loggers left at their default folder write into the run folder."""
    loggers = trainer_cfg.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or "class_path" not in logger:
            continue
        kind = str(logger.class_path).rsplit(".", 1)[-1]
        init = logger.get("init_args") or Namespace()
        key = _LOGGER_DIR_ARG.get(kind)
        if key and init.get(key) in (None, ".", ""):
            init[key] = str(run_dir)
        if kind == "WandbLogger" and init.get("name") is None:
            init["name"] = run_dir.name
        logger.init_args = init


def _wandb_loggers(trainer_cfg: Namespace) -> list[Namespace]:
    """The ``WandbLogger`` entries of the trainer's ``logger`` configuration."""
    loggers = trainer_cfg.get("logger")
    return [
        logger
        for logger in (loggers if isinstance(loggers, list) else [loggers])
        if isinstance(logger, Namespace)
        and "class_path" in logger
        and str(logger.class_path).rsplit(".", 1)[-1] == "WandbLogger"
    ]


def _check_wandb_can_log(trainer_cfg: Namespace) -> None:
    """An online ``WandbLogger`` without credentials fails before anything is written."""
    for logger in _wandb_loggers(trainer_cfg):
        if (logger.get("init_args") or Namespace()).get("offline"):
            continue
        problem = wandb_login_problem(
            "train without W&B: --trainer.logger CSVLogger (or --trainer.logger.offline true)"
        )
        if problem:
            raise RunSetupError(problem)


def _assign_wandb_id(
    trainer_cfg: Namespace, run_dir: Path, resuming: bool
) -> tuple[str | None, Namespace | None]:
    """Give the first ``WandbLogger`` a run id and ``resume="allow"``.

    When resuming (``--ckpt_path``), the id stored in ``<run_dir>/wandb_id.txt`` continues the
    run's W&B run; otherwise (or when the file is missing) a new id is drawn. An ``id`` or
    ``version`` set in the configuration wins. Returns the id (None without a ``WandbLogger``)
    and the logger's ``init_args`` when this function put the id there (else None). The file is
    written by ``before_fit``, after the up-front checks, so a run that fails to start leaves
    nothing behind.
    """
    for logger in _wandb_loggers(trainer_cfg):
        init = logger.get("init_args") or Namespace()
        run_id, injected = init.get("id") or init.get("version"), None
        if run_id is None:
            run_id = stored_wandb_id(run_dir) if resuming else None
            if not run_id:
                run_id = new_wandb_id()
            init["id"], injected = run_id, init
        if init.get("resume") is None:
            init["resume"] = "allow"
        logger.init_args = init
        return str(run_id), injected
    return None, None


if __name__ == "__main__":
    main()
