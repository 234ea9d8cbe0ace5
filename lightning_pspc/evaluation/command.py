"""Command line of ``eval.py`` (the logic is in :mod:`lightning_pspc.evaluation.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .evaluate import EvalError, EvalSettings, evaluate_checkpoints

__all__ = [
    "add_settings_arguments",
    "main",
    "parse_args",
    "run",
    "settings_from_args",
    "summary_lines",
]

#: Help of each :class:`EvalSettings` field; each becomes ``--field-name``.
HELP = {
    "num_train_probes": "training images, each probed at every sigma",
    "num_heldout_probes": "held-out images, each probed at every sigma",
    "num_reverse_probes": "seeds of reverse (Heun) trajectories, one probe per sigma each",
    "num_samples": "Heun samples for the memorization statistics",
    "num_steps": "Heun steps per sample",
    "references": "reference denoisers: empirical, pspc, gaussian, pspc_flex, pspc_flex_soft, ls, "
    "els, wiener_locality (the local ones are slow on CPU; see README)",
    "sigmas": "noise levels (default: the 18 EDM sigmas)",
    "seed": "seed of the probes and samples",
    "batch_size": "images per denoiser call",
    "threshold": "memorized when d(NN1) / d(NN2) < threshold (Gu et al. 2023)",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "num_linearity_pairs": "held-out pairs of the linearity / Gaussian-fit / R^2 measures (0: off)",
    "num_agreement_samples": "samples from the same noise by network and closed-form denoisers "
    "(0: off; the closed-form samples take seconds on CPU, once per checkpoint)",
    "agreement_references": "closed-form denoisers the network's samples are compared with",
    "locality_probes": "held-out probes per sigma of the sensitivity / best-fit patch sizes "
    "(0: skip)",
    "locality_stride": "output-pixel grid step of the sensitivity heatmaps (1: every pixel)",
    "locality_sigmas": "noise levels of the patch sizes (default 10 3 1 0.5 0.2 0.05)",
    "locality_reverse_probes": "seeds of the network's own Heun trajectories whose states join "
    "the held-out probes of the best fit (pooled; 0: forward probes only)",
    "locality_fit_kinds": "closed forms the best fit calibrates: pspc, ls, els (els gives the els "
    "reference its own calibration, else it uses ls's; slow on CPU)",
    "flex_probes": "held-out probes per sigma of the pspc_flex references' full heatmaps",
}


#: :class:`EvalSettings` fields given as lists (``nargs="+"``).
LIST_FIELDS = (
    "references",
    "sigmas",
    "agreement_references",
    "locality_sigmas",
    "locality_fit_kinds",
)


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """One option ``--field-name`` per :class:`EvalSettings` field (read back by
    :func:`settings_from_args`), plus ``--wandb``, ``--wandb-project`` and ``--no-progress``."""
    for f in fields(EvalSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.name in LIST_FIELDS:
            kind = float if f.name in ("sigmas", "locality_sigmas") else str
            p.add_argument(flag, nargs="+", type=kind, default=f.default, help=HELP[f.name])
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=HELP[f.name])
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    p.add_argument("--wandb-project", default="lightning_pspc")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The :class:`EvalSettings` of options added by :func:`add_settings_arguments`."""
    values = {f.name: getattr(args, f.name) for f in fields(EvalSettings)}
    tuples = {
        k: tuple(values[k]) for k in ("references", "agreement_references", "locality_fit_kinds")
    }
    return EvalSettings(**values | tuples)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--ckpt PATH [--ckpt PATH ...] --out DIR`` plus one option per :class:`EvalSettings` field."""
    p = argparse.ArgumentParser(
        prog="eval.py", description="Evaluate checkpoints written by train.py."
    )
    p.add_argument("--ckpt", action="append", required=True, metavar="PATH", help="repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="gets metrics.json and plots/")
    add_settings_arguments(p)
    return p.parse_args(argv)


def summary_lines(report: dict) -> list[str]:
    """A short table: checkpoint, N, epoch, memorized fraction, MSE to empirical (train probes)."""
    head = ["checkpoint", "N", "epoch", "memorized", "emp low", "emp mid", "emp high"]
    lines = [f"{head[0]:<36}" + "".join(f"{h:>10}" for h in head[1:])]
    for rec in report["checkpoints"]:
        bands = rec["bands"].get("empirical", {}).get("train", {})
        values = [bands.get(b, float("nan")) for b in ("low", "mid", "high")]
        lines.append(
            f"{rec['label']:<36}{rec['num_train']:>10}{rec['epoch']:>10}"
            f"{rec['memorized_fraction']:>10.3f}" + "".join(f"{v:>10.3g}" for v in values)
        )
    for twin in report.get("twins") or []:
        lines.append(
            f"twins N={twin['num_train']}: twin cos {twin['twin_cos_median']:.3f}, nearest-training "
            f"cos {twin['train_cos_median']:.3f}, reproducibility {twin['reproducibility']:.2f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eval.py``; a bad input prints one ``error:`` line and returns 2."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    project = args.wandb_project if args.wandb else None
    try:
        report = evaluate_checkpoints(
            args.ckpt, args.out, settings, project, progress=not args.no_progress
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
