"""Cost of the closed-form linear distillation of a preset's network per sigma (prints a table,
writes JSON; not a test).

Builds each preset's model and data (random weights suffice: the cost does not depend on them)
and times :meth:`LinearDenoiser.distill` of its EMA network at a few sigmas with the default
``4 * D`` probes, and the same with a teacher that costs nothing (``z / 2``: the probes, the
float64 sums and the solve alone). Wall and process CPU seconds per sigma.

    .venv/bin/python benchmarks/linear_distillation.py
    .venv/bin/python benchmarks/linear_distillation.py --configs configs/sweep_fmnist.yaml \
        --sigmas 0.5 --device cuda

The figures go to ``benchmarks/results/linear_distillation.json`` (``--json PATH``,
``--no-json``; see ``benchmarks/results_io.py``): one cell per preset and teacher (part
``cost``); the summary holds the network's seconds per sigma and per 18-sigma evaluation.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from lightning_pspc.denoisers import LinearDenoiser
from lightning_pspc.denoisers.linear import default_num_probes
from lightning_pspc.runs import build_from_config, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs",
        nargs="+",
        default=["configs/sweep_fmnist.yaml", "configs/unet_fmnist_small.yaml"],
    )
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 5.0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    results_io.add_json_options(p, "linear_distillation")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"threads: {torch.get_num_threads()}; device {device}")
    print(
        f"{'preset':<34}{'teacher':>10}{'D':>6}{'probes':>8}{'wall s/sigma':>14}{'cpu s/sigma':>13}"
    )
    cells = []
    for config in args.configs:
        cells += bench(config, args, device)
    summary = {
        "worst": [
            {
                "preset": c["preset"],
                "D": c["D"],
                "wall_seconds_per_sigma": c["wall_seconds_per_sigma"],
                "wall_seconds_per_18_sigmas": 18 * c["wall_seconds_per_sigma"],
            }
            for c in cells
            if c["teacher"] == "network"
        ]
    }
    results_io.save("linear_distillation", args, results_io.machine(device), cells, summary)


def bench(config_path: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Print the rows of one preset; return them as JSON cells."""
    module, dm = build_from_config(load_config(config_path))
    net = module.eval().to(device).denoiser
    dm.setup("fit")
    images = dm.reference_images().to(device)
    dim = math.prod(images.shape[1:])
    cells = []
    for name, teacher in (("network", net), ("free", lambda z, s: z / 2)):
        wall, cpu = time.perf_counter(), time.process_time()
        LinearDenoiser.distill(teacher, images, args.sigmas, batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = (time.perf_counter() - wall) / len(args.sigmas)
        cpu = (time.process_time() - cpu) / len(args.sigmas)
        probes = default_num_probes(dim)
        print(f"{Path(config_path).stem:<34}{name:>10}{dim:>6}{probes:>8}{wall:>14.2f}{cpu:>13.2f}")
        cells.append(
            {
                "part": "cost",
                "preset": Path(config_path).stem,
                "teacher": name,
                "D": dim,
                "probes": probes,
                "wall_seconds_per_sigma": wall,
                "cpu_seconds_per_sigma": cpu,
            }
        )
    return cells


if __name__ == "__main__":
    main()
