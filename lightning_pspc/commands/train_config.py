"""How ``train.py`` wires a configuration to its run folder: folders, loggers, W&B run ids.

Functions of the parsed LightningCLI configuration (a ``jsonargparse.Namespace``), used by
:class:`~lightning_pspc.commands.train.TrainCLI` before it builds the trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from ..runs import (
    RunSetupError,
    check_run_name,
    default_run_name,
    new_wandb_id,
    resume_dir,
    stored_wandb_id,
    wandb_login_problem,
)

RUN_NAME_ENV = "LIGHTNING_PSPC_RUN_NAME"
"""Passes the run name chosen by rank 0 to the DDP worker processes Lightning launches."""

SPECIAL_CKPT = {"last", "best", "hpc", "registry"}
LOGGER_DIR_ARG = {
    "WandbLogger": "save_dir",
    "CSVLogger": "save_dir",
    "TensorBoardLogger": "save_dir",
}


def default_logger_dir(args: list[str]) -> list[str]:
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


def config_files(args: list[str]) -> list[Path]:
    """The files named by ``--config FILE``, ``--config=FILE`` and ``-c FILE`` in ``args`` (in
    order; values that are not files, such as inline YAML, are left out)."""
    found = []
    for i, arg in enumerate(args):
        value = None
        if arg in ("--config", "-c") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is not None and Path(value).is_file():
            found.append(Path(value))
    return found


def run_dir_of(cfg: Namespace) -> Path:
    """The run folder: the checkpoint's folder when resuming, else ``<run_root>/<run_name>``.

    Rank 0 chooses a default name; DDP workers receive it through :data:`RUN_NAME_ENV`.
    """
    name, ckpt = cfg.get("run_name"), cfg.get("ckpt_path")
    if ckpt and ckpt not in SPECIAL_CKPT:
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


def saved_run_dirs(cfg: Namespace) -> set[str]:
    """The run folder named in a configuration (a saved ``config.yaml`` names its own)."""
    dirs = {cfg.trainer.get("default_root_dir")}
    if cfg.get("run_root") and cfg.get("run_name"):
        dirs.add(str(Path(cfg.run_root) / cfg.run_name))
    return {str(Path(d).resolve()) for d in dirs if d}


def follow_moved_run(cfg: Namespace, saved: set[str], run_dir: Path) -> None:
    """A resumed run writes into its checkpoint's folder: the checkpoint and logger folders that
    a moved run's ``config.yaml`` still names at the old place (``saved``) become ``run_dir``."""
    if cfg.checkpoint.get("dirpath") and str(Path(cfg.checkpoint.dirpath).resolve()) in saved:
        cfg.checkpoint.dirpath = str(run_dir)
    loggers = cfg.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or "class_path" not in logger:
            continue
        key = LOGGER_DIR_ARG.get(str(logger.class_path).rsplit(".", 1)[-1])
        init = logger.get("init_args") or Namespace()
        if key and init.get(key) and str(Path(init[key]).resolve()) in saved:
            init[key] = str(run_dir)


def point_loggers_at(trainer_cfg: Namespace, run_dir: Path) -> None:
    """Loggers left at their default folder write into the run folder."""
    loggers = trainer_cfg.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or "class_path" not in logger:
            continue
        kind = str(logger.class_path).rsplit(".", 1)[-1]
        init = logger.get("init_args") or Namespace()
        key = LOGGER_DIR_ARG.get(kind)
        if key and init.get(key) in (None, ".", ""):
            init[key] = str(run_dir)
        if kind == "WandbLogger" and init.get("name") is None:
            init["name"] = run_dir.name
        logger.init_args = init


def wandb_loggers(trainer_cfg: Namespace) -> list[Namespace]:
    """The ``WandbLogger`` entries of the trainer's ``logger`` configuration."""
    loggers = trainer_cfg.get("logger")
    return [
        logger
        for logger in (loggers if isinstance(loggers, list) else [loggers])
        if isinstance(logger, Namespace)
        and "class_path" in logger
        and str(logger.class_path).rsplit(".", 1)[-1] == "WandbLogger"
    ]


def check_accelerator(trainer_cfg: Namespace) -> None:
    """``--trainer.accelerator gpu`` (``cuda``, ``mps``) needs that device: checked before
    Lightning builds the accelerator (whose own error is a traceback)."""
    name = trainer_cfg.get("accelerator")
    if not isinstance(name, str):
        return
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    found = {"gpu": cuda or mps, "cuda": cuda, "mps": mps}.get(name.lower(), True)
    if not found:
        on_mac = name.lower() == "mps"
        device, probe = ("Apple MPS device", "backends.mps") if on_mac else ("CUDA GPU", "cuda")
        raise RunSetupError(
            f"--trainer.accelerator {name}: no {device} found (torch.{probe}.is_available() is "
            f"False: none visible to this process, or a PyTorch build without it). Fix: use "
            f"--trainer.accelerator cpu (or auto, which takes a GPU where there is one)."
        )


def check_wandb_can_log(trainer_cfg: Namespace) -> None:
    """An online ``WandbLogger`` without credentials fails before anything is written."""
    for logger in wandb_loggers(trainer_cfg):
        if (logger.get("init_args") or Namespace()).get("offline"):
            continue
        problem = wandb_login_problem(
            "train without W&B: --trainer.logger CSVLogger (or --trainer.logger.offline true)"
        )
        if problem:
            raise RunSetupError(problem)


def assign_wandb_id(
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
    for logger in wandb_loggers(trainer_cfg):
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
