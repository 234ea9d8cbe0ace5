"""Writing evaluation results: ``metrics.json`` and output folders, all-or-nothing."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..runs.files import process_running, write_atomic
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


#: Keys of ``metrics.json`` that name a chart eval.py wrote at the top of its output folder.
TOP_LEVEL_CHARTS = ("transition", "transition_locality", "twins_plot", "phase_diagram")


def written_files(report: dict) -> set[str]:
    """The files (relative to the output folder) that eval.py wrote for ``report``, the content
    of its ``metrics.json``: ``metrics.json``, the charts under ``plots/`` and the top-level
    charts."""
    files = {"metrics.json"}
    for rec in report.get("checkpoints") or []:
        if isinstance(rec, dict):
            files |= {f"plots/{name}" for name in rec.get("plots") or [] if isinstance(name, str)}
    return files | {report[k] for k in TOP_LEVEL_CHARTS if isinstance(report.get(k), str)}


def previous_output(out: str | Path) -> set[str]:
    """:func:`written_files` of the ``metrics.json`` already in ``out`` (empty when there is none
    or it cannot be read: then every file there counts as the user's)."""
    try:
        report = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return set()
    return written_files(report) if isinstance(report, dict) else set()


@contextmanager
def staged_output(out: str | Path, previous: Collection[str] = ()) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; on success it replaces ``out`` in one rename.

    Files of ``out`` that the new output does not have are kept, in every folder (a note a user
    put into ``out/plots/`` stays there): they are hard-linked (or copied) into the new folder
    before the swap; entries of the same name are replaced. Only the files in ``previous``
    (paths relative to ``out``, those an earlier eval.py wrote: :func:`previous_output`) are not
    carried over, so charts of checkpoints no longer evaluated do not linger. The old ``out`` is
    kept under a hidden name until the new one is in place, so on any error, in the body or in
    the swap, ``out`` is left exactly as it was and no temp folder remains.

    Staging folders are named ``.<name>.tmp-<pid>-<random>`` and ``.<name>.old-<pid>-<random>``;
    those of a process that no longer runs (an eval.py killed with SIGKILL) are removed first
    (:func:`recover_stale_staging`).
    """
    out = Path(out)
    recover_stale_staging(out)
    out = check_output_dir(out)
    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    try:
        yield tmp
        swap_in(tmp, out, set(previous))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a swap


def _staging_pattern(out: Path, with_pid: bool = True) -> re.Pattern[str]:
    """Names of :func:`staged_output`'s folders beside ``out`` (``with_pid=False``: the names
    without a process id that earlier versions used)."""
    pid = r"(?P<pid>\d+)-" if with_pid else ""
    return re.compile(rf"\.{re.escape(out.name)}\.(?P<kind>tmp|old)-{pid}[a-z0-9_]{{8}}")


def recover_stale_staging(out: Path) -> None:
    """Remove the staging folders beside ``out`` whose eval.py no longer runs.

    When ``out`` is missing because the process was killed mid-swap (its previous content moved
    aside, the new output not yet in place), the previous content is put back first, with a
    note. Folders of a running process (a concurrent eval.py) are left alone; folders named
    without a process id are only named in a warning (their process cannot be told).
    """
    parent = out.resolve().parent
    if not parent.is_dir():
        return
    pattern, legacy = _staging_pattern(out), _staging_pattern(out, with_pid=False)
    unknown = []
    for entry in sorted(parent.iterdir()):
        if legacy.fullmatch(entry.name):
            unknown.append(entry.name)
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir() or process_running(int(match["pid"])):
            continue
        previous = entry / out.name
        if match["kind"] == "old" and previous.is_dir() and not os.path.lexists(out):
            os.rename(previous, out)
            print(f"note: put back {str(out)!r}, moved aside by an eval.py stopped mid-swap",
                  file=sys.stderr)  # fmt: skip
        shutil.rmtree(entry, ignore_errors=True)
    if unknown:
        print(
            f"warning: {unknown} beside --out {str(out)!r} look like staging folders of an "
            f"earlier eval.py; remove them if no eval.py is writing to {str(out)!r}",
            file=sys.stderr,
        )


def swap_in(new: Path, out: Path, previous: Collection[str] = ()) -> None:
    """Make folder ``new`` the folder ``out``, keeping ``out``'s files that ``new`` lacks (except
    those in ``previous``; see :func:`staged_output`).

    ``out`` is renamed aside, ``new`` renamed to ``out`` and the old folder removed; a failed
    rename puts the old folder back.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, out.stat().st_mode & 0o7777 if out.is_dir() else 0o777 & ~umask)
    if not out.is_dir():
        os.rename(new, out)
        return
    _carry_over(out, new, set(previous), "")
    parent = out.resolve().parent
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=parent))
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


def _carry_over(old: Path, new: Path, previous: set[str], prefix: str) -> None:
    """Link the entries of folder ``old`` that ``new`` lacks into ``new``, in sub-folders too;
    entries whose path (``prefix`` + name) is in ``previous`` are dropped."""
    for entry in old.iterdir():
        rel, target = prefix + entry.name, new / entry.name
        if rel in previous:
            continue
        if not os.path.lexists(target):
            _link_or_copy(entry, target)
        elif _real_dir(entry) and _real_dir(target):
            _carry_over(entry, target, previous, rel + "/")


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


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
    Gaussian denoiser, the median Pearson r of the sample agreement with each closed-form
    sampler, and its charts (``folder/plots``); then a summary table, the twin table, the
    transition, twins, phase-diagram and shared-errors charts, the shared errors as a table (one
    row per pair, probe kind and sigma), and the per-sigma curves of every checkpoint as tables
    with line plots (:mod:`.curves`: distances, patch sizes, linearity).
    """
    import wandb

    from .curves import curve_rows, merge_rows, record_curves, wandb_line_plots

    run = wandb.init(
        project=project,
        name=name,
        dir=str(folder),
        job_type="eval",
        config=report["settings"],
    )
    rows, curves = [], {}
    for rec in report["checkpoints"]:
        merge_rows(curves, curve_rows(rec["label"], rec["epoch"], record_curves(rec)))
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
    for key in (
        "transition",
        "transition_locality",
        "twins_plot",
        "phase_diagram",
        "pairwise_plot",
    ):
        if report.get(key):
            log[key] = wandb.Image(str(folder / report[key]))
    if report.get("twins"):
        columns = ["num_train", "twin_cos_median", "train_cos_median", "reproducibility"]
        rows = [[t.get(c) for c in columns] for t in report["twins"]]
        log["twins"] = wandb.Table(columns=columns, data=rows)
    if report.get("pairwise"):
        columns = ["run_a", "run_b", "kind", "sigma", "mse_between", "mse_a_empirical"]
        columns += ["mse_b_empirical", "error_cosine"]
        rows = [
            [a, b, kind, s, between, to_a, to_b, cos]
            for pair in report["pairwise"]
            for a, b in [pair["runs"]]
            for kind in pair["mse_between"]
            for s, between, to_a, to_b, cos in zip(
                pair["sigmas"],
                pair["mse_between"][kind],
                pair["mse_to_empirical"][a][kind],
                pair["mse_to_empirical"][b][kind],
                pair["error_cosine"][kind],
            )
        ]
        log["pairwise"] = wandb.Table(columns=columns, data=rows)
    run.log(log | wandb_line_plots(curves))
    run.finish()
