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

from ..files import write_atomic


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
    """``out`` must be a folder or not exist yet, with an existing writable parent."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; pass a folder (it is created if missing)")
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(
            f"cannot create --out {str(out)!r}: its parent {str(parent)!r} is missing or not "
            "writable; create it first or choose another folder"
        )
    return out


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; on success move its entries into ``out``.

    Entries of ``out`` with the same names are replaced, others are kept. On an exception the
    temp folder is removed and ``out`` is left exactly as it was.
    """
    out = check_output_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out.mkdir(exist_ok=True)
    for entry in sorted(tmp.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(tmp, ignore_errors=True)


def log_report_to_wandb(report: dict, folder: Path, project: str, name: str) -> None:
    """Log an ``eval.py`` report to one W&B run (its files under ``folder/wandb``).

    Per checkpoint: the memorized fraction, the band means of every reference and probe kind,
    and its charts (``folder/plots``); then a summary table and the transition chart.
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
        images = {
            f"{rec['label']}/{p}": wandb.Image(str(folder / "plots" / p)) for p in rec["plots"]
        }
        run.log(scalars | images)
        mid = rec["bands"].get("empirical", {}).get("train", {}).get("mid")
        rows.append([rec["label"], rec["num_train"], rec["epoch"], rec["memorized_fraction"], mid])
    columns = ["checkpoint", "num_train", "epoch", "memorized_fraction", "mse_empirical_train_mid"]
    log = {"summary": wandb.Table(columns=columns, data=rows)}
    if report["transition"]:
        log["transition"] = wandb.Image(str(folder / report["transition"]))
    run.log(log)
    run.finish()
