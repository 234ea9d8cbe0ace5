"""eval.py and sweep.py end to end: tiny runs written by train.py, metrics.json, bad checkpoints."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lightning_pspc import cli, runs, sweep
from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import heun_sample
from lightning_pspc.evaluation import EvalSeeds, fixed_noise, forward_probes, probe_sigmas
from lightning_pspc.evaluation.command import main as eval_main
from lightning_pspc.metrics import memorized_mask

REPO = Path(__file__).resolve().parents[1]
EVAL_ARGS = [
    "--num-train-probes",
    "2",
    "--num-heldout-probes",
    "2",
    "--num-reverse-probes",
    "1",
    "--num-samples",
    "4",
    "--num-steps",
    "4",
    "--num-linearity-pairs",
    "2",
    "--num-agreement-samples",
    "2",
    "--no-progress",
]
TINY_TRAIN = [
    "--trainer.max_epochs=1",
    "--data.epoch_length=32",
    "--data.batch_size=16",
    "--data.num_heldout=16",
    "--model.net.init_args.model_channels=8",
    "--model.net.init_args.channel_mult=[1]",
    "--trainer.enable_progress_bar=false",
    "--trainer.limit_val_batches=1",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """``sweep.py`` over N = 16 and 48 with tiny runs; train.py runs in-process (same arguments)."""
    root = tmp_path_factory.mktemp("sweep")

    def train_in_process(cmd: list[str]) -> int:
        assert cmd[1:4] == ["-m", "lightning_pspc.cli", "fit"]
        cli.main(cmd[3:])
        return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr(sys, "argv", ["train.py"])
        mp.setattr(sweep.subprocess, "call", train_in_process)
        code = sweep.main(
            [
                f"--config={REPO / 'configs' / 'sweep_fmnist.yaml'}",
                "--sizes",
                "48",
                "16",
                "--name",
                "t",
                f"--run-root={root / 'runs'}",
                f"--out={root / 'eval'}",
                *EVAL_ARGS,
                "--",
                *TINY_TRAIN,
            ]
        )
    assert code == 0
    return root


def _metrics(root: Path) -> dict:
    return json.loads((root / "eval" / "metrics.json").read_text())


def test_sweep_trains_each_size_and_draws_the_transition(swept):
    report = _metrics(swept)
    records = report["checkpoints"]
    assert [r["num_train"] for r in records] == [16, 48]
    assert [r["run"] for r in records] == ["t-n00016", "t-n00048"]
    assert records[0]["global_step"] == records[1]["global_step"] == 2  # same steps for every N
    assert report["transition"] == "transition.png"
    assert (swept / "eval" / "transition.png").stat().st_size > 10_000
    assert json.loads((swept / "eval" / "sweep.json").read_text())["sizes"] == [16, 48]
    for rec in records:
        for name in rec["plots"]:
            assert (swept / "eval" / "plots" / name).stat().st_size > 1000


def test_metrics_json_matches_a_direct_computation(swept):
    rec = _metrics(swept)["checkpoints"][0]
    ckpt = swept / "runs" / "t-n00016" / "last.ckpt"
    meta = torch.load(ckpt, weights_only=True, mmap=True)
    assert rec["checkpoint"] == str(ckpt.resolve())
    assert (rec["epoch"], rec["global_step"]) == (meta["epoch"], meta["global_step"])
    assert set(rec["mse"]) == {"empirical", "pspc", "gaussian"}
    assert all(len(v) == 18 for kinds in rec["mse"].values() for v in kinds.values())
    module, dm = runs.load_run(ckpt)
    sigmas = probe_sigmas()
    probes = forward_probes(dm.train_images(), sigmas, 2, seed=EvalSeeds.derive(0).train_probes)
    with torch.no_grad():
        net = module.denoiser(probes.z, probes.sigma.float())
    emp = EmpiricalDenoiser(dm.reference_images())(probes.z, probes.sigma.float())
    mse = (net.double() - emp.double()).pow(2).flatten(1).mean(1).view(2, 18).mean(0)
    assert rec["mse"]["empirical"]["train"] == pytest.approx(mse.tolist(), rel=1e-4, abs=1e-8)
    noise = fixed_noise(4, dm.image_shape, EvalSeeds.derive(0).sample_noise)
    samples = heun_sample(module.denoiser, noise, num_steps=4)
    expected = memorized_mask(samples, dm.train_images()).double().mean().item()
    assert rec["memorized_fraction"] == pytest.approx(expected)
    assert set(rec["nearest_neighbour"]) == {
        "nn_dist_mean",
        "nn_dist_median",
        "max_cos_mean",
        "max_cos_median",
    }


def test_bad_checkpoints_give_one_error_and_write_nothing(swept, tmp_path, capsys):
    good = swept / "runs" / "t-n00016" / "last.ckpt"
    run_copy = tmp_path / "copy"
    run_copy.mkdir()
    shutil.copy(good.parent / "config.yaml", run_copy / "config.yaml")
    truncated = run_copy / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = run_copy / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 64)
    lonely = tmp_path / "lonely" / "last.ckpt"
    lonely.parent.mkdir()
    shutil.copy(good, lonely)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    cases = {
        tmp_path / "absent.ckpt": "does not exist",
        truncated: "corrupt",
        garbage: "corrupt",
        lonely: "config.yaml",
    }
    for bad, why in cases.items():
        for out in (tmp_path / "out", existing):
            code = eval_main(
                ["--ckpt", str(good), "--ckpt", str(bad), "--out", str(out), *EVAL_ARGS]
            )
            err = capsys.readouterr().err.strip()
            assert code == 2 and err.count("\n") == 0 and err.startswith("error:")
            assert str(bad) in err and why in err and "Fix:" in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".*tmp*"))  # no staging folder left behind


def test_eval_logs_to_wandb_offline(swept, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ckpt = swept / "runs" / "t-n00048" / "last.ckpt"
    args = ["--ckpt", str(ckpt), "--out", str(tmp_path / "ev"), "--wandb", *EVAL_ARGS]
    code = eval_main([*args, "--references", "empirical"])
    assert code == 0
    (run,) = (tmp_path / "ev" / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
    # per checkpoint: MSE to empirical, neighbours, panel, generalization vs sigma, agreement grid
    assert len(list((run / "files" / "media" / "images").rglob("*.png"))) == 5
    assert _metrics(swept)["checkpoints"][1]["num_train"] == 48
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["transition"] is None
