"""The sweep's transition checks on hand-made reports."""

import math

from lightning_pspc.evaluation.transition import check_lines, transition_checks, transition_rows


def _rec(n, frac, mid):
    return {
        "num_train": n,
        "memorized_fraction": frac,
        "bands": {"empirical": {"train": {"mid": mid}}},
    }


def _twin(n, twin, train):
    return {
        "num_train": n,
        "twin_cos_median": twin,
        "train_cos_median": train,
        "reproducibility": 0.0,
    }


def _report(fracs, mids, twins=None):
    sizes = [8, 16, 32, 64]
    recs = []
    for n, f, m in zip(sizes, fracs, mids):  # two twin runs per size: their mean is f
        recs += [_rec(n, f - 0.02, m), _rec(n, f + 0.02, m)]
    return {"checkpoints": recs, "twins": twins or []}


def test_a_resolved_transition_passes_every_check():
    # twin similarity dips between the two smallest sizes (both memorize): a trend still rises
    twins = [_twin(8, 0.5, 0.99), _twin(16, 0.45, 0.9), _twin(32, 0.6, 0.8), _twin(64, 0.8, 0.7)]
    report = _report([0.95, 0.6, 0.3, 0.03], [0.01, 0.02, 0.03, 0.04], twins)
    rows = transition_rows(report)
    assert [r["num_train"] for r in rows] == [8, 16, 32, 64]
    assert [r["runs"] for r in rows] == [2, 2, 2, 2]
    assert math.isclose(rows[1]["memorized_fraction"], 0.6)
    assert rows[2]["twin_cos_median"] == 0.6
    checks = transition_checks(report)
    assert [c.passed for c in checks] == [True] * 6
    assert "Spearman +0.80" in checks[3].detail and "other way: N=8->16" in checks[3].detail
    assert "Spearman -1.00" in checks[4].detail and "other way" not in checks[4].detail
    assert check_lines(checks)[0].startswith("transition resolved (6/6")


def test_each_failure_is_named_with_its_values():
    twins = [_twin(8, 0.5, 0.9), _twin(16, 0.4, 0.95), _twin(32, 0.3, 0.99), _twin(64, 0.6, 0.7)]
    # 0.85 at the smallest (the only size in the band), 0.07 at the largest; rank correlations
    # with N of +0.2 (twins, MSE) and -0.2 (training similarity)
    report = _report([0.85, 0.95, 0.07, 0.07], [0.03, 0.02, 0.01, 0.04], twins)
    by = {c.name: c for c in transition_checks(report)}
    assert by["memorized_at_smallest"].passed is False
    assert "0.850 at N=8" in by["memorized_at_smallest"].detail
    assert by["generalizes_at_largest"].passed is False
    assert by["sizes_in_transition"].passed is False
    assert "N=8 (0.850)" in by["sizes_in_transition"].detail
    assert by["twin_similarity_rises"].passed is False
    assert by["training_similarity_falls"].passed is False
    assert by["empirical_mse_rises"].passed is False
    assert check_lines(list(by.values()))[0].startswith("transition NOT resolved (0/6")


def test_without_twins_or_with_one_size_the_checks_say_not_applicable():
    report = _report([0.95, 0.6, 0.3, 0.03], [0.01, 0.02, 0.03, 0.04])
    by = {c.name: c for c in transition_checks(report)}
    assert by["twin_similarity_rises"].passed is None
    assert by["empirical_mse_rises"].passed is True
    one = {"checkpoints": [_rec(8, 1.0, 0.01)]}
    assert [c.passed for c in transition_checks(one)] == [None]
