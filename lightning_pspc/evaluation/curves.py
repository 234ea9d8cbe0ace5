"""Per-sigma curves of evaluation records as long tables, for W&B line plots.

The PNG charts fix one run and one set of epochs; W&B tables with line plots let runs and epochs
overlay interactively. Every curve is a list of ``(series, sigma, value)`` points; a table row
is ``[run, epoch, series, line, sigma, value]`` with ``line`` = run, epoch and series in one
label (the plot's stroke). Three charts: ``distances`` (MSE to each reference per probe kind),
``patch_sizes`` (sensitivity and best-fit patch sizes) and ``linearity`` (linearity and the
normalised MSE to the Gaussian denoiser).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Curve = list[tuple[str, float, float]]

CURVE_COLUMNS = ["run", "epoch", "series", "line", "sigma", "value"]
CHART_TITLES = {
    "distances": "MSE(network, reference) vs sigma",
    "patch_sizes": "patch size vs sigma",
    "linearity": "linearity and Gaussian NMSE vs sigma",
}


def _points(series: str, sigmas: Sequence[float], values: Iterable[Any]) -> Curve:
    """``(series, sigma, value)`` of the finite values (NaN is ``None`` in metrics.json)."""
    return [
        (series, float(s), float(v))
        for s, v in zip(sigmas, values)
        if v is not None and math.isfinite(float(v))
    ]


def distance_curves(sigmas: Sequence[float], mse: Mapping[str, Mapping[str, Any]]) -> Curve:
    """``mse[reference][kind] [S]`` (metrics.json's ``mse``) -> series ``"<reference> <kind>"``."""
    return [
        p
        for ref, kinds in mse.items()
        for k, v in kinds.items()
        for p in _points(f"{ref} {k}", sigmas, v)
    ]


def patch_size_curves(locality: Mapping[str, Any]) -> Curve:
    """A locality record (:meth:`LocalityResult.to_json`) -> ``"sensitivity f50"``, ...,
    ``"best fit pspc"``, ... series."""
    sigmas = locality["sigmas"]
    curve = []
    for key, sizes in locality.get("sensitivity_patch_size", {}).items():
        curve += _points(f"sensitivity {key}", sigmas, sizes)
    for kind, sizes in locality.get("best_fit_patch_size", {}).items():
        curve += _points(f"best fit {kind}", sigmas, sizes)
    return curve


def linearity_curves(generalization: Mapping[str, Any]) -> Curve:
    """A generalization record -> ``"linearity"`` and ``"gaussian_nmse"`` series."""
    sigmas = generalization["sigmas"]
    return _points("linearity", sigmas, generalization.get("linearity", [])) + _points(
        "gaussian_nmse", sigmas, generalization.get("gaussian_nmse", [])
    )


def record_curves(record: Mapping[str, Any]) -> dict[str, Curve]:
    """The curves of one checkpoint record of ``metrics.json`` (charts without data left out)."""
    curves = {}
    if record.get("mse"):
        curves["distances"] = distance_curves(record["sigmas"], record["mse"])
    if record.get("locality"):
        curves["patch_sizes"] = patch_size_curves(record["locality"])
    if record.get("generalization"):
        curves["linearity"] = linearity_curves(record["generalization"])
    return {k: v for k, v in curves.items() if v}


def member_curves(name: str, record: Any, sigmas: Sequence[float]) -> dict[str, Curve]:
    """The curves of a member's per-evaluation record (what the callbacks keep in their
    histories): ``compare`` (``{kind: {reference: [S]}}`` on ``sigmas``), ``locality``,
    ``generalization``; other members have none."""
    if name == "compare":
        by_ref: dict[str, dict[str, Any]] = {}
        for kind, table in record.items():
            for ref, values in table.items():
                by_ref.setdefault(ref, {})[kind] = values
        curves = {"distances": distance_curves(sigmas, by_ref)}
    elif name == "locality":
        curves = {"patch_sizes": patch_size_curves(record)}
    elif name == "generalization":
        curves = {"linearity": linearity_curves(record)}
    else:
        return {}
    return {k: v for k, v in curves.items() if v}


def curve_rows(run: str, epoch: int | None, curves: Mapping[str, Curve]) -> dict[str, list[list]]:
    """``{chart: rows}`` of :data:`CURVE_COLUMNS` for one evaluation (``epoch`` ``None``: a
    network trained elsewhere)."""
    when = "network" if epoch is None else f"epoch {epoch}"
    return {
        chart: [[run, epoch, s, f"{run} {when}: {s}".strip(), sigma, v] for s, sigma, v in points]
        for chart, points in curves.items()
    }


def merge_rows(
    into: dict[str, list[list]], rows: Mapping[str, list[list]]
) -> dict[str, list[list]]:
    """Append ``rows`` chart by chart to ``into`` (returned)."""
    for chart, chart_rows in rows.items():
        into.setdefault(chart, []).extend(chart_rows)
    return into


def wandb_line_plots(rows: Mapping[str, list[list]], prefix: str = "") -> dict[str, Any]:
    """``{f"{prefix}curves/{chart}": wandb.plot.line(...)}``: per chart a ``wandb.Table`` of
    ``rows`` with a line plot of value against sigma, one line per ``line`` label."""
    import wandb

    plots = {}
    for chart, chart_rows in rows.items():
        table = wandb.Table(columns=CURVE_COLUMNS, data=chart_rows)
        title = CHART_TITLES.get(chart, chart)
        plots[f"{prefix}curves/{chart}"] = wandb.plot.line(
            table, "sigma", "value", stroke="line", title=title
        )
    return plots
