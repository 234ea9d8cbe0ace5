"""A run saved before the package's modules moved still resumes and evaluates, and every old
import path still gives the names it had (``tests/e2e/fixtures``: a tiny UNet run of the small
preset written by ``train.py`` before the move, and the public names of each moved module; the
tables of the old evaluation command, ``build_evaluation``, ``locality_json`` and
``LOCAL_REFERENCES`` are left out: the option groups, ``EvalSettings.build_evaluation``, the
members' reports and ``REFERENCE_DENOISERS`` replace them)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_pspc.commands import train as cli
from lightning_pspc.commands.evaluate import main as eval_main
from lightning_pspc.runs import read_checkpoint
from tests.helpers import REPO, clean_env

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = json.loads((FIXTURES / "legacy_names.json").read_text())


@pytest.mark.parametrize("module", sorted(NAMES))
def test_old_module_paths_import_with_their_names(module):
    if module.endswith("els_triton"):
        pytest.importorskip("triton")
    mod = importlib.import_module(module)
    missing = [name for name in NAMES[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"


def test_old_class_paths_are_the_same_classes():
    from lightning_pspc.callbacks.locality import LocalityMonitor
    from lightning_pspc.evaluation.engine import DenoiserComparer
    from lightning_pspc.metrics.twins import TwinSimilarity

    from lightning_pspc import callbacks, metrics

    assert LocalityMonitor is callbacks.LocalityMonitor
    assert TwinSimilarity is metrics.TwinSimilarity
    assert DenoiserComparer.__module__ == "lightning_pspc.evaluation.members.comparison"


def test_python_m_old_cli_path_still_runs():
    out = subprocess.run(
        [sys.executable, "-m", "lightning_pspc.cli", "fit", "--help"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--run_name" in out.stdout


@pytest.fixture()
def legacy_run(tmp_path) -> Path:
    run = tmp_path / "legacy_unet"
    shutil.copytree(FIXTURES / "legacy_run", run)
    return run


def test_a_run_saved_before_the_move_resumes(legacy_run, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    before = read_checkpoint(legacy_run / "last.ckpt")["global_step"]
    cli.main(
        [
            "fit",
            f"--config={legacy_run / 'config.yaml'}",
            f"--ckpt_path={legacy_run / 'last.ckpt'}",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=CSVLogger",
        ]
    )
    after = read_checkpoint(legacy_run / "last.ckpt")
    assert after["global_step"] > before and after["epoch"] == 1


def test_a_run_saved_before_the_move_evaluates(legacy_run, tmp_path):
    out = tmp_path / "eval"
    args = ["--ckpt", str(legacy_run / "last.ckpt"), "--out", str(out), "--no-progress"]
    small = ["--num-train-probes", "2", "--num-heldout-probes", "2", "--num-reverse-probes", "1"]
    small += ["--num-samples", "4", "--num-steps", "4", "--locality-probes", "1"]
    small += ["--locality-stride", "7", "--num-agreement-samples", "2"]
    assert eval_main([*args, *small]) == 0
    report = json.loads((out / "metrics.json").read_text())
    (record,) = report["checkpoints"]
    assert record["run"] == "legacy_unet" and record["num_train"] == 16
    assert set(record["mse"]) == {"empirical", "pspc", "gaussian"}
