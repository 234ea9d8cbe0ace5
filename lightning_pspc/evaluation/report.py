"""Writing evaluation results: ``metrics.json`` and output folders, all-or-nothing."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..runs.files import write_atomic
from .plots.linear_charts import mid_band_mean


def json_safe(value: Any) -> Any:
    """Nested dicts/lists/tuples of numbers with NaN and inf replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented strict JSON (NaN -> null) to ``path`` via a temp file + rename."""
    return write_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def check_output_dir(out: str | Path) -> Path:
    """``out`` must be a writable folder that holds no training run, or not exist yet, with an
    existing writable parent."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; pass a folder (it is created if missing)")
    if out.is_dir() and ((out / "config.yaml").exists() or any(out.glob("*.ckpt"))):
        raise ValueError(
            f"--out {str(out)!r} holds a training run (config.yaml / *.ckpt); eval.py must not mix "
            f"its output into it. Fix: pass another folder, e.g. --out {str(out / 'eval')!r}"
        )
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {str(out)!r} is not writable; fix its permissions or choose another folder"
        )
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(
            f"cannot create --out {str(out)!r}: its parent {str(parent)!r} is missing or not "
            "writable; create it first or choose another folder"
        )
    return out


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; on success it replaces ``out`` in one rename.

    Entries of ``out`` that the new output does not have (files a user put there) are kept:
    they are hard-linked (or copied) into the new folder before the swap; entries of the same
    name are replaced. The old ``out`` is kept under a hidden name until the new one is in
    place, so on any error, in the body or in the swap, ``out`` is left exactly as it was and
    no temp folder remains.
    """
    out = check_output_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        yield tmp
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a swap


def swap_in(new: Path, out: Path) -> None:
    """Make folder ``new`` the folder ``out``, keeping ``out``'s entries that ``new`` lacks.

    ``out`` is renamed aside, ``new`` renamed to ``out`` and the old folder removed; a failed
    rename puts the old folder back.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, out.stat().st_mode & 0o7777 if out.is_dir() else 0o777 & ~umask)
    if not out.is_dir():
        os.rename(new, out)
        return
    for entry in out.iterdir():
        if not os.path.lexists(new / entry.name):
            _link_or_copy(entry, new / entry.name)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
    try:
        os.rename(out, aside / out.name)
    except BaseException:
        aside.rmdir()
        raise
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(aside / out.name, out)  # the old output back in place
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (a file, link or folder tree) to ``dst``; copy where links fail."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b, follow_symlinks=False)
        except OSError:
            shutil.copy2(a, b, follow_symlinks=False)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    else:
        link(str(src), str(dst))


def log_report_to_wandb(report: dict, folder: Path, project: str, name: str) -> None:
    """Log an ``eval.py`` report to one W&B run (its files under ``folder/wandb``).

    Per checkpoint: the memorized fraction, the band means of every reference and probe kind,
    the lowest linearity over sigma, the linear distillation's mid-band normalised MSE to the
    Gaussian denoiser, the median Pearson r of the sample agreement with each
    closed-form sampler, and its charts (``folder/plots``); then a summary table, the twin table
    and the transition, twins and phase-diagram charts.
    """
    import wandb

    run = wandb.init(
        project=project,
        name=name,
        dir=str(folder),
        job_type="eval",
        config=report["settings"],
    )
    rows = []
    for rec in report["checkpoints"]:
        scalars = {f"{rec['label']}/memorized_fraction": rec["memorized_fraction"]}
        for ref, kinds in rec["bands"].items():
            for kind, bands in kinds.items():
                scalars |= {f"{rec['label']}/{ref}/{kind}/{b}": v for b, v in bands.items()}
        linearity = [v for v in (rec.get("generalization") or {}).get("linearity", []) if v]
        if linearity:
            scalars[f"{rec['label']}/linearity/min"] = min(linearity)
        if rec.get("linear_distillation"):
            scalars[f"{rec['label']}/linear_distillation/gaussian_nmse_mid"] = mid_band_mean(
                rec["linear_distillation"]
            )
        for ref, stats in (rec.get("agreement") or {}).items():
            if isinstance(stats, dict) and "pearson" in stats:
                scalars[f"{rec['label']}/agreement/{ref}/pearson_median"] = stats["pearson"][
                    "median"
                ]
        images = {
            f"{rec['label']}/{p}": wandb.Image(str(folder / "plots" / p)) for p in rec["plots"]
        }
        run.log(scalars | images)
        mid = rec["bands"].get("empirical", {}).get("train", {}).get("mid")
        rows.append([rec["label"], rec["num_train"], rec["epoch"], rec["memorized_fraction"], mid])
    columns = ["checkpoint", "num_train", "epoch", "memorized_fraction", "mse_empirical_train_mid"]
    log = {"summary": wandb.Table(columns=columns, data=rows)}
    for key in ("transition", "transition_locality", "twins_plot", "phase_diagram"):
        if report.get(key):
            log[key] = wandb.Image(str(folder / report[key]))
    if report.get("twins"):
        columns = ["num_train", "twin_cos_median", "train_cos_median", "reproducibility"]
        rows = [[t.get(c) for c in columns] for t in report["twins"]]
        log["twins"] = wandb.Table(columns=columns, data=rows)
    run.log(log)
    run.finish()
