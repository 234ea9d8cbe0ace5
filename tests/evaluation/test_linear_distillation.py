"""The linear_distilled reference and the LinearDistillation member (docs/reference.md 3c)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_pspc.denoisers import LinearDenoiser
from lightning_pspc.diffusion import EDMPrecond
from lightning_pspc.evaluation import EvalData, Evaluation, LinearDistillation
from lightning_pspc.evaluation.members.agreement import Agreement
from lightning_pspc.evaluation.members.linear_distillation import auto_enabled
from lightning_pspc.evaluation.plots.transition_charts import draw_linearity_panel
from lightning_pspc.evaluation.settings import EvalError, EvalSettings
from lightning_pspc.evaluation.transition import transition_rows
from tests.helpers import TinyNet

SIGMAS = [5.0, 0.5, 0.05]  # decreasing, as the evaluation sorts its grid


@pytest.fixture(scope="module")
def data(tiny_datamodule) -> EvalData:
    return EvalData.from_datamodule(tiny_datamodule(24, 8, 8))  # 1x8x8: D = 64


@pytest.fixture(scope="module")
def net() -> EDMPrecond:
    torch.manual_seed(0)
    return EDMPrecond(TinyNet(channels=1, width=8)).eval()


def test_a_gaussian_network_distills_to_the_gaussian_denoiser(data, net):
    ev = Evaluation(data, [LinearDistillation(4)], sigmas=SIGMAS)
    gauss = ev.reference("gaussian")
    result = ev.evaluate(gauss)["linear_distillation"]
    assert result.num_probes == 4 * 64 and result.num_images == 4
    assert result.gaussian_nmse.max() < 1e-9  # an affine teacher is recovered
    assert result.network_mse.max() < 1e-12 and result.network_gaussian_nmse.max() == 0
    other = ev.evaluate(net)["linear_distillation"]  # refreshed with the new network
    assert (other.gaussian_nmse > 1e-3).all() and (other.network_mse > 0).all()
    # the network's own distance to the Gaussian includes the part no linear map imitates
    assert (other.network_gaussian_nmse > other.gaussian_nmse).any()


def test_reference_fits_the_evaluation_grid_and_other_sigmas_on_first_use(data, net):
    ev = Evaluation(data, [], ["linear_distilled"], SIGMAS, seed=3)
    ref = ev.references["linear_distilled"]
    z = torch.randn(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="before refresh"):
        ref(z, torch.full((2,), 0.5))
    assert ev.refresh_references(net) == ["linear_distilled"]
    seed = ev.seeds.linear_distillation
    direct = LinearDenoiser.distill(net, data.reference, SIGMAS + [1.3], seed=seed)
    torch.testing.assert_close(ref.denoiser.weight, direct.weight[:3], rtol=0, atol=1e-9)
    sigma = torch.tensor([1.3, 0.5], dtype=torch.float64)
    out = ref(z, sigma)  # 1.3 is off the grid: distilled now
    assert ref.denoiser.has_sigma(1.3) and ref.denoiser.sigmas.numel() == 4
    torch.testing.assert_close(out, direct(z, sigma), rtol=0, atol=1e-6)


def test_the_linear_map_of_a_gaussian_samples_like_the_gaussian(data):
    ev = Evaluation(data, [Agreement(("linear_distilled",), 3, 4)], sigmas=SIGMAS)
    result = ev.evaluate(ev.reference("gaussian"))["agreement"]  # sampler steps: off the grid
    assert result.stats["linear_distilled"]["pearson_q25"] > 1 - 1e-6
    assert result.stats["linear_distilled"]["mse_q75"] < 1e-10


def test_report_scalars_and_charts(data, net):
    ev = Evaluation(data, [LinearDistillation(2)], sigmas=SIGMAS)
    member = ev.members["linear_distillation"]
    assert member.work() == 2 * 2 * 3  # Gaussian and network outputs on 2 images x 3 sigmas
    result = ev.evaluate(net)["linear_distillation"]
    assert member.work() == 2 * 3  # the Gaussian's outputs are kept
    record = member.report(result)["linear_distillation"]
    assert record["sigmas"] == SIGMAS and record["num_probes"] == 256 and record["ridge"] == 0
    scalars = result.scalars()
    mid = (record["gaussian_nmse"][0] + record["gaussian_nmse"][1]) / 2  # 5, 0.5 in [0.25, 10)
    assert scalars["linear_distillation/gaussian_nmse/mid"] == pytest.approx(mid)
    assert scalars["linear_distillation/network_mse/sigma_0.05"] == record["network_mse"][2]
    history = [(1, record), (2, record)]
    assert set(member.figures(result, history, over_time=True)) == {
        "linear_distillation/vs_sigma",
        "linear_distillation/heatmap",
    }


def test_eval_options_decide_auto_by_dimension_and_device(data):
    assert auto_enabled((1, 16, 16), "cpu") and not auto_enabled((1, 28, 28), "cpu")
    assert auto_enabled((1, 28, 28), "cuda") and not auto_enabled((3, 32, 32), "cuda")
    cpu = torch.device("cpu")
    on = EvalSettings(linear_distillation="auto", linear_probes=100, linear_ridge=0.5)
    ev = on.build_evaluation(data, cpu)  # D = 64: on
    assert "linear_distillation" in ev.members
    assert "linear_distilled" in ev.members["agreement"].names  # the linear map's samples
    assert (ev.reference_options.linear_probes, ev.reference_options.linear_ridge) == (100, 0.5)
    off = EvalSettings(linear_distillation="off").build_evaluation(data, cpu)
    assert "linear_distillation" not in off.members
    assert "linear_distilled" not in off.members["agreement"].names
    with pytest.raises(EvalError, match="--linear-distillation 'yes'"):
        EvalSettings(linear_distillation="yes").check()
    with pytest.raises(EvalError, match="--linear-probes -1"):
        EvalSettings(linear_probes=-1).check()
    with pytest.raises(EvalError, match=r"--linear-probes 64 must exceed D = C\*H\*W = 64"):
        EvalSettings(linear_probes=64).build_evaluation(data, cpu)
    EvalSettings(linear_probes=64, linear_ridge=1e-3).for_data((1, 8, 8), cpu)  # a ridge: fine


def test_transition_rows_and_chart_carry_the_linear_fit():
    def record(n: int, nmse: float) -> dict:
        linear = {"sigmas": [20.0, 1.0, 0.1], "gaussian_nmse": [0.0, nmse, 9.0]}
        return {"num_train": n, "memorized_fraction": 0.5, "linear_distillation": linear}

    report = {"checkpoints": [record(8, 0.4), record(8, 0.2), record(64, 0.05), record(16, 1)]}
    report["checkpoints"][-1].pop("linear_distillation")
    rows = transition_rows(report)
    assert [r.get("linear_gaussian_nmse_mid") for r in rows] == [pytest.approx(0.3), None, 0.05]
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    draw_linearity_panel(ax, report["checkpoints"])
    (line,) = [ln for ln in ax.get_lines() if "linear map" in ln.get_label()]
    assert list(line.get_xdata()) == [8, 64] and math.isclose(line.get_ydata()[0], 0.3)


def test_wandb_report_logs_the_mid_band_fit(tmp_path, monkeypatch):
    import sys
    import types

    from lightning_pspc.evaluation.report import log_report_to_wandb

    logged: list[dict] = []
    run = types.SimpleNamespace(log=logged.append, finish=lambda: None)
    fake = types.SimpleNamespace(init=lambda **kw: run, Image=str, Table=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    linear = {"sigmas": [20.0, 5.0, 1.0, 0.1], "gaussian_nmse": [9.0, 0.1, 0.3, 9.0]}
    rec = {"label": "r/last", "num_train": 8, "epoch": 1, "memorized_fraction": 0.5}
    rec |= {"bands": {}, "plots": [], "linear_distillation": linear}
    log_report_to_wandb({"settings": {}, "checkpoints": [rec]}, tmp_path, "p", "n")
    assert logged[0]["r/last/linear_distillation/gaussian_nmse_mid"] == pytest.approx(0.2)
