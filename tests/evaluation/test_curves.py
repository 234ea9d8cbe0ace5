"""Per-sigma curves as long tables: every finite value of a record, once, with its sigma."""

from __future__ import annotations

import math

from lightning_pspc.evaluation.curves import (
    CURVE_COLUMNS,
    curve_rows,
    member_curves,
    merge_rows,
    record_curves,
    wandb_line_plots,
)

RECORD = {
    "sigmas": [2.0, 1.0],
    "mse": {"empirical": {"train": [0.5, None], "reverse": [0.25, 0.125]}},
    "locality": {
        "sigmas": [1.0],
        "sensitivity_patch_size": {"f50": [3.0]},
        "best_fit_patch_size": {"pspc": [5]},
    },
    "generalization": {"sigmas": [2.0, 1.0], "linearity": [0.9, 0.8], "gaussian_nmse": [0.1, 0.2]},
}


def test_a_metrics_record_gives_each_finite_value_with_its_sigma():
    curves = record_curves(RECORD)
    assert curves["distances"] == [
        ("empirical train", 2.0, 0.5),  # the None (NaN in metrics.json) is left out
        ("empirical reverse", 2.0, 0.25),
        ("empirical reverse", 1.0, 0.125),
    ]
    assert curves["patch_sizes"] == [("sensitivity f50", 1.0, 3.0), ("best fit pspc", 1.0, 5.0)]
    assert curves["linearity"] == [
        ("linearity", 2.0, 0.9),
        ("linearity", 1.0, 0.8),
        ("gaussian_nmse", 2.0, 0.1),
        ("gaussian_nmse", 1.0, 0.2),
    ]
    assert record_curves({"sigmas": [1.0], "mse": {}}) == {}


def test_the_callbacks_history_records_give_the_same_curves():
    table = {"train": {"empirical": [0.5, math.nan]}, "reverse": {"empirical": [0.25, 0.125]}}
    distances = member_curves("compare", table, RECORD["sigmas"])
    assert distances == {"distances": record_curves(RECORD)["distances"]}
    assert member_curves("locality", RECORD["locality"], []) == {
        "patch_sizes": record_curves(RECORD)["patch_sizes"]
    }
    assert member_curves("memorization", {"memorized_fraction": 0.1}, []) == {}


def test_rows_label_run_and_epoch_and_overlay_in_one_table():
    rows = curve_rows("run-a", 3, {"linearity": [("linearity", 2.0, 0.9)]})
    merge_rows(rows, curve_rows("net", None, {"linearity": [("linearity", 2.0, 0.7)]}))
    assert rows == {
        "linearity": [
            ["run-a", 3, "linearity", "run-a epoch 3: linearity", 2.0, 0.9],
            ["net", None, "linearity", "net network: linearity", 2.0, 0.7],
        ]
    }
    ((key, plot),) = wandb_line_plots(rows, "eval/").items()
    assert key == "eval/curves/linearity"
    assert plot.table.columns == CURVE_COLUMNS and plot.table.data == rows["linearity"]
