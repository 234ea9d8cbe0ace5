"""SHA-256 of a checkpoint's weights: written with every checkpoint, verified when one is read.

Flipped bytes inside a tensor leave a loadable file (``torch.load`` memory-maps the data without
checking it), so a corrupt checkpoint would otherwise resume or evaluate silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

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
