"""Training-set-size sweep: train one preset at several N, then evaluate all runs with ``eval.py``.

``python sweep.py --config configs/sweep_fmnist.yaml --sizes 16 64 256 1024 4096``

Each size trains in its own ``train.py fit`` subprocess (run ``<name>-n<N>`` under
``--run-root``), with ``--data.num_train=N``; the preset's ``data.epoch_length`` makes every size
train the same number of steps. Then :mod:`lightning_pspc.evaluation.evaluate` evaluates every
run's ``last.ckpt`` and, with two or more sizes, draws the transition chart (memorized fraction
and distances to the reference denoisers against N) into ``--out``. Arguments after ``--`` go to
every ``train.py fit`` call unchanged (e.g. ``-- --trainer.max_epochs=2``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .cli import RunSetupError, read_checkpoint
from .evaluation.command import main as eval_main
from .evaluation.report import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "train.py"


def run_name(name: str, size: int) -> str:
    """Run folder name of size ``size``: ``<name>-n<size>`` (zero-padded to sort by N)."""
    return f"{name}-n{size:05d}"


def train_command(
    config: str, run_root: str, name: str, size: int, extra: Sequence[str] = ()
) -> list[str]:
    """The ``train.py fit`` command line of one size."""
    return [
        sys.executable,
        str(TRAIN_SCRIPT),
        "fit",
        f"--config={config}",
        f"--run_root={run_root}",
        f"--run_name={run_name(name, size)}",
        f"--data.num_train={size}",
        *extra,
    ]


def warn_unequal_steps(ckpts: Sequence[str]) -> dict[str, int]:
    """Optimizer steps of each checkpoint; prints a warning when they differ (sizes would then
    be compared at different training lengths, e.g. a ``last.ckpt`` not from the final epoch)."""
    steps = {}
    for path in ckpts:
        try:
            steps[path] = int(read_checkpoint(path).get("global_step", -1))
        except RunSetupError:
            continue  # eval.py reports it with its fix
    if len(set(steps.values())) > 1:
        print(f"[sweep] warning: checkpoints were saved after different step counts: {steps}")
    return steps


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Sweep options, and the ``train.py`` arguments after ``--``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/sweep_fmnist.yaml", help="train.py preset")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    p.add_argument("--name", default="sweep", help="run name prefix")
    p.add_argument("--run-root", default="checkpoints/sweep", help="parent of the run folders")
    p.add_argument("--out", default=None, help="eval output folder (default RUN_ROOT/eval)")
    p.add_argument(
        "--skip-existing", action="store_true", help="reuse runs that already have a last.ckpt"
    )
    p.add_argument(
        "--eval-args",
        default="--num-train-probes 8 --num-heldout-probes 8 --num-reverse-probes 4",
        help="eval.py options (probe counts etc.), one string",
    )
    args = p.parse_args(own)
    if not args.sizes or min(args.sizes) < 2 or len(set(args.sizes)) != len(args.sizes):
        p.error(f"--sizes {args.sizes}: give distinct training-set sizes >= 2")
    if not Path(args.config).is_file():
        p.error(
            f"--config {args.config!r} does not exist; pass a preset such as {p.get_default('config')}"
        )
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Train every size, evaluate them all, print a summary; returns the exit code."""
    args, extra = parse_args(argv)
    root = Path(args.run_root)
    out = Path(args.out) if args.out else root / "eval"
    t_start = time.perf_counter()
    timings = {}
    for size in sorted(args.sizes):
        ckpt = root / run_name(args.name, size) / "last.ckpt"
        if args.skip_existing and ckpt.is_file():
            print(f"[sweep] N={size}: reusing {ckpt}", flush=True)
            continue
        cmd = train_command(args.config, str(root), args.name, size, extra)
        print(f"[sweep] N={size}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, cwd=REPO_ROOT)
        timings[size] = time.perf_counter() - t0
        if code != 0:
            print(
                f"error: training N={size} failed (exit {code}); see the output above",
                file=sys.stderr,
            )
            return code
        print(f"[sweep] N={size}: trained in {timings[size]:.0f} s", flush=True)
    ckpts = [str(root / run_name(args.name, s) / "last.ckpt") for s in sorted(args.sizes)]
    warn_unequal_steps(ckpts)
    eval_argv = [a for c in ckpts for a in ("--ckpt", c)] + ["--out", str(out)]
    t0 = time.perf_counter()
    code = eval_main(eval_argv + args.eval_args.split())
    if code != 0:
        return code
    total = time.perf_counter() - t_start
    write_json_atomic(
        out / "sweep.json",
        {
            "sizes": sorted(args.sizes),
            "config": args.config,
            "train_args": extra,
            "train_seconds": {str(k): v for k, v in timings.items()},
            "eval_seconds": time.perf_counter() - t0,
            "total_seconds": total,
        },
    )
    report = json.loads((out / "metrics.json").read_text())
    print(f"[sweep] done in {total / 60:.1f} min; transition chart: {out / 'transition.png'}")
    print(f"[sweep] training seconds per N: { {k: round(v) for k, v in timings.items()} }")
    return 0 if report["checkpoints"] else 1


if __name__ == "__main__":
    sys.exit(main())
