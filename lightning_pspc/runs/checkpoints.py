"""Reading and checking checkpoints, and the SHA-256 of their weights.

Every checkpoint carries a SHA-256 of its weights, written with it and verified when it is read:
flipped bytes inside a tensor leave a loadable file (``torch.load`` memory-maps the data without
checking it), so a corrupt checkpoint would otherwise resume or evaluate silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .folders import CONFIG_FILE, RunSetupError

if TYPE_CHECKING:
    from ..module import DiffusionModule

CHECKSUM_KEY = "state_dict_sha256"
"""Checkpoint key of the hex SHA-256 of its ``state_dict`` (see :func:`state_dict_sha256`)."""


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Hex SHA-256 over a state dict's keys, dtypes, shapes and tensor bytes, in key order.

    Non-tensor entries hash their ``repr``. Tensors on another device are copied to the CPU.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(f"{key}|{value!r}|".encode())
    return digest.hexdigest()


def add_checksum(checkpoint: dict[str, Any]) -> None:
    """Store the SHA-256 of ``checkpoint["state_dict"]`` under :data:`CHECKSUM_KEY`."""
    checkpoint[CHECKSUM_KEY] = state_dict_sha256(checkpoint["state_dict"])


def checksum_mismatch(checkpoint: Mapping[str, Any], path: str | Path) -> str | None:
    """The error message when the stored checksum does not match the weights, else ``None``.

    Checkpoints written before checksums existed (no :data:`CHECKSUM_KEY`) pass.
    """
    stored = checkpoint.get(CHECKSUM_KEY)
    if stored is None or state_dict_sha256(checkpoint["state_dict"]) == stored:
        return None
    return (
        f"checkpoint {str(path)!r} is corrupt: its weights do not match the SHA-256 stored when "
        f"it was written (changed bytes on disk or in a copy). Fix: use another checkpoint of the "
        f"run ({Path(path).parent / 'last.ckpt'} or {Path(path).parent / 'best.ckpt'}) or copy "
        f"the file again from a good source."
    )


def folder_given(path: Path, flag: str) -> str:
    """The message for a folder passed where a checkpoint file belongs (``flag``: the option)."""
    held = sorted(p.name for p in path.glob("*.ckpt") if p.is_file())
    example = path / ("last.ckpt" if "last.ckpt" in held or not held else held[0])
    inside = f"it holds {held}" if held else "it holds no *.ckpt file"
    return (
        f"checkpoint {str(path)!r} is a folder, not a checkpoint file; {inside}. Fix: pass a "
        f"checkpoint file, e.g. {flag} {example}"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a Lightning checkpoint (memory-mapped); a missing or corrupt file becomes one message."""
    path = Path(path)
    if path.is_dir():
        raise RunSetupError(folder_given(path, "--ckpt_path"))
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
