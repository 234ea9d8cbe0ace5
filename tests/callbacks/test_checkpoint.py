"""LastCheckpoint: last.ckpt follows every epoch, even when the monitored loss gets worse."""

from __future__ import annotations

import hashlib
import signal

import lightning
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_pspc.callbacks import LastCheckpoint
from lightning_pspc.commands.train import read_checkpoint
from lightning_pspc.module import DiffusionModule


class WorseningModule(DiffusionModule):
    """Logs ``val/loss = epoch``: every validation after the first is worse than the best."""

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", float(self.current_epoch), on_step=False, on_epoch=True)


class LastStepRecorder(lightning.Callback):
    """Reads ``last.ckpt``'s global step before each epoch after the first and at the end."""

    def __init__(self, path) -> None:
        self.path, self.steps = path, []

    def _record(self) -> None:
        self.steps.append(torch.load(self.path, weights_only=True)["global_step"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._record()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._record()


class FailInEpoch(lightning.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


class CtrlCAtBatch(lightning.Callback):
    """Raises ``KeyboardInterrupt`` (what Ctrl-C does) before training batch ``batch_idx``."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            raise KeyboardInterrupt


@pytest.fixture
def keep_sigint():
    """Lightning ignores SIGINT after a KeyboardInterrupt; give pytest its Ctrl-C back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def _trainer(root, callbacks, max_epochs: int, check_val_every_n_epoch: int = 1, **kwargs):
    best = ModelCheckpoint(dirpath=root, filename="best", monitor="val/loss")
    kwargs.setdefault("limit_train_batches", 2)
    return lightning.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_val_batches=1,
        check_val_every_n_epoch=check_val_every_n_epoch,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=[best, LastCheckpoint(root), *callbacks],
        **kwargs,
    )


@pytest.mark.parametrize("check_val_every_n_epoch", [1, 2])
def test_last_ckpt_is_rewritten_every_epoch_though_val_loss_worsens(
    tmp_path, tiny_net, tiny_datamodule, check_val_every_n_epoch
):
    # ModelCheckpoint(monitor="val/loss", save_last=True) would leave last.ckpt at the step of
    # the only improvement, and with check_val_every_n_epoch=2 skip the epoch without validation
    recorder = LastStepRecorder(tmp_path / "last.ckpt")
    trainer = _trainer(tmp_path, [recorder], 3, check_val_every_n_epoch)
    trainer.fit(WorseningModule(tiny_net()), datamodule=tiny_datamodule())
    assert recorder.steps == [2, 4, 6]
    # the best (lowest) val/loss is the first validation's
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)["global_step"]
    assert best == 2 * check_val_every_n_epoch
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_a_crashed_epoch_leaves_the_previous_last_ckpt(tmp_path, tiny_net, tiny_datamodule):
    dm = tiny_datamodule()
    _trainer(tmp_path, [], 1).fit(DiffusionModule(tiny_net()), datamodule=dm)
    digest = hashlib.sha256((tmp_path / "last.ckpt").read_bytes()).hexdigest()
    resumed = _trainer(tmp_path, [FailInEpoch(1)], 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        resumed.fit(DiffusionModule(tiny_net()), datamodule=dm, ckpt_path=tmp_path / "last.ckpt")
    assert hashlib.sha256((tmp_path / "last.ckpt").read_bytes()).hexdigest() == digest


def test_ctrl_c_in_the_first_epoch_saves_a_last_ckpt_that_resumes(
    tmp_path, tiny_net, tiny_datamodule, keep_sigint
):
    dm = tiny_datamodule()  # 32 images, batches of 8: 4 steps per epoch
    interrupted = _trainer(tmp_path, [CtrlCAtBatch(3)], 1, limit_train_batches=4)
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with 1
        interrupted.fit(DiffusionModule(tiny_net()), datamodule=dm)
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["last.ckpt"]
    ckpt = read_checkpoint(tmp_path / "last.ckpt")  # complete, checksum verified
    assert ckpt["global_step"] == 3 and ckpt["images_seen"] == 3 * 8
    resumed = _trainer(tmp_path, [], 1, limit_train_batches=4)
    module = DiffusionModule(tiny_net())
    resumed.fit(module, datamodule=dm, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.global_step == 4 and module.images_seen == 4 * 8  # the epoch was finished
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_ctrl_c_before_the_first_step_writes_nothing(
    tmp_path, tiny_net, tiny_datamodule, keep_sigint
):
    with pytest.raises(SystemExit):
        _trainer(tmp_path, [CtrlCAtBatch(0)], 1).fit(
            DiffusionModule(tiny_net()), datamodule=tiny_datamodule()
        )
    assert not list(tmp_path.glob("*.ckpt"))


def test_state_key_differs_from_a_plain_unmonitored_checkpoint(tmp_path):
    plain = ModelCheckpoint(dirpath=tmp_path, monitor=None)
    assert LastCheckpoint(tmp_path).state_key != plain.state_key
