"""GeneralizationMonitor and MemorizationMonitor's history over training time (tiny CPU fits)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_pspc.callbacks import GeneralizationMonitor, MemorizationMonitor
from lightning_pspc.evaluation import EvalData, Evaluation
from lightning_pspc.evaluation.members.generalization import Generalization
from tests.callbacks.conftest import short_cpu_fit

SIGMAS = [0.02, 0.5, 8.0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_net, tiny_datamodule):
    root = tmp_path_factory.mktemp("gen")
    gen = GeneralizationMonitor(sigmas=SIGMAS, num_pairs=3, seed=7, batch_size=5)
    memo = MemorizationMonitor(num_samples=3, num_steps=3, grid_size=3)
    trainer, module, dm = short_cpu_fit(
        tiny_net(1, 8), tiny_datamodule(24, 8, 8), root, [gen, memo], max_epochs=2, max_steps=-1
    )
    return trainer, module, dm, gen, memo, root


def test_logged_values_are_those_of_the_final_network(fitted):
    trainer, module, dm, gen, *_ = fitted
    single = Evaluation(
        EvalData.from_datamodule(dm),
        [Generalization(3)],
        ["empirical", "gaussian"],
        SIGMAS,
        seed=7,
    ).evaluate(module.denoiser)["generalization"]
    expected = single.scalars()
    assert len(expected) == 3 * 4 + 1  # linearity, nmse, r2 x 2 references per sigma; min
    for key, value in expected.items():
        got = trainer.callback_metrics[key].item()
        assert got == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert [e for e, _ in gen.history] == [1, 2]
    assert gen.history[-1][1]["linearity"] == pytest.approx(single.linearity.tolist(), rel=1e-5)


def test_charts_and_images_seen(fitted):
    _, _, _, gen, memo, root = fitted
    names = {p.name for p in (root / "plots").iterdir()}
    for epoch in (1, 2):
        for key in (
            "generalization_generalization_vs_sigma",
            "generalization_generalization_heatmap",
            "memorization_memorized_vs_images",
        ):
            assert f"{key}_epoch_{epoch:04d}.png" in names
    # 2 batches of 8 images per epoch
    assert [(e, r["images_seen"]) for e, r in memo.history] == [(1, 16), (2, 32)]
    state = memo.state_dict()
    assert state["histories"]["memorization"][1][1]["images_seen"] == 32  # kept in checkpoints


class Scaled(torch.nn.Module):
    """A linear denoiser ``D(z, s) = z / (1 + s^2)`` (the Gaussian one of N(0, I) data)."""

    def forward(self, z, sigma):
        return z / (1 + sigma.view(-1, 1, 1, 1) ** 2)


def test_a_linear_denoiser_scores_one_and_the_gaussian_fits_itself(tiny_datamodule):
    data = EvalData.from_datamodule(tiny_datamodule(24, 8, 8))
    ev = Evaluation(data, [Generalization(4)], ["gaussian", "empirical"], SIGMAS)
    linear = ev.evaluate(Scaled())["generalization"]
    assert linear.linearity.tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    gauss = ev.evaluate(ev.references["gaussian"])["generalization"]
    assert gauss.gaussian_nmse.tolist() == pytest.approx([0.0] * 3, abs=1e-10)
    assert gauss.r_squared["gaussian"].tolist() == pytest.approx([1.0] * 3, abs=1e-9)
    emp = ev.evaluate(ev.references["empirical"])["generalization"]
    assert emp.r_squared["empirical"].tolist() == pytest.approx([1.0] * 3, abs=1e-9)
    # the empirical denoiser is far from linear at intermediate noise
    assert min(emp.linearity.tolist()) < 0.99 and math.isfinite(emp.gaussian_nmse[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_pairs=0"):
        GeneralizationMonitor(num_pairs=0)
    with pytest.raises(ValueError, match="alpha"):
        GeneralizationMonitor(alpha=1.0)
    with pytest.raises(ValueError, match="references"):
        GeneralizationMonitor(references=["wiener"])
