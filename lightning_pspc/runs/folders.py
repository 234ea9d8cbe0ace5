"""Run folders: names, where a resumed run lives, and the W&B run id kept in the folder.

A run folder (``<run_root>/<run_name>/``, written by ``train.py``) holds ``config.yaml`` (the
resolved configuration), ``last.ckpt`` / ``best.ckpt``, ``samples/``, ``plots/``, the logger's
files and, with W&B, ``wandb_id.txt``.
"""

from __future__ import annotations

import secrets
import string
import time
from pathlib import Path

from .files import write_atomic

CONFIG_FILE = "config.yaml"
"""In the run folder: the resolved configuration, enough to rebuild model and data."""

WANDB_ID_FILE = "wandb_id.txt"
"""In the run folder: the id of the run's W&B run, continued when the run is resumed."""


class RunSetupError(ValueError):
    """A bad input found before any work starts; the message names the value and the fix."""


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
