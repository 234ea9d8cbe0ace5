"""SampleGrid and the last-epoch rule shared by the periodic callbacks."""

from __future__ import annotations

from types import SimpleNamespace

import lightning
import pytest

from lightning_pspc.callbacks import SampleGrid, is_last_epoch
from lightning_pspc.module import DiffusionModule


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "epoch", "step", "last"),
    [
        (3, -1, 1, 20, False),
        (3, -1, 2, 30, True),
        (-1, 6, 0, 2, False),  # max_steps run: Lightning sets max_epochs = -1
        (-1, 6, 2, 6, True),
        (None, 6, 5, 4, False),
        (10, 6, 2, 6, True),  # max_steps reached first
        (2, 100, 1, 4, True),  # max_epochs reached first
    ],
)
def test_is_last_epoch(max_epochs, max_steps, epoch, step, last):
    trainer = SimpleNamespace(
        max_epochs=max_epochs, max_steps=max_steps, current_epoch=epoch, global_step=step
    )
    assert is_last_epoch(trainer) is last


def _fit(root, callback, tiny_net, tiny_datamodule, **limits):
    trainer = lightning.Trainer(
        accelerator="cpu",
        limit_train_batches=2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=root,
        callbacks=[callback],
        **limits,
    )
    trainer.fit(DiffusionModule(tiny_net()), datamodule=tiny_datamodule())
    return trainer


def _grids(root) -> list[str]:
    return sorted(p.name for p in (root / "samples").glob("*.png"))


def test_sample_grid_period_and_last_epoch(tmp_path, tiny_net, tiny_datamodule):
    grid = SampleGrid(every_n_epochs=2, num_samples=4, num_steps=2)
    _fit(tmp_path, grid, tiny_net, tiny_datamodule, max_epochs=3)
    assert _grids(tmp_path) == ["epoch_0002.png", "epoch_0003.png"]


def test_sample_grid_in_a_max_steps_run_draws_the_last_epoch_only(
    tmp_path, tiny_net, tiny_datamodule
):
    # max_steps without max_epochs: Lightning sets max_epochs = -1, so "epoch >= max_epochs"
    # held after every epoch
    grid = SampleGrid(every_n_epochs=5, num_samples=4, num_steps=2)
    trainer = _fit(tmp_path, grid, tiny_net, tiny_datamodule, max_epochs=None, max_steps=6)
    assert trainer.max_epochs == -1 and trainer.global_step == 6
    assert _grids(tmp_path) == ["epoch_0003.png"]
