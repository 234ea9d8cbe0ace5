"""Does a sweep resolve the memorization-to-generalization transition? Per-size summary and checks.

:func:`transition_rows` reduces an evaluation report (``metrics.json``: one record per
checkpoint, twin records) to one row per training-set size ``N`` (runs of one size averaged, as
in the transition chart): memorized fraction, MSE to the empirical denoiser in the middle sigma
band on training probes, and, for twin runs, the twins' median centred cosine and the median
cosine of a sample to its nearest training image; with the linear distillation, the mean over
the middle sigma band of the distilled linear map's normalised MSE to the Gaussian denoiser
(Li et al. 2024 find it falls as the network generalizes).

:func:`transition_checks` states, with their values, the properties a resolved transition shows
(the sweep prints them and keeps them in ``sweep.json``):

* ``memorized_at_smallest``: memorized fraction >= 0.9 at the smallest N;
* ``generalizes_at_largest``: memorized fraction <= 0.05 at the largest N;
* ``sizes_in_transition``: at least two sizes with a memorized fraction strictly in (0.1, 0.9);
* ``twin_similarity_rises``: the twins' similarity rises from each size to the next;
* ``training_similarity_falls``: the similarity to the nearest training image falls likewise;
* ``empirical_mse_rises``: the mid-band MSE to the empirical denoiser rises likewise.

"Rises with N" is a trend over all sizes: Spearman's rank correlation with N at least
:data:`MIN_RANK_CORRELATION` (0.8) and the largest size above the smallest ("falls": at most
-0.8, below). Single steps may go the other way within the noise of the estimates (e.g. twin
similarity between two sizes that both memorize); the detail names each such step. A check
that lacks its data (no twins, one size) is reported as not applicable (``passed = None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .plots.linear_charts import mid_band_mean

#: The transition band of the memorized fraction and the ends' thresholds.
BAND = (0.1, 0.9)
SMALLEST_MIN = 0.9
LARGEST_MAX = 0.05
MIN_SIZES_IN_BAND = 2
MIN_RANK_CORRELATION = 0.8


@dataclass(frozen=True)
class Check:
    """One property of the transition: ``passed`` is None when the report lacks its data."""

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "yes", False: "NO", None: "n/a"}[self.passed]
        return f"{self.name:<26} {mark:<4} {self.detail}"


def _mean(values: Sequence[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def transition_rows(report: Mapping) -> list[dict[str, float]]:
    """One row per training-set size, sorted by N: ``num_train``, ``runs``,
    ``memorized_fraction``, ``empirical_mse_mid`` (training probes), where the records have a
    ``linear_distillation`` entry ``linear_gaussian_nmse_mid`` (mid-band mean of the distilled
    map's normalised MSE to the Gaussian denoiser) and, where the report has twins of that size,
    ``twin_cos_median``, ``train_cos_median``, ``reproducibility``."""
    by_n: dict[int, list[Mapping]] = {}
    for rec in report.get("checkpoints", []):
        by_n.setdefault(int(rec["num_train"]), []).append(rec)
    twins = {int(t["num_train"]): t for t in report.get("twins") or []}
    rows = []
    for n in sorted(by_n):
        recs = by_n[n]
        row = {
            "num_train": n,
            "runs": len(recs),
            "memorized_fraction": _mean([r.get("memorized_fraction") for r in recs]),
            "empirical_mse_mid": _mean(
                [r.get("bands", {}).get("empirical", {}).get("train", {}).get("mid") for r in recs]
            ),
        }
        linear = [
            mid_band_mean(r["linear_distillation"]) for r in recs if r.get("linear_distillation")
        ]
        if linear:
            row["linear_gaussian_nmse_mid"] = _mean(linear)
        if n in twins:
            for key in ("twin_cos_median", "train_cos_median", "reproducibility"):
                row[key] = float(twins[n][key])
        rows.append(row)
    return rows


def _ranks(values: Sequence[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def _trend(rows: Sequence[Mapping], key: str, rising: bool, name: str) -> Check:
    pts = [(r["num_train"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
    if len(pts) < 2:
        return Check(name, None, f"needs {key} at two or more sizes")
    sizes, values = zip(*pts)
    rho = float(np.corrcoef(_ranks(sizes), _ranks(values))[0, 1]) if len(set(values)) > 1 else 0.0
    sign = 1 if rising else -1
    ok = sign * rho >= MIN_RANK_CORRELATION - 1e-9 and sign * (values[-1] - values[0]) > 0
    against = [f"N={a[0]}->{b[0]}" for a, b in zip(pts, pts[1:]) if sign * (b[1] - a[1]) <= 0]
    detail = f"Spearman {rho:+.2f}; {key} " + ", ".join(f"N={n}: {v:.4g}" for n, v in pts)
    if against:
        detail += f"; steps the other way: {', '.join(against)}"
    return Check(name, ok, detail)


def transition_checks(report: Mapping) -> list[Check]:
    """The checks listed in the module docstring, in that order."""
    rows = transition_rows(report)
    if len(rows) < 2:
        return [Check("sizes", None, "needs two or more training-set sizes")]
    frac = [(r["num_train"], r["memorized_fraction"]) for r in rows]
    (n0, f0), (n1, f1) = frac[0], frac[-1]
    inside = [(n, f) for n, f in frac if BAND[0] < f < BAND[1]]
    return [
        Check(
            "memorized_at_smallest",
            f0 >= SMALLEST_MIN,
            f"memorized fraction {f0:.3f} at N={n0} (wanted >= {SMALLEST_MIN})",
        ),
        Check(
            "generalizes_at_largest",
            f1 <= LARGEST_MAX,
            f"memorized fraction {f1:.3f} at N={n1} (wanted <= {LARGEST_MAX})",
        ),
        Check(
            "sizes_in_transition",
            len(inside) >= MIN_SIZES_IN_BAND,
            f"{len(inside)} sizes strictly inside {BAND}"
            + (": " + ", ".join(f"N={n} ({f:.3f})" for n, f in inside) if inside else ""),
        ),
        _trend(rows, "twin_cos_median", True, "twin_similarity_rises"),
        _trend(rows, "train_cos_median", False, "training_similarity_falls"),
        _trend(rows, "empirical_mse_mid", True, "empirical_mse_rises"),
    ]


def check_lines(checks: Sequence[Check]) -> list[str]:
    """Printable lines: a header, then one per check."""
    resolved = all(c.passed for c in checks if c.passed is not None)
    head = "transition resolved" if resolved else "transition NOT resolved"
    return [f"{head} ({sum(c.passed is True for c in checks)}/{len(checks)} checks pass):"] + [
        "  " + c.line() for c in checks
    ]
