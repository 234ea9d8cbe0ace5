"""eval.py and sweep.py end to end: tiny runs written by train.py, metrics.json, bad checkpoints."""

from __future__ import annotations

import errno
import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch

from lightning_pspc import runs
from lightning_pspc.commands import sweep
from lightning_pspc.commands.evaluate import main as eval_main
from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import heun_sample
from lightning_pspc.evaluation import (
    EvalSeeds,
    fixed_noise,
    forward_probes,
    probe_sigmas,
    report,
)
from lightning_pspc.evaluation import checkpoints as evaluate
from lightning_pspc.metrics import memorized_mask
from tests.e2e.sweeps import EVAL_ARGS, LINEAR_ARGS, TINY_TRAIN, sweep_in_process
from tests.helpers import REPO, popen_stub


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """``sweep.py`` over N = 16 and 48 with tiny runs; train.py runs in-process (same arguments)."""
    root = tmp_path_factory.mktemp("sweep")
    sizes = ["--sizes", "48", "16", "--no-twins", "--jobs=1"]
    assert sweep_in_process(root, "t", *sizes, *EVAL_ARGS, "--", *TINY_TRAIN) == 0
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
        good.parent: "is a folder, not a checkpoint file; it holds ['last.ckpt']. Fix: pass",
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
    code = eval_main([*args, "--references", "empirical", *LINEAR_ARGS])
    assert code == 0
    (run,) = (tmp_path / "ev" / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # per checkpoint: MSE to empirical, neighbours, panel, generalization vs sigma, agreement
    # grid, locality patch size vs sigma and heatmaps, linear distillation vs sigma; then the
    # phase diagram (the sweep's runs keep a memorization history)
    assert report["phase_diagram"] == "phase_diagram.png"
    assert len(list((run / "files" / "media" / "images").rglob("*.png"))) == 8 + 1
    # 16x16 images on CPU: auto turns the linear distillation on, its linear map sampled too
    (rec,) = report["checkpoints"]
    assert rec["linear_distillation"]["num_probes"] == 300
    assert len(rec["linear_distillation"]["gaussian_nmse"]) == 18
    assert "linear_distilled" in rec["agreement"]
    # the per-sigma curves as tables with line plots: every finite distance of the record, once
    tables = run / "files" / "media" / "table" / "curves"
    charts = {p.name.split("_table")[0] for p in tables.glob("*.table.json")}
    assert charts == {"distances", "patch_sizes", "linearity"}
    distances = json.loads(next(tables.glob("distances_*.table.json")).read_text())
    assert distances["columns"] == ["run", "epoch", "series", "line", "sigma", "value"]
    expected = [
        (f"{ref} {kind}", s, v)
        for ref, kinds in rec["mse"].items()
        for kind, values in kinds.items()
        for s, v in zip(rec["sigmas"], values)
        if v is not None
    ]
    assert sorted((r[2], r[4], r[5]) for r in distances["data"]) == sorted(expected)
    assert {(r[0], r[1]) for r in distances["data"]} == {(rec["label"], rec["epoch"])}
    assert _metrics(swept)["checkpoints"][1]["num_train"] == 48
    assert report["transition"] is None


def test_shared_errors_pair_runs_of_the_same_data_only(swept, tmp_path, capsys):
    """The same checkpoint under two run folders: MSE 0 between them and error cosine 1; the
    run trained on other data is paired with neither (skipped, with one line)."""
    twin = tmp_path / "copy-n00016"
    shutil.copytree(swept / "runs" / "t-n00016", twin)
    ckpts = [
        twin / "last.ckpt",
        *(swept / "runs" / r / "last.ckpt" for r in ("t-n00016", "t-n00048")),
    ]
    args = [a for c in ckpts for a in ("--ckpt", str(c))] + ["--out", str(tmp_path / "ev")]
    assert eval_main([*args, *EVAL_ARGS, "--references", "empirical"]) == 0
    assert "pair(s) of checkpoints trained on different data skipped" in capsys.readouterr().err
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    (pair,) = report["pairwise"]
    assert pair["runs"] == ["copy-n00016/last", "t-n00016/last"]
    for kind in ("forward", "reverse"):
        assert pair["mse_between"][kind] == [0.0] * len(pair["sigmas"])
        assert pair["error_cosine"][kind] == pytest.approx([1.0] * len(pair["sigmas"]))
        a, b = pair["mse_to_empirical"].values()
        assert a[kind] == b[kind]
    assert {tuple(p["runs"]) for p in report["pairwise_skipped"]} == {
        ("copy-n00016/last", "t-n00048/last"),
        ("t-n00016/last", "t-n00048/last"),
    }
    assert (tmp_path / "ev" / report["pairwise_plot"]).stat().st_size > 10_000


def _eval_error(args: list[str], capsys) -> str:
    code = eval_main([*args, *EVAL_ARGS])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and err.count("\n") == 0, err
    return err


def test_too_few_linear_probes_for_the_images_are_refused_before_any_work(swept, tmp_path, capsys):
    ckpt = ["--ckpt", str(swept / "runs" / "t-n00016" / "last.ckpt")]
    # 256 = D of the sweep preset's 16x16 images
    args = [*ckpt, "--out", str(tmp_path / "out"), *EVAL_ARGS, "--linear-probes", "256"]
    code = eval_main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("error: --linear-probes 256 must exceed D = C*H*W = 256")
    assert not (tmp_path / "out").exists()


def test_bad_out_device_or_wandb_login_is_refused_before_any_work(
    swept, tmp_path, capsys, monkeypatch
):
    run = swept / "runs" / "t-n00016"
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    ckpt = ["--ckpt", str(run / "last.ckpt")]
    err = _eval_error([*ckpt, "--out", str(run)], capsys)  # would replace the run's plots/
    assert str(run) in err and "training run" in err and "Fix:" in err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    out = tmp_path / "ro"
    out.mkdir()
    access = os.access
    monkeypatch.setattr(report.os, "access", lambda p, m: Path(p) != out and access(p, m))
    assert "not writable" in _eval_error([*ckpt, "--out", str(out)], capsys)
    monkeypatch.setattr(report.os, "access", access)
    for device in ("foo", "cuda:7"):
        err = _eval_error([*ckpt, "--out", str(tmp_path / "ev"), "--device", device], capsys)
        assert repr(device) in err and ("--device cpu" in err or "auto, cpu" in err)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HOME", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    err = _eval_error([*ckpt, "--out", str(tmp_path / "ev"), "--wandb"], capsys)
    assert "WANDB_MODE=offline" in err and "drop --wandb" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


def test_a_wandb_failure_after_the_work_keeps_the_results(swept, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken(*args, **kwargs):
        raise RuntimeError("wandb.init() timed out")

    monkeypatch.setattr(evaluate, "log_report_to_wandb", broken)
    ckpt = swept / "runs" / "t-n00016" / "last.ckpt"
    args = ["--ckpt", str(ckpt), "--out", str(tmp_path / "ev"), "--wandb"]
    assert eval_main([*args, *EVAL_ARGS, "--references", "empirical"]) == 0
    err = capsys.readouterr().err
    assert "warning: W&B logging failed" in err and "timed out" in err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoints"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]


def test_checkpoints_of_other_image_shapes_are_refused_and_unequal_steps_warned(capsys):
    def run(label, shape, n, step):
        images = types.SimpleNamespace(shape=(n, *shape))
        dm = types.SimpleNamespace(image_shape=shape, train_images=lambda: images)
        return evaluate.LoadedRun(Path(label), label, None, dm, {"global_step": step})

    with pytest.raises(evaluate.EvalError, match=r"different shapes.*own eval.py call"):
        evaluate.check_comparable([run("a", (1, 28, 28), 16, 2), run("b", (3, 32, 32), 64, 2)])
    evaluate.check_comparable([run("a", (1, 28, 28), 16, 2), run("b", (1, 28, 28), 64, 2)])
    assert capsys.readouterr().err == ""
    evaluate.check_comparable([run("a", (1, 28, 28), 16, 2), run("b", (1, 28, 28), 64, 4)])
    assert "warning: the checkpoints were saved after different step counts" in (
        capsys.readouterr().err
    )


def _stub_sweep(monkeypatch) -> tuple[list[list[str]], dict]:
    """Record sweep.py's training commands and evaluation call instead of running them."""
    calls, evaluated = [], {}

    def evaluate_stub(ckpts, out, *args, **kwargs):
        evaluated.update(ckpts=ckpts, out=out)
        return {"checkpoints": []}

    monkeypatch.setattr(sweep, "Popen", popen_stub(lambda cmd: calls.append(cmd) or 0))
    monkeypatch.setattr(sweep, "evaluate_checkpoints", evaluate_stub)
    return calls, evaluated


def test_sweep_resolves_every_path_against_the_callers_directory(tmp_path, monkeypatch, capsys):
    caller = tmp_path.resolve() / "caller"
    shutil.copytree(REPO / "configs", caller / "presets")
    monkeypatch.chdir(caller)
    calls, evaluated = _stub_sweep(monkeypatch)
    args = ["--sizes", "16", "48", "--no-twins", "--name", "t", "--run-root=runs", "--out=ev"]
    args.append("--no-progress")
    assert sweep.main(["--config=presets/sweep_fmnist.yaml", *args]) == 1  # stub: no records
    runs_dir = caller / "runs"
    assert [c[1:4] for c in calls] == [["-m", "lightning_pspc.commands.train", "fit"]] * 2
    for cmd, name in zip(calls, ["t-n00016", "t-n00048"], strict=True):
        assert f"--config={caller / 'presets' / 'sweep_fmnist.yaml'}" in cmd
        assert f"--run_root={runs_dir}" in cmd and f"--run_name={name}" in cmd
    assert evaluated["out"] == caller / "ev"
    assert evaluated["ckpts"] == [runs_dir / n / "last.ckpt" for n in ("t-n00016", "t-n00048")]
    assert (caller / "ev" / "sweep.json").is_file()
    # a relative --config is the caller's file, never the repository's preset of that name
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--config=configs/unet_fmnist_small.yaml", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "configs/unet_fmnist_small.yaml" in err and str(caller) in err
    assert len(calls) == 2


def test_sweep_trains_runs_side_by_side_each_with_its_threads_and_log(
    tmp_path, monkeypatch, capsys
):
    events: list = []
    _, _ = _stub_sweep(monkeypatch)
    failing: set[str] = set()
    monkeypatch.setattr(
        sweep, "Popen", popen_stub(lambda cmd: 3 if cmd[6] in failing else 0, events)
    )
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 4)
    root = tmp_path / "runs"
    args = ["--sizes", "16", "48", "--no-twins", "--jobs=2", "--name=t", f"--run-root={root}"]
    assert sweep.main([*args, "--no-progress"]) == 1  # stub evaluation: no records
    assert [e[0] for e in events[:3]] == ["start", "start", "end"]  # both started at once
    assert {e[2]["OMP_NUM_THREADS"] for e in events if e[0] == "start"} == {"2"}
    log = (root / "logs" / "t-n00048.log").read_text()
    assert log == "output of --run_name=t-n00048\n"
    # a failure: the run already started finishes, no other starts, its log tail is printed
    events.clear()
    capsys.readouterr()
    failing.add("--run_name=t-n00016")
    args[1:3] = ["16", "48", "64"]
    assert sweep.main([*args, "--skip-existing", "--no-progress"]) == 3
    assert [e[1][6] for e in events if e[0] == "start"] == [
        "--run_name=t-n00016",
        "--run_name=t-n00048",
    ]
    err = capsys.readouterr().err
    assert "output of --run_name=t-n00016" in err and "training N=16 failed (exit 3)" in err
    with pytest.raises(SystemExit):
        sweep.main([*args, "--jobs=-1"])


def _fake_run(folder: Path, epochs_done: int) -> None:
    """A run folder of a one-epoch run whose last.ckpt has ``epochs_done`` epochs."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("trainer:\n  max_epochs: 1\n")
    progress = {"total": {"processed": epochs_done}}
    loops = {"fit_loop": {"epoch_progress": progress}}
    torch.save({"state_dict": {}, "global_step": 2, "loops": loops}, folder / "last.ckpt")


def test_sweep_over_existing_runs_names_skip_existing_and_resumes_half_trained_ones(
    tmp_path, monkeypatch, capsys
):
    root = tmp_path / "runs"
    _fake_run(root / "t-n00016", epochs_done=1)
    _fake_run(root / "t-n00048", epochs_done=0)  # interrupted in its first epoch
    calls, _ = _stub_sweep(monkeypatch)
    args = ["--sizes", "16", "48", "64", "--no-twins", "--name", "t", f"--run-root={root}"]
    args.append("--no-progress")
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--skip-existing" in err and "t-n00048" in err
    assert calls == []  # nothing trained
    assert sweep.main([*args, "--skip-existing"]) == 1  # stub: no records
    out = capsys.readouterr().out
    assert "reusing the finished run" in out and "resuming the half-trained run" in out
    assert [c[-1] for c in calls] == [f"--ckpt_path={root / 't-n00048' / 'last.ckpt'}"] + [
        "--data.num_train=64"
    ]


def test_metrics_json_has_locality_and_the_locality_transition(swept):
    report = _metrics(swept)
    assert report["transition_locality"] == "transition_locality.png"
    assert (swept / "eval" / "transition_locality.png").stat().st_size > 10_000
    for rec in report["checkpoints"]:
        loc = rec["locality"]
        assert loc["sigmas"] == [10.0, 3.0, 1.0, 0.5, 0.2, 0.05]
        for key in ("f50", "f75", "f95"):
            sizes = loc["sensitivity_patch_size"][key]
            assert len(sizes) == 6 and all(1 <= v <= 28 for v in sizes)
        for kind in ("pspc", "ls"):
            best = loc["best_fit_patch_size"][kind]
            assert all(p in loc["best_fit_candidates"][kind] for p in best)


def test_sweep_over_a_run_without_a_readable_last_ckpt_gives_the_sweeps_fix(
    tmp_path, monkeypatch, capsys
):
    run = tmp_path / "runs" / "t-n00016"
    _fake_run(run, epochs_done=1)
    (run / "last.ckpt").rename(run / "best.ckpt")  # stopped between the two saves of an epoch
    calls, _ = _stub_sweep(monkeypatch)
    args = ["--sizes", "16", "--no-twins", "--name", "t", f"--run-root={run.parent}"]
    for why in ("holds ['best.ckpt'] but no last.ckpt", "is not a readable PyTorch checkpoint"):
        assert sweep.main([*args, "--skip-existing", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and why in err
        assert f"Fix: move or delete {str(run)!r} to train that size again" in err
        assert "--ckpt_path" not in err  # a train.py flag the sweep's user never passed
        (run / "last.ckpt").write_bytes(b"half a checkpoint")
    assert calls == []


def test_sweep_without_twins_checks_every_size_before_training(tmp_path, monkeypatch, capsys):
    calls, _ = _stub_sweep(monkeypatch)
    args = ["--sizes", "16", "60000", "--no-twins", "--name", "t", f"--run-root={tmp_path}"]
    with pytest.raises(SystemExit) as info:
        sweep.main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--sizes up to 60000" in err and "at most 59872" in err
    assert "Fix: drop sizes above the limit" in err
    assert calls == [] and not list(tmp_path.iterdir())  # N = 16 was not trained first
    assert (sweep.REPO_CONFIGS / Path(sweep.DEFAULT_CONFIG).name).is_file()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_eval_keeps_the_users_files_and_a_full_disk_leaves_out_as_it_was(
    swept, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "ev"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "mine.txt").write_text("mine")  # before: lost when plots/ was replaced
    (out / "plots" / "old_run.png").write_bytes(b"png")  # charts of an earlier evaluation
    (out / "transition.png").write_bytes(b"png")
    earlier = {"checkpoints": [{"plots": ["old_run.png"]}], "transition": "transition.png"}
    (out / "metrics.json").write_text(json.dumps(earlier))
    args = ["--ckpt", str(swept / "runs" / "t-n00016" / "last.ckpt"), "--out", str(out)]
    args += [*EVAL_ARGS, "--references", "empirical", "--locality-probes", "0"]
    args += ["--num-agreement-samples", "0", "--num-linearity-pairs", "0"]  # the cheap members
    assert eval_main(args) == 0
    first = _tree(out)
    written = report.written_files(json.loads(first["metrics.json"]))
    assert set(first) == written | {"plots/mine.txt"} and len(written) > 3
    assert first["plots/mine.txt"] == b"mine"

    def disk_fills_up(runs, pairs, out, *args):  # while the results are being written
        with report.staged_output(out) as tmp:
            (tmp / "metrics.json").write_text('{"checkpoints": [')
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate, "write_report", disk_fills_up)
    code = eval_main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"error: disk full while writing the results beside --out {str(out)!r}")
    assert f"--out {str(out)!r} is left as it was. Fix: free space" in err
    assert _tree(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["ev"]
