"""train.py / TrainCLI: run folders, config round trip, exact resume, and bad input."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from lightning_pspc.callbacks import EpochLines
from lightning_pspc.commands.train import TrainCLI, main
from lightning_pspc.runs import (
    AtomicCheckpointIO,
    RunSetupError,
    build_from_config,
    checkpoint_io,
    load_run,
    read_checkpoint,
)
from lightning_pspc.runs.checkpoints import CHECKSUM_KEY
from tests.helpers import run_clean

REPO = Path(__file__).resolve().parents[2]


def _fit(args: list[str]) -> TrainCLI:
    return TrainCLI(args=args)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_of(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    return capsys.readouterr().err


def _into(run: Path) -> list[str]:
    """Arguments that make a run use the folder ``run``."""
    return [f"--run_root={run.parent}", f"--run_name={run.name}"]


def _no_output(runs: Path) -> bool:
    """True when no run folder holds any file (a failed start leaves nothing behind)."""
    return not runs.exists() or not [p for p in runs.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_train_args) -> Path:
    """A finished one-epoch run (CSV logger) shared by the read-only tests; returns its folder."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        args = [*make_train_args(root, mp), "--run_name=done", "--trainer.logger=CSVLogger"]
        _fit([*args, "--trainer.callbacks=[]"])
    return root / "runs" / "done"


def test_fit_with_wandb_offline_writes_the_run_folder_and_load_run_rebuilds_it(
    train_args, tmp_path
):
    _fit([*train_args, "--run_name=wb"])  # the preset's WandbLogger, offline
    run = tmp_path / "runs" / "wb"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "last.ckpt", "best.ckpt", "samples", "wandb"} <= names
    assert (run / "samples" / "epoch_0001.png").stat().st_size > 0
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert list(offline.glob("files/media/images/samples_*.png"))  # the grid went to W&B too

    module, dm = load_run(run / "last.ckpt")
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    for key, value in module.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][key]), key
    assert module.images_seen == 2 * 16 == ckpt["images_seen"]
    assert (dm.num_train, dm.batch_size, dm.image_shape) == (64, 16, (1, 28, 28))
    assert module.precond.net.enc["28x28_conv"].out_channels == 8  # the command-line override
    assert not module.training and not module.denoiser.training
    z = torch.randn(2, 1, 28, 28)
    assert module.denoiser(z, torch.tensor([1.0, 2.0])).shape == z.shape


def test_augmented_fit_through_the_cli_and_load_run_keeps_the_pipe(train_args, tmp_path):
    augment = {"class_path": "lightning_pspc.diffusion.AugmentPipe", "init_args": {"p": 0.5}}
    args = ["--run_name=aug", "--model.net.init_args.augment_dim=9"]
    _fit([*train_args, *args, "--model.augment=" + json.dumps(augment)])
    module, _ = load_run(tmp_path / "runs" / "aug" / "last.ckpt")
    assert module.augment.p == 0.5 and module.precond.net.augment_dim == 9
    z = torch.randn(2, 1, 28, 28)
    assert module.denoiser(z, torch.tensor([1.0, 2.0])).shape == z.shape  # no labels needed


def test_csv_logger_override_and_logged_metrics(train_args, tmp_path):
    _fit([*train_args, "--run_name=csv", "--trainer.logger=CSVLogger", "--trainer.max_epochs=2"])
    run = tmp_path / "runs" / "csv"
    (metrics,) = run.glob("**/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    steps = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert len(steps) == 4 and len(val) == 2 and all(v > 0 for v in steps + val)
    assert lrs == sorted(lrs) and lrs[-1] <= 2e-3  # linear warm-up of the preset
    assert any(r.get("train/device/samples_per_sec") for r in rows)  # ThroughputMonitor
    assert {p.name for p in (run / "samples").iterdir()} >= {"epoch_0002.png"}
    assert not (run / "wandb").exists()


def test_resumed_run_ends_with_the_same_weights(train_args, tmp_path):
    common = [*train_args, "--trainer.logger=CSVLogger", "--trainer.callbacks=[]"]
    common += [
        "--model.net.init_args.dropout=0.2",
        "--data.xflip=true",
    ]  # more randomness to replay
    _fit([*common, "--run_name=straight", "--trainer.max_epochs=2"])
    _fit([*common, "--run_name=split", "--trainer.max_epochs=1"])
    split = tmp_path / "runs" / "split"
    after_one = torch.load(split / "last.ckpt", weights_only=True)["state_dict"]
    _fit(
        [
            *common,
            "--run_name=split",
            "--trainer.max_epochs=2",
            f"--ckpt_path={split / 'last.ckpt'}",
        ]
    )
    a = torch.load(tmp_path / "runs" / "straight" / "last.ckpt", weights_only=True)
    b = torch.load(split / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4 and a["images_seen"] == b["images_seen"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(
            a["state_dict"][key], b["state_dict"][key], rtol=0, atol=1e-6, msg=key
        )
    # ... and the second epoch really trained: it changed the raw and the EMA weights.
    for key in ("precond.net.out_conv.weight", "ema.net.out_conv.weight"):
        assert not torch.equal(after_one[key], b["state_dict"][key])


def test_last_ckpt_follows_every_epoch_without_validation_or_improvement(train_args, tmp_path):
    # validation every 2nd epoch: epoch 3 has none, so the ModelCheckpoint of best.ckpt (and
    # Lightning's save_last, here turned on as in configs written before) does not save then
    args = [*train_args, "--run_name=every", "--trainer.logger=CSVLogger", "--trainer.callbacks=[]"]
    args += ["--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit([*args, "--checkpoint.save_last=true"])
    run = tmp_path / "runs" / "every"
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == 3 * 2
    assert torch.load(run / "best.ckpt", weights_only=True)["global_step"] == 2 * 2
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert any("save_last is ignored" in str(w.message) for w in caught)


def test_resume_continues_the_same_wandb_run(train_args, tmp_path):
    args = [*train_args, "--trainer.callbacks=[]"]
    _fit([*args, "--run_name=wb"])  # the preset's WandbLogger, offline
    run = tmp_path / "runs" / "wb"
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert len(run_id) == 8 and run_id.isalnum()
    # the id is not in config.yaml: a new run started from a copy of it gets its own W&B run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["logger"]["init_args"]["id"] is None

    cli = _fit([*args, "--trainer.max_epochs=2", f"--ckpt_path={run / 'last.ckpt'}"])
    assert cli.trainer.logger.version == run_id
    assert cli.trainer.logger._wandb_init["resume"] == "allow"
    offline = sorted(run.glob("wandb/offline-run-*"))
    assert offline and all(p.name.endswith(f"-{run_id}") for p in offline)
    assert (run / "wandb_id.txt").read_text().strip() == run_id

    _fit([*args, "--run_name=other"])
    assert (tmp_path / "runs" / "other" / "wandb_id.txt").read_text().strip() != run_id


ARGS_WARNING = "LightningCLI's args parameter"


def test_train_py_does_not_warn_about_its_own_args(tmp_path):
    # train.py passes sys.argv (with a save_dir added for CSVLogger) back to LightningCLI as args
    cmd = ["train.py", "fit", f"--config={REPO / 'configs' / 'unet_fmnist_small.yaml'}"]
    cmd += ["--trainer.logger=CSVLogger", "--print_config"]
    proc = run_clean(cmd, timeout=120, WANDB_MODE="offline", PYTHONWARNINGS="always")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "save_dir: ." in proc.stdout and ARGS_WARNING not in proc.stderr
    # args from Python next to a real command line still get Lightning's warning
    with pytest.MonkeyPatch.context() as mp, pytest.warns(UserWarning, match=ARGS_WARNING):
        mp.setattr(sys, "argv", ["train.py", "fit", "--trainer.max_epochs=3"])
        with pytest.raises(SystemExit):
            TrainCLI(args=cmd[1:])


def test_unknown_config_key_names_the_key_and_the_fix(train_args, capsys, tmp_path):
    err = _error_of([*train_args, "--data.num_trian=3"], capsys)
    assert "data.num_trian" in err and "Fix:" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  net:\n    init_args:\n      dropot: 0.1\n")
    err = _error_of([*train_args, f"--config={bad}"], capsys)
    assert "dropot" in err and "Fix:" in err
    assert not (tmp_path / "runs").exists()


def test_resolution_the_network_cannot_take(train_args, capsys, tmp_path):
    # The UNet itself rejects a resolution its levels cannot halve ...
    err = _error_of(
        [
            *train_args,
            "--model.net.init_args.channel_mult=[1,2,2]",
            "--model.net.init_args.img_resolution=30",
        ],
        capsys,
    )
    assert "resolution 30" in err and "channel_mult" in err
    # ... and a network built for 32x32 cannot take the 28x28 data: caught before training.
    err = _error_of([*train_args, "--model.net.init_args.img_resolution=32"], capsys)
    assert "[1, 28, 28]" in err and "img_resolution" in err and "Fix" in err
    assert _no_output(tmp_path / "runs")


def test_missing_data_set(train_args, capsys, tmp_path):
    missing = tmp_path / "no_such_folder"
    err = _error_of(
        [
            *train_args,
            "--data.source=lightning_pspc.data.IDXSource",
            f"--data.source.root={missing}",
        ],
        capsys,
    )
    assert str(missing) in err and "dataset-fashion-mnist" in err
    assert _no_output(tmp_path / "runs")


def test_corrupt_checkpoint_is_rejected_and_the_good_one_kept(
    finished_run, train_args, capsys, tmp_path
):
    good = finished_run / "last.ckpt"
    digest = _sha(good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    for bad in (truncated, garbage):
        err = _error_of([*train_args, *_into(finished_run), f"--ckpt_path={bad}"], capsys)
        assert str(bad) in err and "Fix:" in err
    err = _error_of([*train_args, f"--ckpt_path={tmp_path / 'absent.ckpt'}"], capsys)
    assert "absent.ckpt" in err and "does not exist" in err
    assert _sha(good) == digest


def test_flipped_bytes_in_the_weights_are_caught_by_the_checksum(
    finished_run, train_args, capsys, tmp_path
):
    good = finished_run / "last.ckpt"
    ckpt = read_checkpoint(good)  # unchanged: the stored checksum matches
    assert len(ckpt[CHECKSUM_KEY]) == 64
    data = bytearray(good.read_bytes())
    weight = ckpt["state_dict"]["precond.net.out_conv.weight"]
    at = data.find(weight.contiguous().view(torch.uint8).numpy().tobytes())
    assert at > 0 and data.find(weight.numpy().tobytes(), at + 1) == -1
    data[at + weight.numel() * 2] ^= 0x01  # one bit of one weight, mid-tensor
    bad = tmp_path / "bad" / "last.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    shutil.copy(finished_run / "config.yaml", bad.parent / "config.yaml")
    assert torch.load(bad, weights_only=True)["global_step"] == 2  # torch loads it silently
    with pytest.raises(RunSetupError, match=r"is corrupt.*SHA-256.*best\.ckpt"):
        load_run(bad)  # eval.py's path
    err = _error_of([*train_args, *_into(finished_run), f"--ckpt_path={bad}"], capsys)
    assert str(bad) in err and "corrupt" in err and "Fix:" in err
    # a checkpoint written before checksums existed loads as before
    old = torch.load(good, weights_only=True)
    del old[CHECKSUM_KEY]
    torch.save(old, tmp_path / "old.ckpt")
    assert read_checkpoint(tmp_path / "old.ckpt")["global_step"] == 2


def test_checkpoint_of_another_architecture(finished_run, train_args, capsys):
    good = finished_run / "last.ckpt"
    digest = _sha(good)
    err = _error_of(
        [*train_args, "--model.net.init_args.model_channels=16", f"--ckpt_path={good}"], capsys
    )
    assert str(good) in err and "different architecture" in err and "config.yaml" in err
    assert _sha(good) == digest


def test_fresh_run_never_clobbers_an_existing_run(finished_run, train_args, capsys):
    digest = _sha(finished_run / "last.ckpt")
    err = _error_of([*train_args, *_into(finished_run)], capsys)
    assert "already holds checkpoints" in err and "--ckpt_path" in err
    assert _sha(finished_run / "last.ckpt") == digest


def test_load_run_without_config_is_a_clear_error(finished_run, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(finished_run / "last.ckpt", lone / "last.ckpt")
    with pytest.raises(RunSetupError, match="no config.yaml next to checkpoint"):
        load_run(lone / "last.ckpt")


def _preset(name: str, capsys) -> dict:
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exc:
        mp.setattr(sys, "argv", ["train.py"])
        TrainCLI(args=["fit", f"--config={REPO / 'configs' / name}", "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_cifar10_presets_carry_the_reference_hyperparameters(capsys):
    ddpmpp = _preset("ddpmpp_cifar10.yaml", capsys)
    net = ddpmpp["model"]["net"]["init_args"]
    assert (net["model_channels"], net["channel_mult"], net["num_blocks"]) == (128, [2, 2, 2], 4)
    assert (net["attn_resolutions"], net["dropout"]) == ([16], 0.13)
    assert (ddpmpp["model"]["lr"], ddpmpp["model"]["ema_halflife_images"]) == (1e-3, 500_000)
    data = ddpmpp["data"]
    assert (data["batch_size"], data["xflip"]) == (512, False)
    assert data["source"]["init_args"]["path"] == "uoft-cs/cifar10"
    assert data["source"]["init_args"]["image_column"] == "img"

    dit = _preset("dit_b4_cifar10.yaml", capsys)
    net = dit["model"]["net"]["init_args"]
    assert (net["patch_size"], net["hidden_size"], net["num_heads"], net["depth"]) == (
        4,
        768,
        12,
        12,
    )
    assert net["dropout"] == 0.12
    assert (dit["model"]["lr"], dit["model"]["betas"], dit["model"]["eps"]) == (
        1e-4,
        [0.9, 0.999],
        1e-8,
    )
    assert dit["data"]["batch_size"] == 512
    for cfg in (ddpmpp, dit):
        assert cfg["trainer"]["logger"]["init_args"]["project"] == "lightning_pspc"
        # EDM's augmentation at rate 0.12 (x-flips labelled, not in the data), 9 labels
        assert cfg["model"]["augment"]["class_path"] == "lightning_pspc.diffusion.AugmentPipe"
        assert cfg["model"]["augment"]["init_args"]["p"] == 0.12
        assert cfg["model"]["net"]["init_args"]["augment_dim"] == 9
        assert cfg["data"]["xflip"] is False


@pytest.mark.parametrize(
    ("name", "period", "probes", "samples"),
    [
        ("unet_fmnist_small.yaml", 5, (8, 8, 4), 16),
        ("dit_fmnist_small.yaml", 5, (8, 8, 4), 16),
        ("ddpmpp_cifar10.yaml", 50, (16, 16, 8), 64),
        ("dit_b4_cifar10.yaml", 50, (16, 16, 8), 64),
    ],
)
def test_presets_wire_the_evaluation_callbacks(name, period, probes, samples, capsys):
    callbacks = {
        c["class_path"]: c["init_args"] for c in _preset(name, capsys)["trainer"]["callbacks"]
    }
    compare = callbacks["lightning_pspc.callbacks.DenoiserComparison"]
    assert compare["every_n_epochs"] == period
    assert (
        compare["num_train_probes"],
        compare["num_heldout_probes"],
        compare["num_reverse_probes"],
    ) == probes
    memo = callbacks["lightning_pspc.callbacks.MemorizationMonitor"]
    assert (memo["every_n_epochs"], memo["num_samples"]) == (period, samples)
    if "fmnist" in name:  # linearity and Gaussian fit per sigma on the small presets
        gen = callbacks["lightning_pspc.callbacks.GeneralizationMonitor"]
        assert (gen["every_n_epochs"], gen["num_pairs"]) == (period, 8)


@pytest.mark.parametrize("name", ["unet_fmnist_small.yaml", "dit_fmnist_small.yaml"])
def test_small_presets_build_a_network_for_fashion_mnist(name, capsys):
    module, dm = build_from_config(_preset(name, capsys))
    assert dm.num_train == 1024
    z = torch.randn(2, 1, 28, 28)  # Fashion-MNIST at its native resolution
    assert module.denoiser(z, torch.tensor([0.5, 5.0])).shape == z.shape


def test_logs_get_one_line_per_epoch_and_wandb_no_anonymous_setting(train_args, capsys):
    # pytest's captured stderr is not a terminal, as in a log file or a sweep's subprocess
    args = [*train_args, "--run_name=lines", "--trainer.callbacks=[]", "--trainer.max_epochs=2"]
    cli = _fit([*args, "--trainer.enable_progress_bar=true"])
    err = capsys.readouterr().err
    assert isinstance(cli.trainer.progress_bar_callback, EpochLines)
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[:2] for line in lines] == [
        ["epoch 1/2", "step 2"],
        ["epoch 2/2", "step 4"],
    ]
    assert "train/loss" in lines[-1] and "\r" not in err and "LeafSpec" not in err
    assert "anonymous" not in cli.trainer.logger._wandb_init


def test_moved_run_resumes_in_place_from_another_directory(train_args, tmp_path, monkeypatch):
    _fit([*train_args, "--run_name=wb", "--trainer.callbacks=[]"])  # the preset's WandbLogger
    run_id = (tmp_path / "runs" / "wb" / "wandb_id.txt").read_text().strip()
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "runs" / "wb", moved)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    args = [f"--config={moved / 'config.yaml'}", f"--ckpt_path={moved / 'last.ckpt'}"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = _fit(["fit", *args, "--trainer.max_epochs=2", "--run_name=ignored"])
    assert any("--run_name 'ignored' is ignored" in str(w.message) for w in caught)
    assert not any("dirpath has changed" in str(w.message) for w in caught)  # best.ckpt tracked
    assert cli.trainer.checkpoint_callback.best_model_path == str(moved / "best.ckpt")
    assert torch.load(moved / "last.ckpt", weights_only=True)["global_step"] == 2 * 2
    assert cli.trainer.logger.version == run_id
    assert (moved / "wandb_id.txt").read_text().strip() == run_id
    assert all(p.name.endswith(f"-{run_id}") for p in moved.glob("wandb/offline-run-*"))
    assert _no_output(tmp_path / "runs") and not list((tmp_path / "cwd").iterdir())


def test_wandb_online_without_a_key_is_one_error_and_writes_nothing(
    train_args, tmp_path, monkeypatch, capsys
):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "home"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(empty))
    monkeypatch.setenv("NETRC", str(empty / ".netrc"))
    err = _error_of([*train_args, "--run_name=wb"], capsys)  # the preset's WandbLogger
    assert err.startswith("error:") and err.count("\n") == 1
    assert "WANDB_MODE=offline" in err and "--trainer.logger CSVLogger" in err
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_stops_training_with_one_line_and_keeps_both_checkpoints(
    train_args, tmp_path, monkeypatch, capsys
):
    writes = []
    real = checkpoint_io.write_bytes

    def disk_fills_up(path, data):  # room for the first epoch's two checkpoints only
        writes.append(path.name)
        if len(writes) <= 2:
            return real(path, data)
        with path.open("wb") as f:
            f.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "write_bytes", disk_fills_up)
    args = [*train_args, "--run_name=full", "--trainer.logger=CSVLogger", "--trainer.callbacks=[]"]
    err = _error_of([*args, "--trainer.max_epochs=2"], capsys)
    run = tmp_path / "runs" / "full"
    assert err.startswith("error: disk full: the checkpoint needs ~") and err.count("\n") == 1
    assert "previous checkpoint is kept" in err and f"--ckpt_path {run / 'last.ckpt'}." in err
    assert len(writes) == 3  # the save that failed stopped the run
    for name in ("best.ckpt", "last.ckpt"):
        assert read_checkpoint(run / name)["global_step"] == 2  # epoch 1's, whole
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]


def test_every_process_saves_through_the_atomic_checkpoint_io(train_args):
    args = [a for a in train_args if a != "fit"]
    args += ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.logger=CSVLogger"]
    cli = TrainCLI(args=args, run=False)  # a DDP trainer, not launched
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_yaml_syntax_error_names_the_file_and_the_line(train_args, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: [1, 2\ndata: {}\n")
    for given in ([f"--config={bad}"], ["--config", str(bad)]):
        err = _error_of([*train_args, *given], capsys)
        assert err.startswith(
            f"error: {str(bad)!r} is not valid YAML: expected ',' or ']', but got ':'"
        )
        assert "at line 3, column 5 (while parsing a flow sequence at line 2" in err
        assert f"Fix: correct the YAML syntax near line 3 of {str(bad)!r}" in err
        assert err.count("\n") == 1
    # a section file a preset names (trainer: base/....yaml), as the presets share them
    preset = tmp_path / "preset.yaml"
    preset.write_text("trainer: base/trainer.yaml\n")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "trainer.yaml").write_text("max_epochs: 1\n  devices: 2\n")
    err = _error_of([*train_args, f"--config={preset}"], capsys)
    assert f"(the trainer section of {preset}) is not valid YAML" in err and "line 2" in err
    assert not (tmp_path / "runs").exists()


def test_a_gpu_accelerator_without_a_gpu_is_one_line(train_args, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("gpu", "cuda"):
        err = _error_of([*train_args, f"--trainer.accelerator={name}"], capsys)
        assert err.startswith(f"error: --trainer.accelerator {name}: no CUDA GPU found")
        assert "Fix: use --trainer.accelerator cpu (or auto" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_run_folder_as_ckpt_path_names_its_checkpoints(finished_run, train_args, capsys):
    err = _error_of([*train_args, f"--ckpt_path={finished_run}"], capsys)
    assert f"checkpoint {str(finished_run)!r} is a folder" in err
    assert (
        "['best.ckpt', 'last.ckpt']" in err and f"--ckpt_path {finished_run / 'last.ckpt'}" in err
    )
