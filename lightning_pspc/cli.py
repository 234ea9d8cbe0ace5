"""LightningCLI for training: run folders, checkpoints, resuming and up-front input checks.

``python train.py fit --config configs/<preset>.yaml [--run_name NAME] [--data.num_train 64] ...``
writes everything of a run into ``<run_root>/<run_name>/``: ``config.yaml`` (the resolved
configuration), ``last.ckpt`` (rewritten after every epoch) and ``best.ckpt`` (lowest
``val/loss``), ``samples/``, the logger's files and, with a ``WandbLogger``, ``wandb_id.txt`` (the
W&B run that ``--ckpt_path`` resumes). :func:`load_run` rebuilds the model and data from a
checkpoint alone.
"""

from __future__ import annotations

import os
import secrets
import string
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from .callbacks.checkpoint import LastCheckpoint
from .checksum import checksum_mismatch
from .data import ImageDataModule
from .module import DiffusionModule

RUN_NAME_ENV = "LIGHTNING_PSPC_RUN_NAME"
"""Passes the run name chosen by rank 0 to the DDP worker processes Lightning launches."""

WANDB_ID_FILE = "wandb_id.txt"
"""In the run folder: the id of the run's W&B run, continued when the run is resumed."""

_SPECIAL_CKPT = {"last", "best", "hpc", "registry"}
_LOGGER_DIR_ARG = {
    "WandbLogger": "save_dir",
    "CSVLogger": "save_dir",
    "TensorBoardLogger": "save_dir",
}


class RunSetupError(ValueError):
    """A bad input found before training starts; the message names the value and the fix."""


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
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.parser.dump(self.config, skip_none=False))
            os.replace(tmp, path)
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
        kwargs.setdefault("save_config_callback", RunConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_class", _Parser)
        super().__init__(DiffusionModule, ImageDataModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str | None, default=None, help="Run folder name.")
        parser.add_argument(
            "--run_root", type=str, default="checkpoints", help="Parent of run folders."
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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
        run_dir = _run_dir(cfg)
        if self.subcommand == "fit" and rank_zero_only.rank == 0:
            _refuse_to_clobber(run_dir, cfg.get("ckpt_path"))
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
        """The configured Trainer plus a :class:`LastCheckpoint` beside its ``ModelCheckpoint``."""
        trainer = super().instantiate_trainer(**kwargs)
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
        shape = _image_shape(self.datamodule)
        check_network_accepts(self.model, shape)
        ckpt = self.config["fit"].get("ckpt_path")
        if ckpt and ckpt not in _SPECIAL_CKPT:
            check_checkpoint_matches(self.model, ckpt)
        if self._wandb_id is not None and rank_zero_only.rank == 0:
            _write_atomic(self._run_dir / WANDB_ID_FILE, self._wandb_id + "\n")

    def after_fit(self) -> None:
        # Close the W&B run so that a later fit in the same process starts its own run.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()


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
    """``<run_root>/<run_name>``; chooses (rank 0) or receives (DDP workers) a default name."""
    name = cfg.get("run_name")
    ckpt = cfg.get("ckpt_path")
    if name is None and rank_zero_only.rank != 0:
        name = os.environ.get(RUN_NAME_ENV)
    if name is None and ckpt and ckpt not in _SPECIAL_CKPT:
        run_dir = Path(ckpt).resolve().parent  # resume in place
        os.environ[RUN_NAME_ENV] = run_dir.name
        cfg.run_name, cfg.run_root = run_dir.name, str(run_dir.parent)
        return run_dir
    if name is None:
        configs = cfg.get("config") or []
        stem = Path(str(configs[-1])).stem if configs else "run"
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RunSetupError(
            f"--run_name {name!r} is not a folder name; use letters, digits, '-', '_'."
        )
    os.environ[RUN_NAME_ENV] = name
    cfg.run_name = name
    return Path(cfg.run_root) / name


def _refuse_to_clobber(run_dir: Path, ckpt_path: str | None) -> None:
    """A fresh run may not start in a folder that already holds checkpoints of another run."""
    existing = sorted(p.name for p in run_dir.glob("*.ckpt")) if run_dir.is_dir() else []
    if not existing:
        return
    resuming_here = ckpt_path and Path(ckpt_path).resolve().parent == run_dir.resolve()
    if not resuming_here:
        raise RunSetupError(
            f"run folder {str(run_dir)!r} already holds checkpoints {existing}; resume it with "
            f"--ckpt_path {run_dir / 'last.ckpt'} or start a new run with another --run_name."
        )


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
    loggers = trainer_cfg.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or "class_path" not in logger:
            continue
        if str(logger.class_path).rsplit(".", 1)[-1] != "WandbLogger":
            continue
        init = logger.get("init_args") or Namespace()
        run_id, injected = init.get("id") or init.get("version"), None
        if run_id is None:
            stored = run_dir / WANDB_ID_FILE
            run_id = stored.read_text().strip() if resuming and stored.is_file() else None
            if not run_id:
                run_id = new_wandb_id()
            init["id"], injected = run_id, init
        if init.get("resume") is None:
            init["resume"] = "allow"
        logger.init_args = init
        return str(run_id), injected
    return None, None


def new_wandb_id() -> str:
    """A fresh W&B run id: 8 lowercase letters and digits, as ``wandb`` draws them.

    ``secrets`` rather than ``random``: ``seed_everything`` must not make two runs share an id.
    """
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- up-front checks ------------------------------------------------------------------------
def _image_shape(datamodule: Any) -> tuple[int, int, int]:
    """The data module's ``(C, H, W)``; a missing or unreadable data set becomes one message."""
    try:
        return tuple(datamodule.image_shape)
    except (OSError, ValueError) as err:
        raise RunSetupError(f"cannot load the training data: {err}") from err


def check_network_accepts(module: DiffusionModule, shape: tuple[int, int, int]) -> None:
    """One forward pass on a zero image of ``shape`` (C, H, W): the net must return that shape."""
    net = module.precond.net
    was_training = net.training
    try:
        with torch.no_grad():
            out = module.precond.eval()(torch.zeros(1, *shape), torch.ones(1))
    except (ValueError, RuntimeError) as err:
        raise RunSetupError(
            f"network {type(net).__name__} cannot take the data's images of shape {list(shape)}: "
            f"{err}. Fix: make --model.net.init_args.img_resolution / in_channels match the data "
            f"(or change --data.resolution / --data.channels)."
        ) from err
    finally:
        module.precond.train(was_training)
    if tuple(out.shape[1:]) != tuple(shape):
        raise RunSetupError(
            f"network {type(net).__name__} maps images {list(shape)} to {list(out.shape[1:])}; "
            f"set --model.net.init_args.out_channels to null (same as in_channels)."
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a Lightning checkpoint (memory-mapped); a missing or corrupt file becomes one message."""
    path = Path(path)
    if not path.is_file():
        raise RunSetupError(
            f"checkpoint {str(path)!r} does not exist. Fix: pass an existing file such as "
            f"checkpoints/<run>/last.ckpt, or drop --ckpt_path to start from scratch."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise RunSetupError(
            f"checkpoint {str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); it may be truncated or corrupt. "
            f"Fix: use another checkpoint of the run (last.ckpt or best.ckpt) or drop --ckpt_path."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunSetupError(
            f"checkpoint {str(path)!r} holds no 'state_dict'; it is not a Lightning checkpoint of "
            f"this project. Fix: pass a last.ckpt/best.ckpt written by train.py."
        )
    if problem := checksum_mismatch(ckpt, path):
        raise RunSetupError(problem)
    return ckpt


def check_checkpoint_matches(
    module: DiffusionModule, path: str | Path, ckpt: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint's weights must have the module's keys and shapes; returns the checkpoint."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            detail.append(
                f"{len(shapes)} shape mismatches (e.g. {k}: {list(theirs[k])} vs {list(ours[k])})"
            )
        raise RunSetupError(
            f"checkpoint {str(path)!r} was written by a different architecture than the configured "
            f"model: {'; '.join(detail)}. Fix: resume with the config saved next to it "
            f"(--config {Path(path).parent / 'config.yaml'}) or pass a checkpoint of this model."
        )
    return ckpt


# --- rebuilding a run -----------------------------------------------------------------------
def build_from_config(
    config: str | Path | dict[str, Any],
) -> tuple[DiffusionModule, ImageDataModule]:
    """Instantiate the ``model`` and ``data`` sections of a train.py config (file or dict).

    Other sections (trainer, checkpoint, ...) are ignored; the data are not loaded yet.
    """
    if not isinstance(config, dict):
        config = yaml.safe_load(Path(config).read_text()) or {}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DiffusionModule, "model", fail_untyped=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    cfg = parser.parse_object(
        {"model": config.get("model") or {}, "data": config.get("data") or {}}
    )
    init = parser.instantiate_classes(cfg)
    return init.model, init.data


def load_run(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DiffusionModule, ImageDataModule]:
    """Rebuild ``(module, datamodule)`` of a run from a checkpoint and the ``config.yaml`` beside it.

    The module is in eval mode with the checkpoint's weights (raw and EMA); use
    ``module.denoiser`` for ``D(z [B,C,H,W], sigma [B])``. Data are loaded lazily.
    """
    ckpt_path = Path(ckpt_path)
    config_path = ckpt_path.parent / "config.yaml"
    ckpt = read_checkpoint(ckpt_path)
    if not config_path.is_file():
        raise RunSetupError(
            f"no config.yaml next to checkpoint {str(ckpt_path)!r}. Fix: keep checkpoints in the run "
            f"folder train.py wrote (it saves config.yaml there)."
        )
    try:
        module, datamodule = build_from_config(config_path)
    except Exception as err:
        raise RunSetupError(f"cannot rebuild the run from {str(config_path)!r}: {err}") from err
    check_checkpoint_matches(module, ckpt_path, ckpt)
    module.load_state_dict(ckpt["state_dict"])
    module.images_seen = int(ckpt.get("images_seen", 0))
    return module.to(map_location).eval(), datamodule
