"""Real 2-process DDP training on CPU (gloo) through train.py, in a subprocess."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from lightning_pspc.commands.train import TrainCLI
from tests.helpers import rank_losses_callbacks, run_clean


def _rank_losses(debug: Path, rank: int) -> list[dict]:
    return [
        json.loads(line)
        for line in (debug / f"train_loss_rank{rank}.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_two_process_ddp_fit_logs_the_mean_loss_and_keeps_the_epoch_length(
    tmp_path, make_train_args, monkeypatch
):
    # a full epoch of epoch_length = 2 N samples: 8 steps of 16 in one process
    args = [
        *make_train_args(tmp_path, monkeypatch),
        "--trainer.limit_train_batches=1.0",
        "--data.epoch_length=128",
        "--trainer.logger=CSVLogger",
        "--trainer.callbacks=[]",
    ]
    single = TrainCLI(args=[*args, "--run_name=single"])
    assert (single.trainer.global_step, single.model.images_seen) == (8, 128)

    debug = tmp_path / "debug"  # each process's own losses (the logger has only their mean)
    cmd = ["train.py", *args, "--run_name=ddp", "--trainer.devices=2", "--trainer.strategy=ddp"]
    proc = run_clean([*cmd, rank_losses_callbacks(debug)], timeout=240, PYTHONWARNINGS="ignore")
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "runs" / "ddp"
    r0, r1 = _rank_losses(debug, 0), _rank_losses(debug, 1)
    # each process draws half of the epoch (before: a DistributedSampler over the N = 64
    # images replaced the data module's sampler, and an epoch was 64 samples)
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == [0, 1, 2, 3]
    # every process holds the atomic checkpoint IO (only rank 0 writes, but any may be rank 0)
    assert {r["checkpoint_io"] for r in r0 + r1} == {"AtomicCheckpointIO"}
    # The ranks trained on different images and noise, so the mean is a real check.
    assert all(abs(a["loss"] - b["loss"]) > 1e-4 for a, b in zip(r0, r1))

    (metrics,) = run.glob("**/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    logged = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    expected = {a["step"]: (a["loss"] + b["loss"]) / 2 for a, b in zip(r0, r1)}
    assert logged.keys() == expected.keys()
    for step, value in logged.items():
        assert value == pytest.approx(expected[step], rel=1e-6)
    (epoch_loss,) = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert epoch_loss == pytest.approx(sum(r["loss"] for r in r0 + r1) / 8, rel=1e-6)

    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    assert ckpt["images_seen"] == 4 * 16 * 2 == single.model.images_seen  # = epoch_length
    assert ckpt["global_step"] == 4 == single.trainer.global_step // 2
    assert (run / "config.yaml").is_file()
