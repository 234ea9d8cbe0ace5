"""sweep.py --twins and eval.py's generalization measures end to end (tiny Fashion-MNIST runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lightning_pspc import runs
from lightning_pspc.commands.evaluate import main as eval_main
from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import heun_sample
from lightning_pspc.evaluation import EvalSeeds, fixed_noise
from lightning_pspc.metrics import TwinSimilarity, paired_pearson_correlation
from tests.e2e.sweeps import EVAL_ARGS, TINY_TRAIN, sweep_in_process

GEN_ARGS = [
    *EVAL_ARGS,
    "--references",  # no PSPC in the comparison: the costliest part of a tiny evaluation
    "empirical",
    "gaussian",
    "--num-linearity-pairs",
    "2",
    "--num-agreement-samples",
    "3",
    "--agreement-references",
    "empirical",
    "pspc",
]


def _sweep(root: Path, *args: str) -> int:
    return sweep_in_process(root, "tw", *args)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    """``sweep.py --twins`` at N = 8 (two 2-epoch runs, memorization every epoch, CSV logs)."""
    root = tmp_path_factory.mktemp("twins")
    code = _sweep(
        root,
        "--sizes",
        "8",
        "--twins",
        "--history-samples",
        "3",
        *GEN_ARGS,
        "--",
        *TINY_TRAIN,
        "--trainer.max_epochs=2",
        "--trainer.logger=CSVLogger",
    )
    assert code == 0
    return root


def _report(root: Path) -> dict:
    return json.loads((root / "eval" / "metrics.json").read_text())


def _samples(ckpt: Path, num: int, seed: int, steps: int = 4):
    module, dm = runs.load_run(ckpt)
    noise = fixed_noise(num, dm.image_shape, seed)
    with torch.no_grad():
        return heun_sample(module.denoiser, noise, num_steps=steps), dm


def test_twin_runs_pair_up_and_match_a_direct_computation(twins):
    report = _report(twins)
    assert [r["run"] for r in report["checkpoints"]] == ["tw-n00008-a", "tw-n00008-b"]
    assert [t["num_train"] for t in report["twins"]] == [8]
    assert report["twins"][0]["runs"] == ["tw-n00008-a/last", "tw-n00008-b/last"]
    seed = EvalSeeds.derive(0).sample_noise
    run_dir = twins / "runs"
    samples_a, dm_a = _samples(run_dir / "tw-n00008-a" / "last.ckpt", 4, seed)
    samples_b, dm_b = _samples(run_dir / "tw-n00008-b" / "last.ckpt", 4, seed)
    # the halves are disjoint subsets of one 2N set
    flat_a, flat_b = dm_a.train_images().flatten(1), dm_b.train_images().flatten(1)
    assert not (torch.cdist(flat_a, flat_b) == 0).any()
    metric = TwinSimilarity(dm_a.train_images(), dm_b.train_images())
    metric.update(samples_a, samples_b)
    expected = {k: float(v) for k, v in metric.compute().items()}
    got = report["twins"][0]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert 0 <= got["reproducibility"] <= 1 and got["threshold"] == 0.95
    assert (twins / "eval" / "twins.png").stat().st_size > 5000
    assert report["twins_plot"] == "twins.png" and report["transition"] is None  # one N


def test_generalization_and_agreement_keys_beside_the_old_ones(twins):
    rec = _report(twins)["checkpoints"][0]
    for key in ("num_train", "memorized_fraction", "bands", "mse", "nearest_neighbour", "epoch"):
        assert key in rec
    gen = rec["generalization"]
    assert len(gen["linearity"]) == len(gen["gaussian_nmse"]) == len(gen["sigmas"]) == 18
    assert set(gen["r_squared"]) == {"empirical", "gaussian"}
    assert all(-1 <= v <= 1 for v in gen["linearity"]) and min(gen["gaussian_nmse"]) >= 0
    assert gen["pool"] == "heldout" and gen["num_pairs"] == 2
    agreement = rec["agreement"]
    assert agreement["num_samples"] == 3 and set(agreement) == {"empirical", "pspc", "num_samples"}
    # recompute the network's and the empirical denoiser's samples: the agreement's noise is the
    # first 3 of the memorization's 4 (whose network samples it reuses)
    ckpt = twins / "runs" / "tw-n00008-a" / "last.ckpt"
    net, dm = _samples(ckpt, 4, EvalSeeds.derive(0).sample_noise)
    net = net[:3]
    noise = fixed_noise(4, dm.image_shape, EvalSeeds.derive(0).sample_noise)[:3]
    emp = heun_sample(EmpiricalDenoiser(dm.reference_images()), noise, num_steps=4)
    pearson = paired_pearson_correlation(net, emp)
    assert agreement["empirical"]["pearson"]["median"] == pytest.approx(
        float(pearson.median()), rel=1e-4, abs=1e-6
    )
    names = set(rec["plots"])
    assert {n for n in names if "agreement" in n or "generalization" in n} == {
        "tw-n00008-a_last_agreement_grid.png",
        "tw-n00008-a_last_generalization_vs_sigma.png",
    }


def test_memorization_history_and_phase_diagram(twins):
    report = _report(twins)
    for rec in report["checkpoints"]:
        history = rec["memorization_history"]
        assert [h["epoch"] for h in history] == [1, 2]
        assert [h["images_seen"] for h in history] == [32, 64]  # epoch_length 32
        assert all(0 <= h["memorized_fraction"] <= 1 for h in history)
    # the last history point is the monitor's 3 samples of the final EMA network
    assert report["phase_diagram"] == "phase_diagram.png"
    assert (twins / "eval" / "phase_diagram.png").stat().st_size > 5000


def test_a_missing_or_doubled_twin_is_one_error_and_nothing_written(twins, tmp_path, capsys):
    run_dir = twins / "runs"
    a8, b8 = run_dir / "tw-n00008-a" / "last.ckpt", run_dir / "tw-n00008-b" / "last.ckpt"
    copy = tmp_path / "tw-n00008-a-copy"
    shutil.copytree(a8.parent, copy)
    cases = {
        (a8,): ("tw-n00008-a", "no partner trained on subset 'b'"),
        (a8, b8, copy / "last.ckpt"): ("tw-n00008-a-copy", "do not pair up"),
    }
    for paths, (named, why) in cases.items():
        out = tmp_path / "out"
        args = [a for p in paths for a in ("--ckpt", str(p))]
        code = eval_main([*args, "--out", str(out), *GEN_ARGS])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and err.startswith("error:")
        assert named in err and why in err
        assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_twins_with_a_size_the_data_cannot_split(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _sweep(tmp_path, "--sizes", "16", "40000", "--twins", "--", "--data.num_heldout=16")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "twin runs (the default) with --sizes up to 40000" in err
        and "80000" in err
        and "Fix:" in err
    )
    assert not (tmp_path / "runs").exists()
