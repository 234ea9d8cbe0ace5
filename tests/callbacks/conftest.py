"""Fixtures of the callback tests: a short CPU fit with the callbacks under test."""

from __future__ import annotations

import lightning
import pytest
from lightning.pytorch.loggers import CSVLogger

from lightning_pspc.module import DiffusionModule


@pytest.fixture(scope="module")
def short_fit(tiny_net, tiny_datamodule):
    """``short_fit(root, callbacks, max_epochs=2, max_steps=-1) -> (trainer, module, dm)``."""

    def run(root, callbacks, max_epochs=2, max_steps=-1):
        return short_cpu_fit(
            tiny_net(1, 8), tiny_datamodule(24, 8, 8), root, callbacks, max_epochs, max_steps
        )

    return run


def short_cpu_fit(net, dm, root, callbacks, max_epochs, max_steps):
    """A short CPU fit of ``net`` on ``dm`` (2 batches per epoch)."""
    module = DiffusionModule(net, lr=1e-2, ema_halflife_images=8)
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
        logger=CSVLogger(root),
        callbacks=callbacks,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm
