"""Ctrl-C (SIGINT) to a train.py run in its first epoch leaves a last.ckpt that resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from lightning_pspc.commands.train import TrainCLI
from lightning_pspc.runs import read_checkpoint
from tests.helpers import REPO, clean_env, rank_losses_callbacks


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_in_the_first_epoch_saves_a_resumable_last_ckpt(
    tmp_path, make_train_args, monkeypatch
):
    args = [
        *make_train_args(tmp_path, monkeypatch),
        "--run_name=stopped",
        "--trainer.logger=CSVLogger",
        "--trainer.limit_train_batches=1.0",
        "--data.epoch_length=100000",  # an epoch far longer than the test
    ]
    losses = tmp_path / "debug" / "train_loss_rank0.jsonl"
    env = clean_env()
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args, rank_losses_callbacks(tmp_path / "debug")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a job started in the background of a non-interactive shell inherits SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler: give the child the default
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 180
        # two steps logged: the first optimizer step has completed
        while not (losses.is_file() and len(losses.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out[-3000:]  # Lightning's graceful shutdown
    last = tmp_path / "runs" / "stopped" / "last.ckpt"
    ckpt = read_checkpoint(last)  # complete, checksum verified
    step = ckpt["global_step"]
    assert ckpt["epoch"] == 0 and step >= 1
    # Known limit (issue 11 item 15): a SIGINT landing inside an optimizer step can save that
    # step's images without Lightning's step count (seen once in a fresh-clone CI run: step 2,
    # 48 images); one batch ahead at most
    assert ckpt["images_seen"] in (16 * step, 16 * (step + 1))
    assert not list(last.parent.glob("*.tmp"))

    resume = [*args, "--trainer.callbacks=[]", f"--ckpt_path={last}"]
    TrainCLI(args=[*resume, f"--trainer.max_steps={step + 2}"])
    assert torch.load(last, weights_only=True)["global_step"] == step + 2
