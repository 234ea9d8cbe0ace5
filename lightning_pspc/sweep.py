"""Training-set-size sweep: train one preset at several N, then evaluate all runs in-process.

``python sweep.py --config configs/sweep_fmnist.yaml --sizes 16 64 256 1024 4096``

Each size trains in its own ``python -m lightning_pspc.cli fit`` subprocess (run
``<name>-n<N>`` under ``--run-root``), with ``--data.num_train=N``; the preset's
``data.epoch_length`` makes every size train the same number of steps. Then the evaluation
pipeline (:func:`lightning_pspc.evaluation.evaluate.evaluate_checkpoints`, what ``eval.py``
runs) evaluates every run's ``last.ckpt`` and, with two or more sizes, draws the transition chart
(memorized fraction and distances to the reference denoisers against N) into ``--out``.
Arguments after ``--`` go to every training call unchanged (e.g. ``-- --trainer.max_epochs=2``).
Every path is resolved once against the caller's working directory.

``--twins`` trains two runs per size, ``<name>-n<N>-a`` and ``-b``, on the disjoint halves of a
``2N`` subset (``--data.subset a|b``); the evaluation pairs them up and reports their similarity
(Kadkhodaie et al. 2024). Unless the preset already has one, every run gets a
``MemorizationMonitor`` (``--history-every`` epochs, ``--history-samples`` samples) whose history,
saved in the checkpoint, gives the evaluation's phase diagram (memorized fraction over N and
training images seen).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from .evaluation.command import add_settings_arguments, settings_from_args, summary_lines
from .evaluation.evaluate import EvalError, evaluate_checkpoints
from .evaluation.report import write_json_atomic
from .evaluation.transition import check_lines, transition_checks, transition_rows
from .runs import CONFIG_FILE, RunSetupError, build_from_config, load_config, read_checkpoint

#: The repository's presets (used when the default ``--config`` is not found from the caller's
#: working directory).
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = "configs/sweep_fmnist.yaml"
#: Evaluation sizes of the sweep (smaller than ``eval.py``'s defaults: five runs in minutes).
SWEEP_EVAL_DEFAULTS = {
    "num_train_probes": 8,
    "num_heldout_probes": 8,
    "num_reverse_probes": 4,
    "num_linearity_pairs": 4,
    "num_agreement_samples": 4,
    "locality_probes": 2,
}


#: The training-data halves of twin runs (``ImageDataModule(subset=...)``).
TWIN_SUBSETS = ("a", "b")


def run_name(name: str, size: int, subset: str | None = None) -> str:
    """Run folder name of size ``size``: ``<name>-n<size>`` (zero-padded to sort by N), with
    ``-a`` / ``-b`` for the halves of twin runs."""
    return f"{name}-n{size:05d}" + (f"-{subset}" if subset else "")


def train_command(
    config: Path,
    run_root: Path,
    name: str,
    size: int,
    extra: Sequence[str] = (),
    subset: str | None = None,
    history: Sequence[str] = (),
) -> list[str]:
    """The training command line of one size (the package's CLI, not a repository script);
    ``subset``: the half of a twin run; ``history``: arguments adding the memorization monitor
    (:func:`history_arguments`)."""
    return [
        sys.executable,
        "-m",
        "lightning_pspc.cli",
        "fit",
        f"--config={config}",
        f"--run_root={run_root}",
        f"--run_name={run_name(name, size, subset)}",
        *history,
        *([f"--data.subset={subset}"] if subset else []),
        f"--data.num_train={size}",
        *extra,
    ]


def run_state(run_dir: Path) -> str:
    """``new`` (no checkpoint yet), ``finished`` (``last.ckpt`` completed the ``max_epochs`` /
    ``max_steps`` of the run's own ``config.yaml``) or ``partial`` (to be resumed).

    Raises :class:`RunSetupError` for checkpoints without a readable ``last.ckpt``.
    """
    if not run_dir.is_dir() or not any(run_dir.glob("*.ckpt")):
        return "new"
    ckpt = read_checkpoint(run_dir / "last.ckpt")
    try:
        trainer = load_config(run_dir / CONFIG_FILE).get("trainer") or {}
    except (OSError, ValueError) as err:
        raise RunSetupError(f"cannot read {str(run_dir / CONFIG_FILE)!r}: {err}") from err
    epochs = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    done_epochs = epochs.get("total", {}).get("processed", 0)
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps") or -1
    if max_epochs not in (None, -1) and done_epochs >= max_epochs:
        return "finished"
    if max_steps > 0 and int(ckpt.get("global_step", 0)) >= max_steps:
        return "finished"
    return "partial"


def check_existing_runs(
    root: Path, name: str, runs: Sequence[tuple[int, str | None]], reuse: bool
) -> dict:
    """``{(size, subset): run_state}`` of every run; runs from an earlier sweep need
    ``--skip-existing``.

    Raises :class:`RunSetupError` naming the folder and the fix.
    """
    states = {run: run_state(root / run_name(name, *run)) for run in runs}
    existing = [str(root / run_name(name, *r)) for r, state in states.items() if state != "new"]
    if existing and not reuse:
        raise RunSetupError(
            f"run folders {existing} already hold checkpoints of an earlier sweep. Fix: pass "
            "--skip-existing to reuse the finished runs and resume the half-trained ones, or "
            "choose another --name or --run-root."
        )
    return states


def history_arguments(config: Path, every: int, samples: int) -> list[str]:
    """Training arguments that append a ``MemorizationMonitor`` (every ``every`` epochs,
    ``samples`` samples, no charts) to the preset's callbacks; none when ``every`` is 0 or the
    preset already has one (its history is read back instead)."""
    callbacks = (load_config(config).get("trainer") or {}).get("callbacks") or []
    has_monitor = any("MemorizationMonitor" in str(c.get("class_path", "")) for c in callbacks)
    if not every or has_monitor:
        return []
    monitor = {
        "class_path": "lightning_pspc.callbacks.MemorizationMonitor",
        "init_args": {
            "every_n_epochs": every,
            "num_samples": samples,
            "log_images": False,
            "progress": False,
        },
    }
    return [f"--trainer.callbacks+={json.dumps(monitor)}"]


def check_twin_sizes(config: Path, sizes: Sequence[int], extra: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the size and the fix when the data cannot hold two disjoint
    halves of the largest size (``2N`` images besides the held-out ones).

    The preset's ``data`` section is read with the ``--data.KEY=VALUE`` arguments of ``extra``.
    """
    cfg = load_config(config)
    data = dict(cfg.get("data") or {})
    for arg in extra:
        if arg.startswith("--data.") and "=" in arg and "." not in arg[7:].split("=")[0]:
            key, value = arg[7:].split("=", 1)
            data[key] = yaml.safe_load(value)
    size = max(sizes)
    _, dm = build_from_config({"model": cfg.get("model"), "data": data | {"num_train": size}})
    dm.subset = "a"
    try:
        dm.setup()
    except ValueError as err:
        raise ValueError(
            f"--twins with --sizes up to {size}: each twin needs its own {size} images "
            f"({2 * size} in all), but {err} Fix: drop sizes above the limit, or lower "
            f"--data.num_heldout."
        ) from None


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Sweep and evaluation options, and the training arguments after ``--``.

    Paths come back absolute, resolved against the caller's working directory.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="training preset (YAML)")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    p.add_argument("--name", default="sweep", help="run name prefix")
    p.add_argument("--run-root", default="checkpoints/sweep", help="parent of the run folders")
    p.add_argument("--out", default=None, help="evaluation output folder (default RUN_ROOT/eval)")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="reuse runs whose last.ckpt finished the training in their config.yaml; resume "
        "half-trained ones (without it, existing runs are an error)",
    )
    p.add_argument(
        "--twins",
        action="store_true",
        help="train two runs per size on the disjoint halves a/b of a 2N subset",
    )
    p.add_argument(
        "--history-every",
        type=int,
        default=1,
        help="epochs between memorization evaluations during training (0: none)",
    )
    p.add_argument("--history-samples", type=int, default=16, help="samples of each of them")
    add_settings_arguments(p)
    p.set_defaults(**SWEEP_EVAL_DEFAULTS)
    args = p.parse_args(own)
    if not args.sizes or min(args.sizes) < 2 or len(set(args.sizes)) != len(args.sizes):
        p.error(f"--sizes {args.sizes}: give distinct training-set sizes >= 2")
    config = Path(args.config).expanduser()
    if not config.is_file() and args.config == DEFAULT_CONFIG:
        config = REPO_CONFIGS / Path(DEFAULT_CONFIG).name
    if not config.is_file():
        p.error(
            f"--config {args.config!r} does not exist (from {str(Path.cwd())!r}); pass a preset "
            f"such as {REPO_CONFIGS / Path(DEFAULT_CONFIG).name}"
        )
    if args.history_every < 0 or args.history_samples < 1:
        p.error(
            f"--history-every {args.history_every} must be >= 0 and --history-samples "
            f"{args.history_samples} >= 1"
        )
    args.config = config.resolve()
    if args.twins:
        try:
            check_twin_sizes(args.config, args.sizes, extra)
        except ValueError as err:
            p.error(str(err))
    args.run_root = Path(args.run_root).expanduser().resolve()
    args.out = Path(args.out).expanduser().resolve() if args.out else args.run_root / "eval"
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Train every size, evaluate them all, print a summary; returns the exit code."""
    args, extra = parse_args(argv)
    root, out = args.run_root, args.out
    t_start = time.perf_counter()
    timings = {}
    history = history_arguments(args.config, args.history_every, args.history_samples)
    subsets = TWIN_SUBSETS if args.twins else (None,)
    runs = [(size, subset) for size in sorted(args.sizes) for subset in subsets]
    try:
        states = check_existing_runs(root, args.name, runs, args.skip_existing)
    except RunSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for size, subset in runs:
        label = f"N={size}" + (f" ({subset})" if subset else "")
        ckpt = root / run_name(args.name, size, subset) / "last.ckpt"
        if states[size, subset] == "finished":
            print(f"[sweep] {label}: reusing the finished run {ckpt}", flush=True)
            continue
        cmd = train_command(args.config, root, args.name, size, extra, subset, history)
        if states[size, subset] == "partial":
            print(f"[sweep] {label}: resuming the half-trained run {ckpt}", flush=True)
            cmd.append(f"--ckpt_path={ckpt}")
        print(f"[sweep] {label}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        timings[run_name(args.name, size, subset)] = time.perf_counter() - t0
        if code != 0:
            print(
                f"error: training {label} failed (exit {code}); see the output above",
                file=sys.stderr,
            )
            return code
        print(f"[sweep] {label}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    ckpts = [root / run_name(args.name, s, sub) / "last.ckpt" for s, sub in runs]
    t0 = time.perf_counter()
    try:
        report = evaluate_checkpoints(
            ckpts,
            out,
            settings_from_args(args),
            args.wandb_project if args.wandb else None,
            progress=not args.no_progress,
        )
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    checks = transition_checks(report)
    print("\n".join(check_lines(checks)))
    total = time.perf_counter() - t_start
    write_json_atomic(
        out / "sweep.json",
        {
            "sizes": sorted(args.sizes),
            "config": str(args.config),
            "train_args": extra,
            "twins": args.twins,
            "train_seconds": {str(k): v for k, v in timings.items()},
            "eval_seconds": time.perf_counter() - t0,
            "total_seconds": total,
            "transition": transition_rows(report),
            "checks": {c.name: {"passed": c.passed, "detail": c.detail} for c in checks},
        },
    )
    print(f"[sweep] done in {total / 60:.1f} min; transition chart: {out / 'transition.png'}")
    print(f"[sweep] training seconds per run: { {k: round(v) for k, v in timings.items()} }")
    return 0 if report["checkpoints"] else 1


def run() -> None:
    """Console script ``lightning-pspc-sweep``: :func:`main` with its exit code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
