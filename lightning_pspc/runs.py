"""Run folders and checkpoints: where a run lives, reading and checking its checkpoints, rebuilding it.

A run folder (``<run_root>/<run_name>/``, written by ``train.py``) holds ``config.yaml`` (the
resolved configuration), ``last.ckpt`` / ``best.ckpt``, ``samples/``, ``plots/``, the logger's
files and, with W&B, ``wandb_id.txt``. Everything here is library code shared by the training
CLI (:mod:`lightning_pspc.cli`), the evaluation (:mod:`lightning_pspc.evaluation`), the sweep and
the benchmarks; none of it depends on the CLI.
"""

from __future__ import annotations

import secrets
import string
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser

from .checksum import checksum_mismatch
from .data import ImageDataModule
from .files import write_atomic
from .module import DiffusionModule

CONFIG_FILE = "config.yaml"
"""In the run folder: the resolved configuration, enough to rebuild model and data."""

WANDB_ID_FILE = "wandb_id.txt"
"""In the run folder: the id of the run's W&B run, continued when the run is resumed."""


class RunSetupError(ValueError):
    """A bad input found before any work starts; the message names the value and the fix."""


# --- run folders ---------------------------------------------------------------------------
def default_run_name(preset: str | Path | None) -> str:
    """``<preset stem>-<date>-<time>`` (``run-...`` without a preset)."""
    stem = Path(str(preset)).stem if preset else "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str) -> str:
    """A run name must be a plain folder name."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RunSetupError(
            f"--run_name {name!r} is not a folder name; use letters, digits, '-', '_'."
        )
    return name


def resume_dir(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint being resumed: the folder that holds it (absolute).

    A run is resumed in place whatever the working directory or the ``run_root`` saved in its
    ``config.yaml``, so a moved run folder keeps its checkpoints, W&B run and best-checkpoint
    tracking.
    """
    return Path(ckpt_path).resolve().parent


def refuse_to_clobber(run_dir: Path, ckpt_path: str | Path | None) -> None:
    """A fresh run may not start in a folder that already holds checkpoints of another run."""
    existing = sorted(p.name for p in run_dir.glob("*.ckpt")) if run_dir.is_dir() else []
    if not existing:
        return
    if not (ckpt_path and resume_dir(ckpt_path) == run_dir.resolve()):
        raise RunSetupError(
            f"run folder {str(run_dir)!r} already holds checkpoints {existing}; resume it with "
            f"--ckpt_path {run_dir / 'last.ckpt'} or start a new run with another --run_name."
        )


def stored_wandb_id(run_dir: Path) -> str | None:
    """The W&B run id kept in ``<run_dir>/wandb_id.txt``, if any."""
    path = run_dir / WANDB_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def store_wandb_id(run_dir: Path, run_id: str) -> None:
    """Keep the run's W&B id in ``<run_dir>/wandb_id.txt`` (atomically)."""
    write_atomic(run_dir / WANDB_ID_FILE, run_id + "\n")


def new_wandb_id() -> str:
    """A fresh W&B run id: 8 lowercase letters and digits, as ``wandb`` draws them.

    ``secrets`` rather than ``random``: ``seed_everything`` must not make two runs share an id.
    """
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


# --- checks ---------------------------------------------------------------------------------
def image_shape_of(datamodule: Any) -> tuple[int, int, int]:
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


# --- checkpoints ----------------------------------------------------------------------------
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
            f"(--config {Path(path).parent / CONFIG_FILE}) or pass a checkpoint of this model."
        )
    return ckpt


# --- rebuilding a run -----------------------------------------------------------------------
def load_config(path: str | Path) -> dict[str, Any]:
    """A train.py config file as a dict, with whole sections given as file paths read in.

    Presets share parts (``configs/base/``): ``trainer: base/trainer_fmnist_small.yaml`` names a
    file, relative to the preset, that holds that section, as LightningCLI reads it.
    """
    path = Path(path)
    config = yaml.safe_load(path.read_text()) or {}
    for key, value in config.items():
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            config[key] = yaml.safe_load((path.parent / value).read_text()) or {}
    return config


def build_from_config(
    config: str | Path | dict[str, Any],
) -> tuple[DiffusionModule, ImageDataModule]:
    """Instantiate the ``model`` and ``data`` sections of a train.py config (file or dict).

    Other sections (trainer, checkpoint, ...) are ignored; the data are not loaded yet.
    """
    if not isinstance(config, dict):
        config = load_config(config)
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
    config_path = ckpt_path.parent / CONFIG_FILE
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
