"""LinearDistillationMonitor: the logged fit is that of the final network (tiny CPU fit)."""

from __future__ import annotations

import pytest

from lightning_pspc.callbacks import LinearDistillationMonitor
from lightning_pspc.denoisers.network_fitted import ReferenceOptions
from lightning_pspc.evaluation import EvalData, Evaluation, LinearDistillation
from tests.callbacks.conftest import short_cpu_fit

SIGMAS = [8.0, 0.5, 0.02]


def test_logged_fit_is_that_of_the_final_network(tmp_path, tiny_net, tiny_datamodule):
    monitor = LinearDistillationMonitor(
        num_probes=100, ridge=1e-3, num_images=3, sigmas=SIGMAS, seed=7, batch_size=50
    )
    trainer, module, dm = short_cpu_fit(
        tiny_net(1, 8), tiny_datamodule(24, 8, 8), tmp_path, [monitor], 2, -1
    )
    single = Evaluation(
        EvalData.from_datamodule(dm),
        [LinearDistillation(3)],
        sigmas=SIGMAS,
        seed=7,
        reference_options=ReferenceOptions(linear_probes=100, linear_ridge=1e-3),
    ).evaluate(module.denoiser)["linear_distillation"]
    expected = single.scalars()
    assert len(expected) == 3 * (3 + 1)  # three measures per sigma and their mid-band means
    for key, value in expected.items():
        got = trainer.callback_metrics[key].item()
        assert got == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert [e for e, _ in monitor.history] == [1, 2]
    assert monitor.history[-1][1]["num_probes"] == 100
    names = {p.name for p in (tmp_path / "plots").iterdir()}
    for key in ("vs_sigma", "heatmap"):
        assert f"linear_distillation_linear_distillation_{key}_epoch_0002.png" in names
    with pytest.raises(ValueError, match="LinearDistillationMonitor: linear_probes=-1"):
        LinearDistillationMonitor(num_probes=-1)
