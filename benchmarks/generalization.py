"""Cost per checkpoint of the generalization measures of eval.py (prints a table, writes JSON;
not a test).

Builds a preset's model and data at each N (random weights suffice: cost does not depend on
them) and times, in one evaluation each, the :class:`Generalization` member (linearity,
normalised Gaussian MSE, R^2 of the references; first call with the references' outputs, then a
cached one as in the callback), the :class:`Agreement` member (closed-form samples, then the
network's) and the twin similarity of two sample sets. Wall seconds and process CPU seconds.

    .venv/bin/python benchmarks/generalization.py
    .venv/bin/python benchmarks/generalization.py --config configs/unet_fmnist_small.yaml \
        --sizes 1024 --pairs 8 --samples 8

The figures go to ``benchmarks/results/generalization.json`` (``--json PATH``, ``--no-json``;
see ``benchmarks/results_io.py``): one cell per measure and N (part ``cost``); the summary holds
the slowest measure and the total of each N.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lightning_pspc.evaluation import EvalData, Evaluation, sample_batched
from lightning_pspc.evaluation.members.agreement import Agreement
from lightning_pspc.evaluation.members.generalization import Generalization
from lightning_pspc.evaluation.twin_runs import twin_record
from lightning_pspc.runs import build_from_config, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/sweep_fmnist.yaml")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--pairs", type=int, default=4, help="linearity pairs (sweep default 4)")
    p.add_argument("--samples", type=int, default=4, help="agreement samples (sweep default 4)")
    p.add_argument("--references", nargs="+", default=["empirical", "pspc", "gaussian"])
    p.add_argument("--agreement-references", nargs="+", default=["empirical", "pspc"])
    results_io.add_json_options(p, "generalization")
    args = p.parse_args()
    config = load_config(args.config)
    print(f"threads: {torch.get_num_threads()}; config {args.config}")
    print(f"{'measure':<44}{'N':>7}{'wall s':>9}{'cpu s':>9}")
    cells = []
    for n in args.sizes:
        config["data"] = {**(config.get("data") or {}), "num_train": n}
        cells += bench(n, config, args)
    results_io.save("generalization", args, results_io.machine(), cells, summarize(cells))


def summarize(cells: list[dict]) -> dict:
    """The slowest measure and the total wall and CPU seconds of each N (no targets)."""
    worst = []
    for n in dict.fromkeys(c["N"] for c in cells):
        mine = [c for c in cells if c["N"] == n]
        slow = max(mine, key=lambda c: c["wall_seconds"])
        worst.append(
            {
                "N": n,
                "slowest_measure": slow["measure"],
                "slowest_wall_seconds": slow["wall_seconds"],
                "total_wall_seconds": sum(c["wall_seconds"] for c in mine),
                "total_cpu_seconds": sum(c["cpu_seconds"] for c in mine),
            }
        )
    return {"worst": worst}


def bench(n: int, config: dict, args: argparse.Namespace) -> list[dict]:
    """Print the rows of training-set size ``n``; return them as JSON cells."""
    module, dm = build_from_config(config)
    net = module.eval().denoiser
    data = EvalData.from_datamodule(dm)
    cells = []

    def row(name, fn):
        out, wall, cpu = timed(fn)
        print(f"{name:<44}{n:>7}{wall:>9.1f}{cpu:>9.1f}", flush=True)
        cells.append(
            {"part": "cost", "measure": name, "N": n, "wall_seconds": wall, "cpu_seconds": cpu}
        )
        return out

    members = [Generalization(args.pairs), Agreement(args.agreement_references, args.samples)]
    ev = row(
        f"build references {args.references}",
        lambda: Evaluation(data, members, args.references),
    )
    gen, agree = ev.members["generalization"], ev.members["agreement"]
    row(f"generalization {args.pairs} pairs, first", lambda: gen.evaluate(net))
    row(f"generalization {args.pairs} pairs, cached", lambda: gen.evaluate(net))
    for name, ref in agree.references.items():  # what the first evaluation adds, once
        agree._samples[name] = row(
            f"agreement: {name} samples x{args.samples}",
            lambda ref=ref: sample_batched(ref, agree.noise, agree.num_steps, 64),
        )
    row(f"agreement: network samples x{args.samples}", lambda: agree.evaluate(net))
    samples = torch.randn(64, *data.image_shape)
    half = data.train.shape[0] // 2
    row(
        "twin similarity, 64 samples",
        lambda: twin_record(data.train[:half], data.train[half:], samples, samples.flip(0)),
    )
    return cells


if __name__ == "__main__":
    main()
