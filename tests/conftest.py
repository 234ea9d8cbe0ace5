"""Shared fixtures: a tiny stand-in network, a tiny in-memory data module, tiny train.py overrides.

The network and data module themselves live in :mod:`tests.helpers` (scripts import them too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, TinyNet
from tests.helpers import tiny_datamodule as make_tiny_datamodule

# the presets' SampleGrid (4 images, 3 steps), LearningRateMonitor and Throughput; their
# evaluation callbacks left out
CHEAP_CALLBACKS = [
    {
        "class_path": "lightning_pspc.callbacks.SampleGrid",
        "init_args": {"num_samples": 4, "num_steps": 3},
    },
    {
        "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
        "init_args": {"logging_interval": "step"},
    },
    {"class_path": "lightning_pspc.callbacks.Throughput", "init_args": {"window": 1}},
]


@pytest.fixture(scope="session")
def tiny_net() -> type[TinyNet]:
    """The :class:`~tests.helpers.TinyNet` class (construct with ``channels``, ``width``, ``dropout``)."""
    return TinyNet


@pytest.fixture(scope="session")
def tiny_datamodule():
    """Factory ``(num_train=32, num_heldout=8, batch_size=8) -> ImageDataModule`` over random
    1x8x8 images (:func:`tests.helpers.tiny_datamodule`)."""
    return make_tiny_datamodule


def _train_args(root: Path) -> list[str]:
    return [
        "fit",
        f"--config={REPO / 'configs' / 'unet_fmnist_small.yaml'}",
        f"--run_root={root / 'runs'}",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.num_train=64",
        "--data.num_heldout=16",
        "--data.batch_size=16",
        "--model.net.init_args.model_channels=8",
        "--model.net.init_args.channel_mult=[1,2]",
        "--model.net.init_args.num_blocks=1",
        "--trainer.callbacks=" + json.dumps(CHEAP_CALLBACKS),
    ]


def _offline(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_DIR", str(root))
    mp.setattr(sys, "argv", ["train.py"])  # LightningCLI warns about pytest's own argv


@pytest.fixture(scope="session")
def make_train_args():
    """Factory ``(root, monkeypatch) -> args`` of ``train.py fit``: the small UNet preset shrunk to
    a seconds-long CPU run, run folders under ``root/runs``, W&B offline with files under ``root``.
    """

    def make(root: Path, mp: pytest.MonkeyPatch) -> list[str]:
        _offline(mp, root)
        return _train_args(root)

    return make


@pytest.fixture
def train_args(tmp_path, monkeypatch, make_train_args) -> list[str]:
    """``make_train_args(tmp_path, monkeypatch)``."""
    return make_train_args(tmp_path, monkeypatch)
