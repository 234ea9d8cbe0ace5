"""A 2-process CPU (gloo) DDP fit with the evaluation callbacks (run by test_callbacks_ddp.py).

Usage: ``python _ddp_fit.py OUT_DIR``. Lightning relaunches this script for rank 1. Every rank
writes ``rank<r>.pt`` with its share of the probes and seeds; rank 0 also writes the logged
metrics and the final EMA weights, so the test can recompute everything in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning
import torch

from lightning_pspc.callbacks.denoiser_comparison import DenoiserComparison
from lightning_pspc.callbacks.generalization_monitor import GeneralizationMonitor
from lightning_pspc.callbacks.memorization_monitor import MemorizationMonitor
from lightning_pspc.module import DiffusionModule
from tests.helpers import TinyNet, tiny_datamodule

SIGMAS = [0.02, 0.5, 8.0]


def make_datamodule():
    """20 training and 6 held-out random 1x8x8 images (the same in every process)."""
    return tiny_datamodule(num_train=20, num_heldout=6, batch_size=4)


def main(out: Path) -> None:
    lightning.seed_everything(0)
    compare = DenoiserComparison(
        sigmas=SIGMAS,
        num_train_probes=3,
        num_heldout_probes=2,
        num_reverse_probes=3,
        seed=5,
        batch_size=4,
        log_images=False,
    )
    memo = MemorizationMonitor(num_samples=5, num_steps=4, seed=2, log_images=False)
    gen = GeneralizationMonitor(sigmas=SIGMAS, num_pairs=3, seed=6, log_images=False)
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=out,
        callbacks=[compare, memo, gen],
    )
    module = DiffusionModule(TinyNet(1, 8), lr=1e-2, ema_halflife_images=8)
    trainer.fit(module, datamodule=make_datamodule())
    rank = trainer.global_rank
    share = {
        "train": len(compare.comparer.forward["train"]),
        "heldout": len(compare.comparer.forward["heldout"]),
        "reverse": compare.comparer.reverse_noise.shape[0],
        "samples": memo.noise.shape[0],
        "pairs": gen.member.sigma.numel(),
    }
    torch.save(share, out / f"rank{rank}.pt")
    if rank == 0:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save({"metrics": metrics, "ema": module.ema.state_dict()}, out / "result.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
