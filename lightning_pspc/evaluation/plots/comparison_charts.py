"""Charts of the comparison with the references: MSE against sigma, epoch x sigma maps, panels."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import Tensor

from .common import (
    KIND_LABELS,
    finite,
    grid_axes,
    log_axes,
    mosaic,
    plot_over_evaluations,
    tile_centre,
    tile_start,
)


def mse_vs_sigma_figure(
    sigmas: Tensor,
    history: Sequence[tuple[int, Mapping[str, Tensor]]],
    reference: str,
    schedule: str = "",
) -> Figure:
    """MSE of the network to ``reference`` against sigma (log-log), one panel per probe kind.

    ``history``: ``(epoch, {kind: mse [S]})`` in order; the last one (this epoch) is drawn bold
    in black, earlier epochs thin, coloured from light to dark by epoch (Niedoba et al., fig. 2).
    ``schedule``: the reference's window schedule, named in the title (e.g. ``calibrated``).
    """
    kinds = [k for k in KIND_LABELS if any(k in table for _, table in history)]
    fig = Figure(figsize=(4.2 * max(len(kinds), 1), 3.4))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.83, wspace=0.28)
    s = sigmas.double().cpu().numpy()
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        lines = [(j, (e, t[kind])) for j, (e, t) in enumerate(history) if kind in t]
        plot_over_evaluations(ax, s, lines, len(history))
        log_axes(ax)
        ax.set_xlabel("sigma")
        ax.set_title(KIND_LABELS[kind])
        ax.grid(True, which="major", alpha=0.3)
        if i == 0:
            ax.set_ylabel(f"MSE(network, {reference})")
            ax.legend(fontsize=8)
    named = f" ({schedule} windows)" if schedule else ""
    fig.suptitle(f"Distance to the {reference} denoiser{named}")
    return fig


def heatmap_figure(sigmas: Tensor, epochs: Sequence[int], tables: Mapping[str, Tensor]) -> Figure:
    """Heat maps epoch x sigma (log colour scale), one per probe kind: ``tables[kind] [E, S]``."""
    kinds = [k for k in KIND_LABELS if k in tables]
    height = 1.9 + 0.22 * max(len(epochs), 4)  # inches: fixed margins plus one row per epoch
    fig = Figure(figsize=(4.6 * max(len(kinds), 1), height))
    fig.subplots_adjust(
        left=0.06, right=0.95, bottom=1.0 / height, top=1 - 0.6 / height, wspace=0.3
    )
    labels = [f"{s:.2g}" for s in sigmas.tolist()]
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        data = finite(tables[kind])
        positive = data[np.isfinite(data) & (data > 0)]
        norm = LogNorm(positive.min(), positive.max()) if positive.size else None
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="magma", norm=norm)
        ax.set_xticks(range(len(labels))[::2], labels[::2], rotation=90, fontsize=7)
        ax.set_yticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax.set_xlabel("sigma")
        ax.set_ylabel("epoch")
        ax.set_title(KIND_LABELS[kind], fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle("MSE(network, empirical) by epoch and sigma")
    return fig


def panel_figure(panel: Mapping[str, Tensor], sigmas: Tensor, title: str = "") -> Figure:
    """Rows: sigmas ``[K]``; columns: the ``[K, C, H, W]`` entries of ``panel`` in order.

    With ``panel = {"noisy", "network", "empirical", "pspc", "gaussian"}`` this is the layout of
    figure 1 of Niedoba et al. (2025).
    """
    cols, rows = list(panel), sigmas.numel()
    tiles = torch.stack([panel[name][:rows] for name in cols], dim=1)  # [K, cols, C, H, W]
    h, w = tiles.shape[-2:]
    fig = Figure(figsize=(1.1 * len(cols) + 1.0, 1.1 * rows + 0.6))
    ax = grid_axes(fig, mosaic(tiles))
    ax.set_xticks([tile_centre(i, w) for i in range(len(cols))], cols, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(
        [tile_centre(i, h) for i in range(rows)], [f"sigma {s:.3g}" for s in sigmas.tolist()]
    )
    ax.tick_params(length=0, labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def neighbours_figure(
    samples: Tensor, neighbours: Tensor, ratio: Tensor, threshold: float = 1 / 3, cols: int = 8
) -> Figure:
    """Each sample (top) above its nearest training image (below), ``d1/d2`` printed beside it.

    ``samples``, ``neighbours`` ``[M, C, H, W]``; ``ratio [M]``; ratios of memorized samples
    (below ``threshold``, Gu et al. 2023) are printed in red.
    """
    m = samples.shape[0]
    cols = max(1, min(cols, m))
    rows = math.ceil(m / cols)
    blank = samples.new_ones((rows * cols - m, *samples.shape[1:]))
    s = torch.cat([samples, blank]).view(rows, 1, cols, *samples.shape[1:])
    n = torch.cat([neighbours, blank]).view(rows, 1, cols, *samples.shape[1:])
    tiles = torch.cat([s, n], dim=1).flatten(0, 1)  # [2*rows, cols, C, H, W]
    h, w = samples.shape[-2:]
    fig = Figure(figsize=(1.0 * cols + 1.0, 2.1 * rows + 0.6))
    ax = grid_axes(fig, mosaic(tiles))
    for i in range(m):
        r, c = divmod(i, cols)
        mem = float(ratio[i]) < threshold
        ax.text(
            tile_start(c, w),
            tile_start(2 * r, h),
            f"{float(ratio[i]):.2f}",
            va="top",
            fontsize=7,
            color="red" if mem else "white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1},
        )
    labels = [lab for _ in range(rows) for lab in ("sample", "nearest")]
    ax.set_yticks([tile_centre(i, h) for i in range(2 * rows)], labels)
    ax.tick_params(length=0, labelsize=8)
    fig.suptitle(
        f"Samples above their nearest training images (d1/d2; red < {threshold:.2g})", fontsize=9
    )
    return fig


def pairwise_figure(pairs: Sequence[Mapping], max_pairs: int = 6) -> Figure:
    """Shared errors of networks trained on the same data (Niedoba et al. 2025, fig. 2), one row
    per pair (at most ``max_pairs``), one panel per probe kind: ``MSE(D_a, D_b)`` beside each
    network's MSE to the empirical denoiser (log-log, left axis) and the cosine similarity of
    their errors ``D - D_emp`` (right axis). ``pairs``: records of
    :class:`~lightning_pspc.evaluation.shared_errors.SharedErrors`."""
    shown = list(pairs)[:max_pairs]
    kinds = list(shown[0]["mse_between"]) if shown else []
    fig = Figure(figsize=(5.0 * max(len(kinds), 1), 3.6 * max(len(shown), 1)))
    fig.subplots_adjust(left=0.09, right=0.9, bottom=0.08, top=0.9, wspace=0.45, hspace=0.5)
    for i, pair in enumerate(shown):
        a, b = pair["runs"]
        s = np.array(pair["sigmas"], dtype=float)
        for j, kind in enumerate(kinds):
            ax = fig.add_subplot(len(shown), len(kinds), i * len(kinds) + j + 1)
            ax.plot(s, pair["mse_between"][kind], "o-", ms=3, color="black", label=f"{a} vs {b}")
            for label, color in ((a, "tab:blue"), (b, "tab:orange")):
                ys = pair["mse_to_empirical"][label][kind]
                ax.plot(s, ys, "--", color=color, label=f"{label} vs empirical")
            log_axes(ax)
            ax.set_xlabel("sigma")
            ax.set_ylabel("MSE")
            ax.set_title(f"{KIND_LABELS.get(kind, kind + ' probes')}", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6, loc="upper left")
            twin = ax.twinx()
            twin.plot(s, pair["error_cosine"][kind], "s:", ms=3, color="tab:red")
            twin.set_ylim(-1.05, 1.05)
            twin.set_ylabel("cos(D_a - D_emp, D_b - D_emp)", color="tab:red", fontsize=8)
    fig.suptitle("Shared errors: network vs network beside network vs empirical")
    return fig
