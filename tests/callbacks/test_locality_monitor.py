"""LocalityMonitor in a short real fit (CPU, tiny network, 8x8 images)."""

from __future__ import annotations

import contextlib
import io

import pytest

from lightning_pspc.callbacks import DenoiserComparison, LocalityMonitor

SIGMAS = [2.0, 0.5]


def test_monitor_logs_patch_sizes_draws_charts_and_calibrates_the_comparison(
    tmp_path,
    short_fit,  # noqa: F811
):
    monitor = LocalityMonitor(
        every_n_epochs=1, sigmas=SIGMAS, num_probes=1, stride=4, candidates=(1, 3, 5)
    )
    compare = DenoiserComparison(
        references=["empirical", "ls"],
        sigmas=SIGMAS,
        num_train_probes=0,
        num_heldout_probes=1,
        num_reverse_probes=0,
        panel_sigmas=1,
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer, *_ = short_fit(tmp_path, [monitor, compare], max_epochs=2)
    metrics = trainer.callback_metrics
    epochs, last = zip(*monitor.history)
    assert epochs == (1, 2)
    for i, s in enumerate(SIGMAS):
        logged = metrics[f"locality/patch_size_f50/sigma_{s:.3g}"].item()
        assert logged == pytest.approx(last[-1]["sensitivity_patch_size"]["f50"][i])
        best = metrics[f"locality/best_fit_ls/sigma_{s:.3g}"].item()
        assert best == last[-1]["best_fit_patch_size"]["ls"][i]
    ls = compare.evaluation.references["ls"]
    assert ls.calibrated and list(ls.schedule[1]) == last[-1]["best_fit_patch_size"]["ls"]
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    for key in ("patch_size_vs_sigma", "patch_size_heatmap", "best_fit_over_epochs", "heatmaps"):
        assert f"locality_{key}_epoch_0002.png" in plots
    assert "LocalityMonitor" in out.getvalue()


def test_bad_monitor_settings_name_the_value():
    with pytest.raises(ValueError, match=r"LocalityMonitor: num_probes=0 must be >= 1"):
        LocalityMonitor(num_probes=0)
    with pytest.raises(ValueError, match="unknown reference"):
        DenoiserComparison(references=["lss"])
