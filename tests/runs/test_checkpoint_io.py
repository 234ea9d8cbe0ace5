"""Checkpoint saves staged beside their target: a full disk keeps the previous checkpoint."""

from __future__ import annotations

import errno
import os
import sys

import pytest
import torch

from lightning_pspc.runs import checkpoint_io
from lightning_pspc.runs.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from tests.helpers import exited_pid, run_clean


def _fill_up(path, data):
    """A write that runs out of space halfway, leaving half a file behind."""
    with path.open("wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_sizes(tmp_path, monkeypatch):
    target = tmp_path / "run" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(10), "step": 1}, target)
    before = target.read_bytes()
    monkeypatch.setattr(checkpoint_io, "write_bytes", _fill_up)
    with pytest.raises(CheckpointWriteError) as info:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(500_000)}, target)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith("disk full: the checkpoint needs ~2 MB, ")
    assert f"the previous checkpoint is kept at {str(target)!r}" in message
    assert f"resume with --ckpt_path {target}" in message
    assert target.read_bytes() == before  # untouched, and no partial staging file
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    # the first save of a run: nothing written, nothing left
    best = target.parent / "best.ckpt"
    with pytest.raises(CheckpointWriteError, match=f"nothing was written to {str(best)!r}"):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(10)}, best)
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_other_write_errors_pass_through_and_stale_staging_files_go(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt.tmp-{exited_pid()}"  # a save killed mid-write
    running = tmp_path / f".last.ckpt.tmp-{os.getppid()}"  # a process still writing it
    for path in (stale, running):
        path.write_bytes(b"half")

    def denied(path, data):
        path.write_bytes(b"x")
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint_io, "write_bytes", denied)
    with pytest.raises(PermissionError):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name]
    monkeypatch.undo()
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))


FSIZE_SCRIPT = """
import resource, signal, sys
from pathlib import Path
import torch
from lightning_pspc.runs.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
target = Path(sys.argv[1])
AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000)}, target)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
try:
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1_000_000)}, target)
except CheckpointWriteError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics of Linux")
def test_a_real_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    proc = run_clean(["-c", FSIZE_SCRIPT, target], timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout.startswith("file size limit exceeded: the checkpoint needs ~4 MB")
    assert "previous checkpoint is kept" in proc.stdout
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
