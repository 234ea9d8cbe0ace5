"""Checkpoint files written atomically beside their target, and one clear error on a full disk.

Lightning's ``TorchCheckpointIO`` stages a checkpoint in ``TMPDIR`` and then moves it; when the
run folder is on another filesystem the move is a copy, and a full disk leaves a truncated
``last.ckpt`` / ``best.ckpt`` behind. :class:`AtomicCheckpointIO` stages the file in the run
folder itself and renames it over the target (:func:`~lightning_pspc.runs.files.write_atomic`),
so a failed save keeps the previous checkpoint whole.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .files import (
    free_space,
    out_of_space,
    remove_stale_staging,
    size_in_words,
    staging_name,
    write_atomic,
)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written for lack of space; the message names the sizes, what
    was kept and the fix. ``errno`` is the write's (``ENOSPC``, ``EDQUOT`` or ``EFBIG``)."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are staged beside the target and renamed over it.

    The checkpoint is serialised in memory (as Lightning's own save does), written to
    ``.<name>.tmp-<pid>`` in the target's folder and moved over ``<name>`` with ``os.replace``.
    On any failure the staging file is removed and the target is left as it was; a full disk
    (or quota, or file size limit) becomes one :class:`CheckpointWriteError`. Staging files of
    a process that no longer runs (a save killed mid-write) are removed before the next save.
    Remote paths (``s3://`` ...) go to ``TorchCheckpointIO`` unchanged; loading is unchanged.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # a remote filesystem: Lightning's own save
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(path.parent, _staging_pattern(path))
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            write_atomic(path, lambda tmp: write_bytes(tmp, data), keep_suffix=False)
        except OSError as err:
            reason = out_of_space(err)
            if reason is None:
                raise
            raise CheckpointWriteError(err.errno, save_failure(path, reason, len(data))) from err
        finally:
            data.release()


def write_bytes(path: Path, data: memoryview) -> None:
    """Write ``data`` to a new file ``path`` and flush it to the disk (before the rename, so a
    crash cannot leave a renamed but empty file)."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _staging_pattern(path: Path) -> re.Pattern[str]:
    """Names of :func:`write_atomic`'s staging files of ``path``, any process."""
    prefix = staging_name(path, keep_suffix=False, pid=0).removesuffix("0")
    return re.compile(re.escape(prefix) + r"(?P<pid>\d+)")


def save_failure(path: Path, reason: str, size: int) -> str:
    """The one-line message of a checkpoint save that ran out of space (``reason``)."""
    last = path.parent / "last.ckpt"
    kept = (
        f"the previous checkpoint is kept at {str(path)!r}"
        if path.is_file()
        else f"nothing was written to {str(path)!r}"
    )
    resume = f"resume with --ckpt_path {last}" if last.is_file() else "start the training again"
    return (
        f"{reason}: the checkpoint needs ~{size_in_words(size)}, {free_space(path.parent)} free "
        f"in {str(path.parent)!r}; {kept}. Fix: free space on that disk (or move the run folder "
        f"to a larger one) and {resume}."
    )


def use_atomic_checkpoint_io(strategy: Any) -> None:
    """Give ``strategy`` an :class:`AtomicCheckpointIO` where it would use Lightning's default
    ``TorchCheckpointIO``; a checkpoint IO configured by the user is left as it is."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
