"""Charts across training-set sizes: the transition, twin models, locality against N."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from ..probes import SIGMA_BANDS
from .common import (
    BAND_COLORS,
    KIND_LABELS,
    KIND_STYLES,
    as_array,
    grid_axes,
    log_axes,
    mosaic,
    tile_start,
)
from .linear_charts import draw_linear_line


def transition_figure(
    records: Sequence[Mapping], extra: Sequence[Callable[[Axes], None]] = ()
) -> Figure:
    """The memorization-to-generalization transition against the training-set size (log x).

    ``records``: one per run, ``{"num_train": N, "memorized_fraction": f, "bands": {reference:
    {kind: {band: mse}}}}``. Panel 1: memorized fraction; then one panel per reference with the
    MSE in the low / mid / high sigma bands (colour) for each probe kind (line style). Several
    records with the same ``N`` are averaged. Each of ``extra`` draws one more panel on the axes
    it is given (e.g. the twin models', :func:`draw_twins_panel`).
    """
    sizes = sorted({int(r["num_train"]) for r in records})

    def mean_at(n: int, get) -> float:
        vals = [get(r) for r in records if int(r["num_train"]) == n]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return float(np.mean(vals)) if vals else math.nan

    refs = list(dict.fromkeys(ref for r in records for ref in r.get("bands", {})))
    panels = 1 + len(refs) + len(extra)
    fig = Figure(figsize=(4.2 * panels, 4.1))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.22, top=0.86, wspace=0.25)
    ax = fig.add_subplot(1, panels, 1)
    frac = [mean_at(n, lambda r: r.get("memorized_fraction")) for n in sizes]
    ax.plot(sizes, frac, "o-", color="tab:red")
    log_axes(ax, x_base=2, y_log=False)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training-set size N")
    ax.set_ylabel("memorized fraction of samples")
    ax.set_title("memorization (d1/d2 < 1/3)")
    ax.grid(True, alpha=0.3)
    for i, ref in enumerate(refs):
        ax = fig.add_subplot(1, panels, i + 2)
        for kind, style in KIND_STYLES.items():
            for band in SIGMA_BANDS:

                def get(r, ref=ref, kind=kind, band=band):
                    return r.get("bands", {}).get(ref, {}).get(kind, {}).get(band)

                ys = [mean_at(n, get) for n in sizes]
                if all(math.isnan(y) for y in ys):
                    continue
                ax.plot(
                    sizes,
                    ys,
                    style,
                    marker="o",
                    ms=3,
                    color=BAND_COLORS[band],
                    label=f"{band} sigma, {kind}",
                )
        log_axes(ax, x_base=2)
        ax.set_xlabel("training-set size N")
        ax.set_title(f"MSE(network, {ref})")
        ax.grid(True, alpha=0.3)
    for i, draw in enumerate(extra):
        draw(fig.add_subplot(1, panels, len(refs) + i + 2))
    lo, mid = SIGMA_BANDS["low"][1], SIGMA_BANDS["mid"][1]
    names = {"low": f"sigma < {lo:g}", "mid": f"sigma {lo:g}-{mid:g}", "high": f"sigma > {mid:g}"}
    keys = [Line2D([], [], color=BAND_COLORS[b], label=names[b]) for b in SIGMA_BANDS]
    keys += [
        Line2D([], [], color="gray", ls=st, label=KIND_LABELS[k]) for k, st in KIND_STYLES.items()
    ]
    fig.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=8, frameon=False)
    fig.suptitle("Memorization-to-generalization transition with the training-set size")
    return fig


def twins_figure(pairs: Sequence[tuple[int, Tensor, Tensor]], cols: int = 8) -> Figure:
    """Twin samples side by side: for each ``(N, samples_a [M,C,H,W], samples_b)`` two rows,
    twin a above twin b (the same noise in each column)."""
    rows = []
    width = max(min(cols, a.shape[0]) for _, a, _ in pairs)
    for _, a, b in pairs:
        a, b = a[:width], b[:width]
        pad = a.new_ones((width - a.shape[0], *a.shape[1:]))
        rows += [torch.cat([a, pad]), torch.cat([b, pad])]
    tiles = torch.stack(rows)  # [2 * pairs, width, C, H, W]
    h = tiles.shape[-2]
    fig = Figure(figsize=(1.0 * width + 1.4, 1.0 * len(rows) + 0.6))
    image = mosaic(tiles)
    ax = grid_axes(fig, image, rect=(0.16, 0.02, 0.82, 0.88))
    labels = [f"N={n} {t}" for n, _, _ in pairs for t in ("a", "b")]
    starts = [tile_start(i, h) for i in range(len(rows))]
    ax.set_yticks([y + h / 2 for y in starts], labels, fontsize=8)
    ax.tick_params(length=0)
    fig.suptitle("Twin models (disjoint halves) sampled from the same noise", fontsize=9)
    return fig


def draw_twins_panel(ax: Axes, twins: Sequence[Mapping]) -> None:
    """Twin similarity, nearest-training similarity and reproducibility against N on ``ax``
    (``twins``: records of :func:`lightning_pspc.evaluation.twin_runs.twin_record`)."""
    rows = sorted(twins, key=lambda t: t["num_train"])
    sizes = [t["num_train"] for t in rows]
    for key, label, color in (
        ("twin_cos_median", "twins' samples (median cos)", "tab:purple"),
        ("train_cos_median", "sample vs nearest training (median cos)", "tab:gray"),
        ("reproducibility", "reproducibility", "tab:red"),
    ):
        ax.plot(sizes, as_array([t.get(key) for t in rows]), "o-", ms=3, color=color, label=label)
    log_axes(ax, x_base=2, y_log=False)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training-set size N (per twin)")
    ax.set_title("twin models (centred cosine)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def draw_linearity_panel(ax: Axes, records: Sequence[Mapping]) -> None:
    """Per training-set size (runs of one N averaged): the lowest linearity score over sigma and
    the normalised Gaussian MSE averaged over the mid sigma band [0.25, 10) (records of
    ``eval.py`` with a ``generalization`` entry; Li et al. 2024: both move with N), and that of
    the network's distilled linear map (records with a ``linear_distillation`` entry)."""
    by_n: dict[int, list[tuple[float, float]]] = {}
    for rec in records:
        gen = rec.get("generalization")
        if not gen:
            continue
        lin = as_array(gen["linearity"])
        nmse = as_array(gen["gaussian_nmse"])
        sig = np.array(gen["sigmas"], dtype=float)
        mid = (sig >= 0.25) & (sig < 10) & np.isfinite(nmse)
        low = float(np.nanmin(lin)) if np.isfinite(lin).any() else math.nan
        by_n.setdefault(int(rec["num_train"]), []).append(
            (low, float(nmse[mid].mean()) if mid.any() else math.nan)
        )
    sizes = sorted(by_n)
    lows = [float(np.nanmean([v[0] for v in by_n[n]])) for n in sizes]
    nmses = [float(np.nanmean([v[1] for v in by_n[n]])) for n in sizes]
    if sizes:
        ax.plot(sizes, lows, "o-", ms=3, color="tab:blue", label="min linearity over sigma")
        ax.plot(sizes, nmses, "s--", ms=3, color="tab:brown", label="Gaussian NMSE, mid sigma")
    draw_linear_line(ax, records)
    log_axes(ax, x_base=2, y_log=False)
    ax.set_xlabel("training-set size N")
    ax.set_title("linearity and Gaussian fit")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _patch_size_at(record: Mapping[str, Any], sigma: float, key: str) -> float:
    """The sensitivity patch size ``key`` of an ``eval.py`` record at its locality sigma ``sigma``."""
    loc = record["locality"]
    return loc["sensitivity_patch_size"][key][loc["sigmas"].index(sigma)]


def locality_transition_figure(records: Sequence[Mapping[str, Any]], key: str = "f50") -> Figure:
    """Sensitivity patch size (fraction ``key``) against training-set size N, one line per
    sigma of the first record (records without that sigma left out of its line), from the
    ``eval.py`` records that carry ``locality``; the panel of the transition
    chart for locality (drawn as its own figure so it merges with any transition layout)."""
    recs = [r for r in records if r.get("locality")]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if recs:
        sigmas = recs[0]["locality"]["sigmas"]
        sizes = sorted({r["num_train"] for r in recs})
        for s in sigmas:  # by value: a network's sigmas may be clipped to its range
            ys = [
                np.mean(
                    [
                        _patch_size_at(r, s, key)
                        for r in recs
                        if r["num_train"] == n and s in r["locality"]["sigmas"]
                    ]
                    or [np.nan]
                )
                for n in sizes
            ]
            ax.plot(sizes, ys, "o-", label=f"sigma {s:.3g}")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    ax.set_xlabel("training-set size N")
    ax.set_ylabel(f"sensitivity patch size ({key})")
    ax.set_title("locality against training-set size")
    return fig
