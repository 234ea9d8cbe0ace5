"""Tiny sweeps for the end-to-end tests: eval.py settings and train.py overrides that keep runs to
seconds, and ``sweep.py`` run in this process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_pspc.commands import sweep
from lightning_pspc.commands import train as cli
from tests.helpers import REPO, popen_stub

EVAL_ARGS = [
    "--num-train-probes",
    "2",
    "--num-heldout-probes",
    "2",
    "--num-reverse-probes",
    "1",
    "--num-samples",
    "4",
    "--num-steps",
    "4",
    "--num-linearity-pairs",
    "2",
    "--num-agreement-samples",
    "2",
    "--locality-probes",
    "1",
    "--locality-stride",
    "7",
    "--linear-distillation",  # on by default for the sweep preset's 16x16 images: LINEAR_ARGS
    "off",
    "--no-progress",
]
#: The linear distillation as eval.py decides it by default (``auto``), with fewer probes.
LINEAR_ARGS = ["--linear-distillation", "auto", "--linear-probes", "300", "--linear-images", "2"]
TINY_TRAIN = [
    "--trainer.max_epochs=1",
    "--data.epoch_length=32",
    "--data.batch_size=16",
    "--data.num_heldout=16",
    "--model.net.init_args.model_channels=8",
    "--model.net.init_args.channel_mult=[1]",
    "--trainer.enable_progress_bar=false",
    "--trainer.limit_val_batches=1",
]


def sweep_in_process(root: Path, name: str, *args: str) -> int:
    """``sweep.py`` with the sweep preset, runs named ``name`` under ``root/runs``, evaluation in
    ``root/eval``; each training command runs train.py in this process (same arguments)."""

    def train_in_process(cmd: list[str]) -> int:
        assert cmd[1:4] == ["-m", "lightning_pspc.commands.train", "fit"]
        cli.main(cmd[3:])
        return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr(sys, "argv", ["train.py"])
        mp.setattr(sweep, "Popen", popen_stub(train_in_process))
        return sweep.main(
            [
                f"--config={REPO / 'configs' / 'sweep_fmnist.yaml'}",
                f"--name={name}",
                f"--run-root={root / 'runs'}",
                f"--out={root / 'eval'}",
                *args,
            ]
        )
