"""All-or-nothing output folders, strict JSON, and what the charts actually plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from lightning_pspc.evaluation import probe_sigmas, report, staged_output, write_json_atomic
from lightning_pspc.evaluation.plots import (
    heatmap_figure,
    mse_vs_sigma_figure,
    save_figure,
    transition_figure,
)
from lightning_pspc.evaluation.plots.common import mosaic, tile_centre, tile_start
from tests.helpers import exited_pid


def test_write_json_atomic_is_strict_json(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": [1.0, math.nan], "b": {"c": math.inf}})
    assert json.loads(path.read_text()) == {"a": [1.0, None], "b": {"c": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left


def test_staged_output_moves_everything_or_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    (out / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out) as tmp:
        (tmp / "metrics.json").write_text("new")
        raise RuntimeError("evaluation failed half-way")
    assert (out / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # temp folder removed
    with staged_output(out) as tmp:
        (tmp / "metrics.json").write_text("new")
        (tmp / "plots").mkdir()
        (tmp / "plots" / "a.png").write_bytes(b"png")
    assert (out / "metrics.json").read_text() == "new" and (out / "keep.txt").read_text() == "old"
    assert (out / "plots" / "a.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"), staged_output(tmp_path / "file"):
        pass


def _old_output(out):
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old.png").write_bytes(b"old")
    (out / "metrics.json").write_text("old")
    (out / "transition.png").write_bytes(b"old")
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("mine")


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_failed_swap_leaves_the_old_output_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _old_output(out)
    before = _tree(out)
    rename = os.rename

    def failing_swap(src, dst):
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError("disk full")
        rename(src, dst)

    monkeypatch.setattr(report.os, "rename", failing_swap)
    with pytest.raises(OSError, match="disk full"), staged_output(out) as tmp:
        (tmp / "metrics.json").write_text("new")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden folder left
    monkeypatch.setattr(report.os, "rename", rename)
    with staged_output(out) as tmp:  # the swap: new output, the user's own files kept
        (tmp / "metrics.json").write_text("new")
    assert _tree(out) == {"metrics.json": b"new", "notes/mine.txt": b"mine"} | {
        k: v for k, v in before.items() if k.startswith(("plots", "transition"))
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_folder_that_holds_a_run_or_is_read_only_is_refused_up_front(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "plots").mkdir()
    for name in ("config.yaml", "last.ckpt"):
        (run / name).write_text("x")
        with pytest.raises(ValueError, match=r"holds a training run.*--out"):
            report.check_output_dir(run)
        (run / name).unlink()
    out = tmp_path / "ro"
    out.mkdir()
    access = os.access
    monkeypatch.setattr(report.os, "access", lambda p, m: Path(p) != out and access(p, m))
    with pytest.raises(ValueError, match="not writable"), staged_output(out):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "run"]


def _records():
    bands = lambda v: {"train": {"low": v, "mid": 2 * v, "high": 3 * v}}  # noqa: E731
    return [
        {"num_train": 64, "memorized_fraction": 0.5, "bands": {"empirical": bands(0.2)}},
        {"num_train": 16, "memorized_fraction": 1.0, "bands": {"empirical": bands(0.1)}},
        {"num_train": 64, "memorized_fraction": 0.3, "bands": {"empirical": bands(0.4)}},
        {"num_train": 1024, "memorized_fraction": 0.0, "bands": {"empirical": bands(0.8)}},
    ]


def test_transition_figure_plots_sizes_on_a_log_axis(tmp_path):
    fig = transition_figure(_records())
    memo, emp = fig.axes
    (line,) = memo.lines
    assert list(line.get_xdata()) == [16, 64, 1024] and memo.get_xscale() == "log"
    assert list(line.get_ydata()) == pytest.approx([1.0, 0.4, 0.0])  # runs at one N averaged
    mids = [ln for ln in emp.lines if ln.get_label() == "mid sigma, train"]
    assert list(mids[0].get_ydata()) == pytest.approx([0.2, 0.6, 1.6])
    assert save_figure(fig, tmp_path / "t.png").stat().st_size > 5000


def test_mse_chart_draws_every_epoch_and_heatmap_every_cell():
    sigmas = probe_sigmas([0.1, 1.0, 10.0])
    history = [
        (e, {"train": torch.full((3,), float(e)), "reverse": torch.ones(3)}) for e in (1, 2, 3)
    ]
    fig = mse_vs_sigma_figure(sigmas, history, "pspc")
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    assert list(fig.axes[0].lines[-1].get_ydata()) == [3.0, 3.0, 3.0]  # this epoch, drawn last
    heat = heatmap_figure(sigmas, [1, 2], {"train": torch.rand(2, 3)})
    assert heat.axes[0].images[0].get_array().shape == (2, 3)


def test_mosaic_layout():
    tiles = torch.stack([torch.full((2, 1, 3, 3), -1.0), torch.full((2, 1, 3, 3), 1.0)], 1)
    image = mosaic(tiles, pad=1)  # 2 rows x 2 columns of 3x3 tiles, 1-pixel white gaps and border
    assert image.shape == (9, 9)
    assert image[0, 0] == 1.0  # border
    assert image[1, 1] == 0.0 and image[1, 5] == 1.0  # black tile, then white tile, row 0
    assert image[4, 1] == 1.0 and image[5, 1] == 0.0  # the gap, then the black tile of row 1
    assert (tile_start(1, 3, 1), tile_centre(1, 3, 1)) == (5, 6)


def test_the_users_files_in_eval_folders_stay_and_charts_eval_wrote_before_go(tmp_path):
    out = tmp_path / "out"
    (out / "plots" / "notes").mkdir(parents=True)
    (out / "plots" / "gone_run.png").write_bytes(b"old")  # eval.py's, of a run not evaluated now
    (out / "plots" / "run.png").write_bytes(b"old")  # eval.py's, written again now
    (out / "plots" / "mine.txt").write_text("mine")
    (out / "plots" / "notes" / "n.txt").write_text("mine too")
    (out / "transition.png").write_bytes(b"old")  # eval.py's, not written now
    old = {"checkpoints": [{"plots": ["gone_run.png", "run.png"]}], "transition": "transition.png"}
    (out / "metrics.json").write_text(json.dumps(old))
    assert report.previous_output(out) == {
        "metrics.json",
        "plots/gone_run.png",
        "plots/run.png",
        "transition.png",
    }
    new = json.dumps({"checkpoints": [{"plots": ["run.png"]}], "transition": None})
    with staged_output(out, report.previous_output(out)) as tmp:
        (tmp / "plots").mkdir()
        (tmp / "plots" / "run.png").write_bytes(b"new")
        (tmp / "metrics.json").write_text(new)
    assert _tree(out) == {
        "metrics.json": new.encode(),
        "plots/run.png": b"new",
        "plots/mine.txt": b"mine",
        "plots/notes/n.txt": b"mine too",
    }


def test_staging_folders_of_a_killed_eval_are_removed_and_a_half_swap_put_back(tmp_path, capsys):
    out, dead = tmp_path / "out", exited_pid()
    half_written = tmp_path / f".out.tmp-{dead}-ab_c1234"  # SIGKILL while evaluating
    (half_written / "plots").mkdir(parents=True)
    moved_aside = tmp_path / f".out.old-{dead}-efgh5678"  # SIGKILL between the two renames
    (moved_aside / "out").mkdir(parents=True)
    (moved_aside / "out" / "keep.txt").write_text("mine")
    kept = [
        tmp_path / f".out.tmp-{os.getppid()}-abcd1234",  # an eval.py still running
        tmp_path / f".other.tmp-{dead}-abcd1234",  # beside another --out
        tmp_path / ".out.tmp-notes",  # not eval.py's naming
        tmp_path / ".out.tmp-qwer1234",  # named before process ids: only warned about
    ]
    for folder in kept:
        folder.mkdir()
    with staged_output(out) as tmp:
        (tmp / "metrics.json").write_text("new")
    assert _tree(out) == {"metrics.json": b"new", "keep.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *(p.name for p in kept)])
    err = capsys.readouterr().err
    assert "note: put back" in err and "moved aside by an eval.py stopped mid-swap" in err
    assert "warning: ['.out.tmp-qwer1234'] beside --out" in err
