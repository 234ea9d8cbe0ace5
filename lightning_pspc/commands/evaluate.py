"""``eval.py``: evaluate checkpoints written by ``train.py`` and networks trained elsewhere.

``python eval.py --ckpt RUN/last.ckpt [--ckpt ...] --out DIR [options]``, and networks trained
elsewhere with ``--network SPEC [--network ...] --data PRESET`` (docs/pretrained.md); the work is
:func:`lightning_pspc.evaluation.checkpoints.evaluate_checkpoints`, the options are the groups of
:class:`~lightning_pspc.evaluation.settings.EvalSettings` (one flag per option, each group
beside the evaluation member it configures).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.checkpoints import evaluate_checkpoints
from ..evaluation.options import flag
from ..evaluation.settings import GROUPS, EvalError, EvalSettings

__all__ = [
    "add_settings_arguments",
    "main",
    "parse_args",
    "run",
    "settings_from_args",
    "summary_lines",
]


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per option of :class:`EvalSettings` (read back by :func:`settings_from_args`),
    plus ``--wandb``, ``--wandb-project`` and ``--no-progress``."""
    for group in GROUPS:
        for f in group.option_fields():
            item, help_ = f.metadata["item"], f.metadata["help"]
            default = f.default_factory() if callable(f.default_factory) else f.default
            if item is not None:  # a list
                p.add_argument(flag(f.name), nargs="+", type=item, default=default, help=help_)
            else:
                p.add_argument(flag(f.name), type=type(default), default=default, help=help_)
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    p.add_argument("--wandb-project", default="lightning_pspc")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The :class:`EvalSettings` of the flags added by :func:`add_settings_arguments`."""
    names = [f.name for group in GROUPS for f in group.option_fields()]
    return EvalSettings(**{name: getattr(args, name) for name in names})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--ckpt PATH`` / ``--network SPEC`` (each repeatable, at least one), ``--data PRESET``,
    ``--class-label K``, ``--out DIR``, plus one option per :class:`EvalSettings` field."""
    p = argparse.ArgumentParser(
        prog="eval.py",
        description="Evaluate checkpoints written by train.py and networks trained elsewhere.",
    )
    p.add_argument(
        "--ckpt",
        action="append",
        default=[],
        metavar="PATH",
        help="train.py checkpoint; repeatable",
    )
    p.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="SPEC",
        help="a network trained elsewhere: diffusers:<folder or hub id>, edm:<pickle>, "
        "module.path:callable or a train.py checkpoint; repeatable; needs --data",
    )
    p.add_argument(
        "--data",
        metavar="PRESET",
        help="data preset file of the --network entries (e.g. configs/data_cifar10_pretrained.yaml)",
    )
    p.add_argument(
        "--class-label",
        type=int,
        metavar="K",
        help="class of a class-conditional --network (edm:, diffusers:)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="gets metrics.json and plots/")
    add_settings_arguments(p)
    return p.parse_args(argv)


def summary_lines(report: dict) -> list[str]:
    """A short table: checkpoint, N, epoch (``-`` for a network trained elsewhere), memorized
    fraction, MSE to empirical (train probes)."""
    head = ["checkpoint", "N", "epoch", "memorized", "emp low", "emp mid", "emp high"]
    lines = [f"{head[0]:<36}" + "".join(f"{h:>10}" for h in head[1:])]
    for rec in report["checkpoints"]:
        bands = rec["bands"].get("empirical", {}).get("train", {})
        values = [bands.get(b, float("nan")) for b in ("low", "mid", "high")]
        lines.append(
            f"{rec['label']:<36}{rec['num_train']:>10}{_or_dash(rec['epoch']):>10}"
            f"{rec['memorized_fraction']:>10.3f}" + "".join(f"{v:>10.3g}" for v in values)
        )
    for twin in report.get("twins") or []:
        lines.append(
            f"twins N={twin['num_train']}: twin cos {twin['twin_cos_median']:.3f}, nearest-training "
            f"cos {twin['train_cos_median']:.3f}, reproducibility {twin['reproducibility']:.2f}"
        )
    return lines


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eval.py``; a bad input prints one ``error:`` line and returns 2."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    project = args.wandb_project if args.wandb else None
    try:
        report = evaluate_checkpoints(
            args.ckpt,
            args.out,
            settings,
            project,
            progress=not args.no_progress,
            networks=args.network,
            data=args.data,
            class_label=args.class_label,
        )
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"wrote {Path(args.out) / 'metrics.json'} ({report['seconds']:.1f} s)")
    return 0


def run() -> None:
    """Console script ``lightning-pspc-eval``: :func:`main` with its exit code."""
    sys.exit(main())
