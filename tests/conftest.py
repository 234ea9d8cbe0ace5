"""Shared fixtures: a tiny stand-in network, a tiny in-memory data module, tiny train.py overrides."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
CHEAP_CALLBACKS = [  # the presets' callbacks, with a 4-image, 3-step sample grid
    {
        "class_path": "lightning_pspc.callbacks.SampleGrid",
        "init_args": {"num_samples": 4, "num_steps": 3},
    },
    {"class_path": "lightning_pspc.callbacks.Throughput", "init_args": {"window": 1}},
]


class TinyNet(nn.Module):
    """Raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]``: two convolutions, noise as a channel."""

    def __init__(self, channels: int = 1, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        c = c_noise.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]).to(x.dtype)  # [B,1,H,W]
        return self.out(self.drop(F.silu(self.inp(torch.cat([x, c], 1)))))  # [B,C,H,W]


@pytest.fixture
def tiny_net() -> type[TinyNet]:
    """The :class:`TinyNet` class (construct with ``channels``, ``width``, ``dropout``)."""
    return TinyNet


@pytest.fixture
def tiny_datamodule():
    """Factory: an ``ImageDataModule`` over random 1x8x8 uint8 images held in memory."""
    from lightning_pspc.data import ImageDataModule, TensorSource

    def make(num_train: int = 32, num_heldout: int = 8, batch_size: int = 8) -> ImageDataModule:
        gen = torch.Generator().manual_seed(0)
        raw = torch.randint(
            0, 256, (num_train + num_heldout + 8, 1, 8, 8), generator=gen, dtype=torch.uint8
        )
        return ImageDataModule(
            TensorSource(raw, "random"),
            num_train=num_train,
            num_heldout=num_heldout,
            batch_size=batch_size,
        )

    return make


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
