"""DenoiserComparison and MemorizationMonitor in short real fits (CPU, tiny network, 8x8 images)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import lightning
import pytest
import torch

from lightning_pspc.callbacks.denoiser_comparison import DenoiserComparison
from lightning_pspc.callbacks.memorization_monitor import MemorizationMonitor
from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.evaluation import EvalSeeds, fixed_noise, forward_probes, probe_sigmas
from lightning_pspc.evaluation.probes import PROBE_KINDS
from lightning_pspc.metrics import memorized_mask

SIGMAS = [0.01, 0.1, 1.0, 10.0]


class ModeRecorder(lightning.Callback):
    """Runs after the evaluation callbacks: records the module's mode and grad state."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seen.append((pl_module.training, torch.is_grad_enabled()))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, short_fit):
    """One 2-epoch fit with both callbacks (shared by the tests of this module)."""
    root = tmp_path_factory.mktemp("fit")
    compare = DenoiserComparison(
        sigmas=SIGMAS,
        num_train_probes=3,
        num_heldout_probes=2,
        num_reverse_probes=2,
        seed=4,
        batch_size=5,
        panel_sigmas=3,
    )
    memo = MemorizationMonitor(num_samples=6, num_steps=6, seed=3, batch_size=4, grid_size=4)
    mode = ModeRecorder()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer, module, dm = short_fit(root, [compare, memo, mode])
    return trainer, module, dm, compare, memo, mode, out.getvalue(), root


def test_comparison_logs_every_reference_kind_and_sigma(fitted):
    trainer, *_ = fitted
    metrics = trainer.callback_metrics
    for ref in ("empirical", "pspc", "gaussian"):
        for kind in ("train", "heldout", "reverse"):
            for s in SIGMAS:
                value = metrics[f"compare/{ref}/{kind}/sigma_{s:.3g}"].item()
                assert math.isfinite(value) and value >= 0
            assert f"compare/{ref}/{kind}/mid" in metrics
    assert metrics["compare/seconds"] > 0


def test_comparison_values_match_a_direct_computation(fitted):
    trainer, module, dm, *_ = fitted
    # the last evaluation ran with the final EMA weights: recompute the train-probe distances
    sigmas = probe_sigmas(SIGMAS)
    probes = forward_probes(dm.train_images(), sigmas, 3, seed=EvalSeeds.derive(4).train_probes)
    with torch.no_grad():
        net = module.denoiser(probes.z, probes.sigma.float())
    emp = EmpiricalDenoiser(dm.reference_images())(probes.z, probes.sigma.float())
    mse = (net.double() - emp.double()).pow(2).flatten(1).mean(1).view(3, len(SIGMAS)).mean(0)
    for s, expected in zip(sigmas.tolist(), mse.tolist()):
        got = trainer.callback_metrics[f"compare/empirical/train/sigma_{s:.3g}"].item()
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_reference_outputs_on_forward_probes_are_computed_once(fitted):
    _, _, _, compare, *_ = fitted
    forward = (3 + 2) * len(SIGMAS) * 3  # probes x references, at the first evaluation only
    reverse = 2 * len(SIGMAS) * 3  # reverse states are new at each of the 2 evaluations
    assert compare.comparer.reference_probe_evaluations == forward + 2 * reverse
    assert [e for e, _ in compare.history] == [1, 2]


def test_memorization_values_match_a_direct_computation(fitted):
    trainer, module, dm, *_ = fitted
    from lightning_pspc.diffusion import heun_sample

    noise = fixed_noise(6, (1, 8, 8), EvalSeeds.derive(3).sample_noise)
    samples = heun_sample(module.denoiser, noise, num_steps=6)
    expected = memorized_mask(samples, dm.train_images()).double().mean().item()
    assert trainer.callback_metrics["memorization/memorized_fraction"].item() == pytest.approx(
        expected
    )
    for key in ("nn_dist_mean", "nn_dist_median", "max_cos_mean", "max_cos_median", "seconds"):
        assert math.isfinite(trainer.callback_metrics[f"memorization/{key}"].item())


def test_charts_are_written_per_epoch_and_modes_restored(fitted):
    _, _, _, compare, memo, mode, out, root = fitted
    names = {p.name for p in (root / "plots").iterdir()}
    for epoch in (1, 2):
        for key in (
            "compare_empirical_mse_vs_sigma",
            "compare_pspc_mse_vs_sigma",
            "compare_gaussian_mse_vs_sigma",
            "compare_empirical_heatmap",
            "compare_panel",
            "memorization_neighbours",
        ):
            assert f"{key}_epoch_{epoch:04d}.png" in names
    assert all((root / "plots" / n).stat().st_size > 1000 for n in names)
    assert mode.seen == [(True, True), (True, True)]  # train mode and autograd back on
    assert "DenoiserComparison:" in out and "MemorizationMonitor:" in out and "%" in out
    assert 0 < compare.overhead_fraction < 1 and 0 < memo.overhead_fraction < 1


def test_period_and_last_epoch(tmp_path, short_fit):
    compare = DenoiserComparison(
        every_n_epochs=2,
        sigmas=[1.0],
        references=["empirical"],
        num_train_probes=1,
        num_heldout_probes=0,
        num_reverse_probes=0,
        log_images=False,
    )
    memo = MemorizationMonitor(every_n_epochs=2, num_samples=2, num_steps=2)
    short_fit(tmp_path, [compare, memo], max_epochs=3)
    assert [e for e, _ in compare.history] == [2, 3]  # every 2nd epoch, and the last one
    assert compare.evaluated_epochs == memo.evaluated_epochs == [2, 3]
    assert list(compare.history[0][1]) == ["train"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "memorization_memorized_vs_images_epoch_0002.png",
        "memorization_memorized_vs_images_epoch_0003.png",
        "memorization_neighbours_epoch_0002.png",
        "memorization_neighbours_epoch_0003.png",
    ]


def test_max_steps_run_evaluates_its_last_epoch_only(tmp_path, short_fit):
    # max_steps without max_epochs: Lightning sets max_epochs = -1, which is not "every epoch"
    memo = MemorizationMonitor(every_n_epochs=5, num_samples=2, num_steps=2, log_images=False)
    trainer, *_ = short_fit(tmp_path, [memo], max_epochs=None, max_steps=6)  # 3 epochs of 2 steps
    assert memo.evaluated_epochs == [3] and trainer.global_step == 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="references"):
        DenoiserComparison(references=["empirical", "wiener"])
    with pytest.raises(ValueError, match="probe counts"):
        DenoiserComparison(num_train_probes=0, num_heldout_probes=0, num_reverse_probes=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        MemorizationMonitor(every_n_epochs=0)


WIRING = """
trainer:
  callbacks:
    - class_path: lightning_pspc.callbacks.comparison.DenoiserComparison
      init_args:
        every_n_epochs: 1
        sigmas: [0.05, 1.0, 20.0]
        references: [empirical, gaussian]
        num_train_probes: 1
        num_heldout_probes: 1
        num_reverse_probes: 1
    - class_path: lightning_pspc.callbacks.memorization.MemorizationMonitor
      init_args:
        every_n_epochs: 1
        num_samples: 2
        num_steps: 3
"""


def test_callbacks_from_yaml_log_charts_to_wandb(train_args, tmp_path):
    """train.py with the preset (W&B offline) and the callbacks configured in YAML."""
    from lightning_pspc.commands.train import TrainCLI

    extra = tmp_path / "callbacks.yaml"
    extra.write_text(WIRING)
    cli = TrainCLI(args=[*train_args, f"--config={extra}", "--run_name=wired"])
    run = tmp_path / "runs" / "wired"
    metrics = cli.trainer.callback_metrics
    assert "compare/gaussian/reverse/sigma_20" in metrics and "memorization/nn_dist_mean" in metrics
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    images = wandb_run / "files" / "media" / "images"
    media = {str(p.relative_to(images)).rsplit("_", 2)[0] for p in images.rglob("*.png")}
    assert media == {
        "compare/empirical/mse_vs_sigma",
        "compare/gaussian/mse_vs_sigma",
        "compare/empirical/heatmap",
        "compare/panel",
        "memorization/neighbours",
        "memorization/memorized_vs_images",
    }
    assert len(list((run / "plots").glob("*_epoch_0001.png"))) == 6
    # the comparison's per-sigma curves as a table with a line plot (epoch 1, 3 sigmas)
    (table,) = (wandb_run / "files" / "media" / "table" / "compare" / "curves").glob("dist*.json")
    rows = json.loads(table.read_text())["data"]
    assert {r[1] for r in rows} == {1} and {r[4] for r in rows} == {0.05, 1.0, 20.0}
    assert {r[2] for r in rows} <= {
        f"{ref} {k}" for ref in ("empirical", "gaussian") for k in PROBE_KINDS
    }


@pytest.mark.parametrize("sigmas", [[], [1.0, -0.5], [float("nan")]])
def test_a_bad_sigma_grid_fails_when_the_callback_is_built(sigmas):
    from lightning_pspc.callbacks.generalization_monitor import GeneralizationMonitor

    for cls in (DenoiserComparison, GeneralizationMonitor):
        with pytest.raises(ValueError, match="non-empty list of positive finite noise levels"):
            cls(sigmas=sigmas)
