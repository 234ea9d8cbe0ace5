"""Training throughput: the same training step through Lightning and through a bare PyTorch loop.

For each small preset, one network, batch size and optimizer (from the preset's config) train on
random images for ``--steps`` timed steps after ``--warmup`` untimed ones: (a) ``Trainer.fit`` of
:class:`DiffusionModule`, (b) a hand-written loop doing the same work (EDM loss, backward, Adam
step, EMA update). Prints images/s of both and their ratio (Lightning / bare; target >= 0.95,
``--target``). Not a test.

    python benchmarks/training.py [--steps 10] [--warmup 5] [--repeats 2] [--device cpu|cuda]

On CUDA both run in bf16 autocast (``precision="bf16-mixed"``); on CPU in float32.

The figures go to ``benchmarks/results/training.json`` (``--json PATH``, ``--no-json``; see
``benchmarks/results_io.py``): one cell per preset (part ``throughput``); the summary holds the
smallest ratio and whether it meets the target.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning
import torch
from torch.utils.data import DataLoader, RandomSampler

from lightning_pspc.data import ImageTensorDataset, collate_images
from lightning_pspc.ema import ema_beta, update_ema
from lightning_pspc.module import DiffusionModule
from lightning_pspc.runs import build_from_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _loader(shape: tuple[int, ...], batch: int, steps: int) -> DataLoader:
    """Random images in [-1, 1], shuffled, exactly ``steps`` batches of ``batch`` in one epoch."""
    images = torch.rand((4 * batch, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    sampler = RandomSampler(images, num_samples=batch * steps)
    return DataLoader(
        ImageTensorDataset(images), batch_size=batch, sampler=sampler, collate_fn=collate_images
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(preset: str) -> tuple[DiffusionModule, int, tuple[int, int, int]]:
    torch.manual_seed(0)
    module, data = build_from_config(CONFIGS / f"{preset}.yaml")
    module.hparams.warmup_images = 0  # constant lr in both loops (the warm-up costs nothing)
    net = module.precond.net
    return module, data.batch_size, (net.in_channels, net.img_resolution, net.img_resolution)


def bare_loop(preset: str, device: torch.device, steps: int, warmup: int) -> float:
    """Images/s of a plain PyTorch loop with the preset's network, batch and optimizer."""
    module, batch, shape = _build(preset)
    precond, ema = module.precond.to(device).train(), module.ema.to(device)
    opt = module.configure_optimizers()["optimizer"]
    hp, seen, t0 = module.hparams, 0, 0.0
    for i, x in enumerate(_loader(shape, batch, warmup + steps)):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = module.loss_fn(precond, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
        update_ema(
            ema, precond, ema_beta(x.shape[0], seen, hp.ema_halflife_images, hp.ema_rampup_ratio)
        )
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


class _Timer(lightning.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1 = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            _sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_last_batch:
            _sync(pl_module.device)
        self.t1 = time.perf_counter()


def lightning_loop(preset: str, device: torch.device, steps: int, warmup: int) -> float:
    """Images/s of ``Trainer.fit`` on the same network, batch and optimizer."""
    module, batch, shape = _build(preset)
    timer = _Timer(warmup)
    trainer = lightning.Trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=_loader(shape, batch, warmup + steps))
    return steps * batch / (timer.t1 - timer.t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["unet_fmnist_small", "dit_fmnist_small"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 50 on GPU, 10 on CPU)"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many alternated runs")
    parser.add_argument("--target", type=float, default=0.95, help="smallest ratio to reach")
    results_io.add_json_options(parser, "training")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (50 if device.type == "cuda" else 10)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"device {device}, {steps} timed steps after {args.warmup} warm-up steps")
    print(f"{'preset':<20} {'bare img/s':>12} {'lightning img/s':>16} {'ratio':>7}")
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    cells = []
    for preset in args.presets:
        bare_loop(preset, device, 2, args.warmup)  # one-time costs (kernel selection, allocator)
        bare = light = 0.0
        for _ in range(args.repeats):  # alternate, keep the best: less sensitive to other load
            bare = max(bare, bare_loop(preset, device, steps, args.warmup))
            light = max(light, lightning_loop(preset, device, steps, args.warmup))
        print(f"{preset:<20} {bare:>12.1f} {light:>16.1f} {light / bare:>7.3f}")
        cells.append(
            {
                "part": "throughput",
                "preset": preset,
                "precision": precision,
                "steps": steps,
                "bare_images_per_second": bare,
                "lightning_images_per_second": light,
                "ratio": light / bare,
            }
        )
    worst = min(cells, key=lambda c: c["ratio"])
    print(f"smallest ratio: {worst['ratio']:.3f} ({worst['preset']}); target >= {args.target:g}")
    summary = {
        "worst": [
            {
                "figure": "smallest ratio Lightning / bare",
                "value": worst["ratio"],
                "at": worst["preset"],
                "target": f">= {args.target:g}",
                "pass": worst["ratio"] >= args.target,
            }
        ],
        "ratio_target": args.target,
        "pass": worst["ratio"] >= args.target,
    }
    results_io.save("training", args, results_io.machine(device), cells, summary)


if __name__ == "__main__":
    main()
