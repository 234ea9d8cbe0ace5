"""Training-set-size sweep: train one preset at several N, then evaluate all runs in-process.

``python sweep.py`` is the README's main job: ``configs/sweep_fmnist.yaml`` (a small UNet on
16x16 Fashion-MNIST, 800 steps) at N = 8, 16, 24, 32, 64, 128, twin runs at every size, two runs
at a time on a CPU; it ends by printing whether the transition is resolved
(:mod:`lightning_pspc.evaluation.transition`). Another preset or sizes:
``python sweep.py --config configs/sweep_fmnist.yaml --sizes 16 64 256``.

Each run trains in its own ``python -m lightning_pspc.commands.train fit`` subprocess (run
``<name>-n<N>`` under ``--run-root``), with ``--data.num_train=N``; the preset's
``data.epoch_length`` makes every size train the same number of steps. ``--jobs`` runs train side by
side (default: 2 on a CPU with two or more cores, where a small network's step barely uses a second
core; 1 on a GPU), each with ``cores / jobs`` threads and its output in ``RUN_ROOT/logs/<run>.log``.
Then the evaluation pipeline (:func:`lightning_pspc.evaluation.checkpoints.evaluate_checkpoints`,
what ``eval.py`` runs) evaluates every run's ``last.ckpt`` and, with two or more sizes, draws the
transition chart (memorized fraction and distances to the reference denoisers against N) into
``--out``. With the evaluation's linear distillation (on by default for the 16x16 preset:
``--linear-distillation``), the rows (``sweep.json``) and the chart's linearity panel carry the
distilled map's mid-band normalised MSE to the Gaussian denoiser per N (Li et al. 2024).
Arguments after ``--`` go to every training call unchanged (e.g. ``-- --trainer.max_epochs=2``).
Every path is resolved once against the caller's working directory.

Twin runs (default; ``--no-twins`` trains one run per size on N images), ``<name>-n<N>-a`` and
``-b``, train on the disjoint halves of a ``2N`` subset (``--data.subset a|b``); the evaluation
pairs them up and reports their similarity (Kadkhodaie et al. 2024). Unless the preset already
has one, every run gets a ``MemorizationMonitor`` (``--history-every`` epochs,
``--history-samples`` samples) whose history, saved in the checkpoint, gives the evaluation's
phase diagram (memorized fraction over N and training images seen).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import STDOUT, Popen
from typing import NamedTuple

import yaml

from ..callbacks.memorization_monitor import MemorizationMonitor
from ..evaluation.checkpoints import evaluate_checkpoints
from ..evaluation.report import write_json_atomic
from ..evaluation.settings import EvalError
from ..evaluation.transition import check_lines, transition_checks, transition_rows
from ..runs.checkpoints import read_checkpoint
from ..runs.folders import CONFIG_FILE, RunSetupError
from ..runs.rebuild import build_from_config, load_config
from .evaluate import add_settings_arguments, settings_from_args, summary_lines

#: The repository's presets (used when the default ``--config`` is not found from the caller's
#: working directory).
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = "configs/sweep_fmnist.yaml"
#: Training-set sizes of the main job (``configs/sweep_fmnist.yaml``): they bracket the preset's
#: memorization-to-generalization transition at its 800 steps, and the sweep's transition checks
#: test that they resolve it.
DEFAULT_SIZES = (8, 16, 24, 32, 64, 128)
#: Evaluation sizes of the sweep (smaller than ``eval.py``'s, so that evaluating a dozen small runs
#: stays short; with twin runs every size gets 2 x 64 samples).
SWEEP_EVAL_DEFAULTS = {
    "num_train_probes": 16,
    "num_heldout_probes": 16,
    "num_reverse_probes": 8,
    "num_samples": 64,
    "num_linearity_pairs": 8,
    "num_agreement_samples": 8,
    "locality_probes": 2,
    # the transition chart reads the sensitivity patch size; the best fit stays on forward probes
    # (the eval.py default adds 2 reverse trajectories per run: left out of the main job)
    "locality_reverse_probes": 0,
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
        "lightning_pspc.commands.train",
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

    Raises :class:`RunSetupError` for checkpoints without a readable ``last.ckpt``, with the
    sweep's fix (the folder, not a ``train.py`` flag).
    """
    if not run_dir.is_dir() or not any(run_dir.glob("*.ckpt")):
        return "new"
    fix = (
        f"Fix: move or delete {str(run_dir)!r} to train that size again, or pass another --name "
        "or --run-root."
    )
    last = run_dir / "last.ckpt"
    if not last.is_file():
        held = sorted(p.name for p in run_dir.glob("*.ckpt"))
        raise RunSetupError(
            f"run folder {str(run_dir)!r} holds {held} but no last.ckpt (the run stopped before "
            f"writing it, or it was removed), so the sweep can neither reuse nor resume it. {fix}"
        )
    try:
        ckpt = read_checkpoint(last)
    except RunSetupError as err:
        reason = str(err).split(" Fix:")[0]
        raise RunSetupError(f"{reason} The sweep can neither reuse nor resume it. {fix}") from None
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


class TrainJob(NamedTuple):
    """One training subprocess: its label (``N=16 (a)``), run name and command line."""

    label: str
    run: str
    cmd: list[str]


def default_jobs() -> int:
    """Training runs at once when ``--jobs`` is 0: one on a GPU (the runs would share it), two
    on a CPU with two or more cores (a small UNet's step barely gains from a second core, so two
    runs with one core each finish sooner than one after the other with two)."""
    import torch

    if torch.cuda.is_available():
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def train_jobs(jobs: Sequence[TrainJob], parallel: int, log_dir: Path, timings: dict) -> int:
    """Runs ``jobs`` at most ``parallel`` at a time; returns 0, or the first failure's exit code
    (after the runs already started have finished; none starts after a failure).

    One at a time, a run writes to this process's output. Several at a time, each gets
    ``cpu_count // parallel`` threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) and writes to
    ``log_dir/<run>.log``; a failed run's last lines are printed. ``timings[run]`` gets its
    seconds.
    """
    env = None
    if parallel > 1:
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        log_dir.mkdir(parents=True, exist_ok=True)
    queue, running, failed = list(jobs), [], 0
    while queue or running:
        while queue and len(running) < parallel and not failed:
            job = queue.pop(0)
            print(f"[sweep] {job.label}: {' '.join(job.cmd[1:])}", flush=True)
            log = (log_dir / f"{job.run}.log").open("w") if parallel > 1 else None
            proc = Popen(job.cmd, env=env, stdout=log, stderr=STDOUT if log else None)
            running.append((job, proc, log, time.perf_counter()))
        if failed and not running:
            break
        time.sleep(0.2)
        for item in list(running):
            job, proc, log, t0 = item
            code = proc.poll()
            if code is None:
                continue
            running.remove(item)
            timings[job.run] = time.perf_counter() - t0
            if log:
                log.close()
            if code != 0:
                tail = ""
                if log:
                    lines = (log_dir / f"{job.run}.log").read_text(errors="replace").splitlines()
                    tail = (
                        "\n".join(lines[-20:])
                        + f"\n(full output: {log_dir / (job.run + '.log')})\n"
                    )
                print(
                    f"{tail}error: training {job.label} failed (exit {code}); see the output above",
                    file=sys.stderr,
                )
                failed = failed or code
            else:
                print(f"[sweep] {job.label}: trained in {timings[job.run]:.0f} s", flush=True)
    return failed


def history_arguments(config: Path, every: int, samples: int) -> list[str]:
    """Training arguments that append a ``MemorizationMonitor`` (every ``every`` epochs,
    ``samples`` samples, no charts) to the preset's callbacks; none when ``every`` is 0 or the
    preset already has one (its history is read back instead)."""
    callbacks = (load_config(config).get("trainer") or {}).get("callbacks") or []
    has_monitor = any(is_subclass_path(c.get("class_path"), MemorizationMonitor) for c in callbacks)
    if not every or has_monitor:
        return []
    monitor = {
        "class_path": f"lightning_pspc.callbacks.{MemorizationMonitor.__name__}",
        "init_args": {
            "every_n_epochs": every,
            "num_samples": samples,
            "log_images": False,
            "progress": False,
        },
    }
    return [f"--trainer.callbacks+={json.dumps(monitor)}"]


def is_subclass_path(class_path: object, base: type) -> bool:
    """Whether the configuration's ``class_path`` names ``base`` or a subclass of it (a path
    that does not import is not)."""
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and issubclass(found, base)


def check_sizes(config: Path, sizes: Sequence[int], extra: Sequence[str], twins: bool) -> None:
    """Raise ``ValueError`` naming the size and the fix when the data cannot hold the largest
    size, before anything trains: ``N`` training images besides the held-out ones, or with twin
    runs two disjoint halves of ``N`` (``2N`` images).

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
    dm.subset = "a" if twins else None
    try:
        dm.setup()
    except ValueError as err:
        if twins:
            raise ValueError(
                f"twin runs (the default) with --sizes up to {size}: each twin needs its own "
                f"{size} images ({2 * size} in all), but {err} Fix: drop sizes above the limit, "
                f"lower --data.num_heldout, or pass --no-twins."
            ) from None
        raise ValueError(
            f"--sizes up to {size}: {err} Fix: drop sizes above the limit or lower "
            f"--data.num_heldout; nothing was trained."
        ) from None


def check_twin_sizes(config: Path, sizes: Sequence[int], extra: Sequence[str]) -> None:
    """:func:`check_sizes` of twin runs."""
    check_sizes(config, sizes, extra, twins=True)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Sweep and evaluation options, and the training arguments after ``--``.

    Paths come back absolute, resolved against the caller's working directory.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="training preset (YAML)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
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
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train two runs per size on the disjoint halves a/b of a 2N subset (default; "
        "--no-twins: one run per size on N images)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="training runs at once (0: auto, 2 on a CPU with >= 2 cores, else 1); with more "
        "than one, each gets cores / jobs threads and writes its output to RUN_ROOT/logs/",
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
    if args.jobs < 0:
        p.error(f"--jobs {args.jobs}: give 0 (auto) or a number of runs >= 1")
    args.jobs = args.jobs or default_jobs()
    if args.history_every < 0 or args.history_samples < 1:
        p.error(
            f"--history-every {args.history_every} must be >= 0 and --history-samples "
            f"{args.history_samples} >= 1"
        )
    args.config = config.resolve()
    try:
        check_sizes(args.config, args.sizes, extra, args.twins)
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
    pending = []
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
        pending.append(TrainJob(label, run_name(args.name, size, subset), cmd))
    code = train_jobs(pending, args.jobs, root / "logs", timings)
    if code != 0:
        return code
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
            "jobs": args.jobs,
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
