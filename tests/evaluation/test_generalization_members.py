"""Agreement of samples, twin pairing, memorization histories and their charts (no training)."""

from __future__ import annotations

import pytest
import torch
import yaml

from lightning_pspc.evaluation import EvalData, EvalSeeds, Evaluation
from lightning_pspc.evaluation.members.agreement import Agreement
from lightning_pspc.evaluation.plots import transition_figure
from lightning_pspc.evaluation.plots.generalization_charts import phase_diagram_figure
from lightning_pspc.evaluation.plots.transition_charts import draw_linearity_panel, draw_twins_panel
from lightning_pspc.evaluation.twin_runs import (
    TwinError,
    histories_by_size,
    memorization_history,
    twin_pairs,
)


@pytest.fixture(scope="module")
def data(tiny_datamodule) -> EvalData:
    return EvalData.from_datamodule(tiny_datamodule(24, 8, 8))


def test_agreement_of_a_reference_with_itself_is_perfect(data):
    ev = Evaluation(data, [Agreement(("empirical", "gaussian"), 5, 4)], ["empirical"])
    result = ev.evaluate(ev.references["empirical"])["agreement"]
    emp, gauss = result.stats["empirical"], result.stats["gaussian"]
    assert emp["pearson_median"] == pytest.approx(1.0) and emp["mse_q75"] == pytest.approx(0.0)
    assert gauss["pearson_median"] < 0.999 and gauss["mse_median"] > 1e-4
    assert emp["pearson_q25"] <= emp["pearson_median"] <= emp["pearson_q75"]
    # the closed-form samples are computed once; a second evaluation costs network samples only
    assert ev.members["agreement"].work() == 5
    assert ev.seeds == EvalSeeds.derive(0) and len({*vars(ev.seeds).values()}) == len(
        vars(EvalSeeds.derive(0))
    )


def test_agreement_reuses_the_memorization_samples(data):
    from lightning_pspc.evaluation import Memorization

    class Counting(torch.nn.Module):
        calls = 0

        def forward(self, z, sigma):
            Counting.calls += 1
            return 0.5 * z

    net = Counting()
    ev = Evaluation(data, [Memorization(6, 3), Agreement(("gaussian",), 4, 3)])
    assert ev.members["agreement"].work() == 4  # the Gaussian's samples only
    results = ev.evaluate(net)
    assert Counting.calls == 5  # one Heun run of 3 steps (5 calls) for both members
    memo, agreement = results["memorization"], results["agreement"]
    assert torch.equal(agreement.network, memo.samples[:4])
    alone = Evaluation(data, [Agreement(("gaussian",), 4, 3)]).evaluate(net)["agreement"]
    assert alone.network.shape == agreement.network.shape
    assert not torch.equal(alone.network, agreement.network)  # its own agreement_noise


def _run(root, name: str, subset: str | None, num_train: int = 16) -> str:
    folder = root / name
    folder.mkdir()
    data = {"num_train": num_train, "batch_size": 4} | ({"subset": subset} if subset else {})
    config = {"model": {"lr": 0.001}, "data": data, "run_name": name}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return str(folder / "last.ckpt")


def test_twin_pairs_come_from_the_configs(tmp_path):
    paths = [
        _run(tmp_path, "x-n16-b", "b"),
        _run(tmp_path, "plain", None),
        _run(tmp_path, "x-n32-a", "a", 32),
        _run(tmp_path, "x-n16-a", "a"),
        _run(tmp_path, "x-n32-b", "b", 32),
    ]
    assert twin_pairs(paths) == [(2, 4), (3, 0)]
    with pytest.raises(TwinError, match="x-n32-a.*no partner trained on subset 'b'"):
        twin_pairs(paths[:4])
    with pytest.raises(TwinError, match="do not pair up"):
        twin_pairs([*paths, _run(tmp_path, "again-n16-a", "a")])
    other_n = [_run(tmp_path, "y-n16-a", "a"), _run(tmp_path, "y-n8-b", "b", 8)]
    with pytest.raises(TwinError, match="y-n16-a"):
        twin_pairs(other_n)


def test_memorization_history_from_a_checkpoint():
    record = {"memorized_fraction": 0.5, "nearest_neighbour": {}, "images_seen": 64}
    ckpt = {
        "callbacks": {
            "MemorizationMonitor{'seed': 0, 'num_samples': 4}": {
                "histories": {"memorization": [[1, {**record, "images_seen": 32}], [2, record]]}
            },
            "MemorizationMonitor{'seed': 1, 'num_samples': 4}": {
                "histories": {"memorization": [[2, record]]}
            },
            "DenoiserComparison{}": {"histories": {"compare": []}},
        }
    }
    assert memorization_history(ckpt) == [
        {"epoch": 1, "images_seen": 32, "memorized_fraction": 0.5},
        {"epoch": 2, "images_seen": 64, "memorized_fraction": 0.5},
    ]
    assert memorization_history({"state_dict": {}}) == []


def test_transition_gains_the_twin_panel_and_the_phase_diagram_draws():
    records = [
        {"num_train": n, "memorized_fraction": f, "bands": {"empirical": {"train": {"mid": m}}}}
        for n, f, m in ((8, 1.0, 0.01), (64, 0.2, 0.05))
    ]
    twins = [
        {"num_train": 8, "twin_cos_median": 0.2, "train_cos_median": 0.99, "reproducibility": 0.0},
        {"num_train": 64, "twin_cos_median": 0.9, "train_cos_median": 0.7, "reproducibility": 0.5},
    ]
    sigmas = [20.0, 5.0, 1.0, 0.1]
    for rec, lin in zip(records, ([0.99, 0.5, 0.7, 1.0], [0.99, 0.8, 0.9, 1.0])):
        nmse = [0.1, 0.2, 0.4, 9.0]  # the last is outside the mid band
        rec["generalization"] = {"sigmas": sigmas, "linearity": lin, "gaussian_nmse": nmse}
    records.append({**records[1], "generalization": {**records[1]["generalization"]}})
    records[2]["generalization"]["linearity"] = [0.99, 0.6, 0.9, 1.0]  # a second run at N = 64
    fig = transition_figure(
        records,
        [lambda ax: draw_twins_panel(ax, twins), lambda ax: draw_linearity_panel(ax, records)],
    )
    assert len(fig.axes) == 4
    lines = {ln.get_label(): ln.get_ydata().tolist() for ln in fig.axes[2].get_lines()}
    assert lines["reproducibility"] == [0.0, 0.5]
    lines = {ln.get_label(): ln.get_ydata().tolist() for ln in fig.axes[3].get_lines()}
    assert lines["min linearity over sigma"] == pytest.approx([0.5, 0.7])  # mean of 0.8, 0.6
    assert lines["Gaussian NMSE, mid sigma"] == pytest.approx([0.3, 0.3])
    histories = {
        8: [
            {"images_seen": 32, "memorized_fraction": 0.1},
            {"images_seen": 64, "memorized_fraction": 0.9},
        ],
        64: [{"images_seen": 64, "memorized_fraction": 0.0}],
    }
    fig = phase_diagram_figure(histories)
    grid = fig.axes[1].images[0].get_array()
    assert grid.shape == (2, 2) and grid[0, 1] == pytest.approx(0.9) and grid.mask[1, 0]
    assert torch.isfinite(torch.tensor(float(grid[1, 1])))


def test_histories_of_twin_halves_are_averaged_per_size():
    def rec(n, fracs, start=100):
        rows = [
            {"images_seen": start * (i + 1), "memorized_fraction": f} for i, f in enumerate(fracs)
        ]
        return {"num_train": n, "memorization_history": rows}

    merged = histories_by_size(
        [rec(8, [0.0, 0.5, 1.0]), rec(8, [0.5, 1.0]), rec(64, [0.0]), {"num_train": 16}]
    )
    assert list(merged) == [8, 64]  # N = 16 has no history
    assert [r["memorized_fraction"] for r in merged[8]] == [0.25, 0.75, 1.0]
    assert [r["runs"] for r in merged[8]] == [2, 2, 1]
    assert [r["images_seen"] for r in merged[8]] == [100, 200, 300]
