"""Cost of one evaluation of the callbacks against training time (prints a table, writes JSON;
not a test).

Builds a preset's model and data (random weights suffice: cost does not depend on them), times a
few training steps, one DenoiserComparison evaluation (first call, which also fills the reference
cache, then a cached one), one MemorizationMonitor evaluation and the charts, and prints the
overhead fraction expected for given evaluation periods.

    .venv/bin/python benchmarks/callbacks.py
    .venv/bin/python benchmarks/callbacks.py --config configs/dit_fmnist_small.yaml --every 2 5

The figures go to ``benchmarks/results/callbacks.json`` (``--json PATH``, ``--no-json``; see
``benchmarks/results_io.py``): one cell per timed item (part ``cost``); the summary holds the
expected overhead and the data the preset built.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lightning_pspc.evaluation import (
    DenoiserComparer,
    build_references,
    fixed_noise,
    memorization_stats,
    probe_sigmas,
    sample_batched,
)
from lightning_pspc.evaluation.plots import heatmap_figure, mse_vs_sigma_figure, save_figure
from lightning_pspc.runs import build_from_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/unet_fmnist_small.yaml")
    p.add_argument("--probes", type=int, nargs=3, default=[4, 4, 2], help="train heldout reverse")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--every", type=int, nargs=2, default=[2, 5], help="periods: compare, memo")
    p.add_argument("--steps", type=int, default=4, help="training steps to time")
    results_io.add_json_options(p, "callbacks")
    args = p.parse_args()
    module, dm = build_from_config(args.config)
    shape, n = dm.image_shape, dm.num_train
    batch = dm.train_images()[: dm.batch_size]
    opt = torch.optim.Adam(module.precond.parameters(), lr=1e-4)
    module.loss_fn(module.precond, batch).mean().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.steps):
        opt.zero_grad()
        module.loss_fn(module.precond, batch).mean().backward()
        opt.step()
    step = (time.perf_counter() - t0) / args.steps
    epoch = step * (dm.epoch_length or n) / dm.batch_size

    sigmas = probe_sigmas()
    refs, t_refs = timed(build_references, ["empirical", "pspc", "gaussian"], dm.reference_images())
    tr, he, rv = args.probes
    comparer = DenoiserComparer(
        refs, sigmas, dm.train_images(), dm.heldout_images(), tr, he, fixed_noise(rv, shape, 2)
    )
    net = module.denoiser
    result, first = timed(comparer.evaluate, net)
    _, cached = timed(comparer.evaluate, net)
    hist = [(1, {k: t["empirical"] for k, t in result.mse.items()})]
    t0 = time.perf_counter()
    for ref in refs:
        save_figure(mse_vs_sigma_figure(sigmas, hist, ref), "/tmp/_bench_chart.png")
    save_figure(
        heatmap_figure(sigmas, [1], {"train": result.mse["train"]["empirical"][None]}),
        "/tmp/_bench_heat.png",
    )
    charts = time.perf_counter() - t0
    samples, t_sample = timed(sample_batched, net, fixed_noise(args.samples, shape, 0), 18, 64)
    _, t_stats = timed(memorization_stats, samples, dm.train_images())
    compare = cached + charts
    memo = t_sample + t_stats
    ce, me = args.every
    frac = (compare / ce + memo / me) / epoch
    rows = [
        (f"training step (batch {dm.batch_size})", step),
        (f"training epoch ({dm.epoch_length or n} images)", epoch),
        ("build references (setup, once)", t_refs),
        ("compare: first evaluation (fills cache)", first),
        ("compare: cached evaluation", cached),
        ("compare: charts", charts),
        (f"memorization: {args.samples} samples", t_sample),
        ("memorization: statistics", t_stats),
    ]
    print(f"{args.config}: N={n}, image {shape}, probes train/heldout/reverse = {tr}/{he}/{rv}")
    for name, secs in rows:
        print(f"  {name:<42} {secs:8.2f} s")
    print(f"  expected overhead with periods compare={ce}, memorization={me}: {100 * frac:.1f} %")
    cells = [{"part": "cost", "item": name, "seconds": secs} for name, secs in rows]
    summary = {
        "worst": [
            {
                "figure": "expected overhead of the callbacks",
                "value_percent": 100 * frac,
                "compare_every": ce,
                "memorization_every": me,
            }
        ],
        "N": n,
        "image_shape": list(shape),
        "probes_train_heldout_reverse": [tr, he, rv],
    }
    results_io.save("callbacks", args, results_io.machine(), cells, summary)


if __name__ == "__main__":
    main()
