"""Charts of the generalization measures: linearity and Gaussian fit per sigma, sample agreement,
memorization over training time and the phase diagram (drawn off-screen with :class:`Figure`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor

from .common import as_array, grid_axes, log_axes, mosaic, plot_over_evaluations, tile_start

#: ``(key in a generalization record, axis label, log y axis)`` of the per-sigma measures.
PER_SIGMA_MEASURES = (
    ("linearity", "linearity score (cosine)", False),
    ("gaussian_nmse", "||D - D_gauss||^2 / ||D_gauss||^2", True),
)


def per_sigma_figure(sigmas: Tensor, history: Sequence[tuple[int, Mapping]]) -> Figure:
    """Linearity, normalised MSE to the Gaussian denoiser and ``R^2`` of each reference against
    sigma (log x), one panel each; ``history``: ``(epoch, generalization record)`` in order, the
    last (this evaluation) bold black, earlier ones thin from light to dark (Li et al. 2024)."""
    refs = list(dict.fromkeys(r for _, rec in history for r in rec.get("r_squared", {})))
    panels = [*PER_SIGMA_MEASURES, *((f"r2:{r}", f"R^2({r} vs network)", False) for r in refs)]
    fig = Figure(figsize=(3.9 * len(panels), 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.83, wspace=0.3)
    s = sigmas.double().cpu().numpy()
    for i, (key, label, log_y) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        lines = []
        for j, (epoch, rec) in enumerate(history):
            values = rec["r_squared"].get(key[3:]) if key.startswith("r2:") else rec.get(key)
            if values is not None:
                lines.append((j, (epoch, values)))
        plot_over_evaluations(ax, s, lines, len(history))
        log_axes(ax, y_log=log_y)
        if key.startswith("r2:"):  # R^2 is <= 1; far-off (very negative) values at the bottom
            lo = min((v for line in ax.get_lines() for v in line.get_ydata()), default=0.0)
            ax.set_ylim(max(float(lo), -1.0) - 0.05, 1.05)
        ax.set_xlabel("sigma")
        ax.set_title(label, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Generalization per noise level (held-out probes)")
    return fig


def per_sigma_heatmap(sigmas: Tensor, history: Sequence[tuple[int, Mapping]]) -> Figure:
    """Epoch x sigma heat maps of the linearity score and the normalised Gaussian MSE."""
    epochs = [e for e, _ in history]
    height = 1.9 + 0.22 * max(len(epochs), 4)
    fig = Figure(figsize=(4.6 * len(PER_SIGMA_MEASURES), height))
    fig.subplots_adjust(
        left=0.06, right=0.95, bottom=1.0 / height, top=1 - 0.6 / height, wspace=0.3
    )
    labels = [f"{s:.2g}" for s in sigmas.tolist()]
    for i, (key, label, _) in enumerate(PER_SIGMA_MEASURES):
        ax = fig.add_subplot(1, len(PER_SIGMA_MEASURES), i + 1)
        n = len(labels)
        data = np.stack([as_array(rec.get(key) or [None] * n) for _, rec in history])  # [E, S]
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="magma")
        ax.set_xticks(range(n)[::2], labels[::2], rotation=90, fontsize=7)
        ax.set_yticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax.set_xlabel("sigma")
        ax.set_ylabel("epoch")
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle("Generalization by epoch and sigma")
    return fig


def agreement_figure(
    network: Tensor, references: Mapping[str, Tensor], pearson: Mapping[str, Tensor]
) -> Figure:
    """Rows: samples from the same noise; columns: the network's sample, then each closed-form
    denoiser's (``[M, C, H, W]`` each); each reference sample is labelled with its Pearson r
    against the network's (``pearson[ref] [M]``)."""
    cols = ["network", *references]
    tiles = torch.stack([network, *references.values()], dim=1)  # [M, K, C, H, W]
    m, h, w = tiles.shape[0], tiles.shape[-2], tiles.shape[-1]
    fig = Figure(figsize=(1.2 * len(cols) + 1.0, 1.1 * m + 0.7))
    image = mosaic(tiles)
    ax = grid_axes(fig, image, rect=(0.12, 0.02, 0.86, 0.86))
    xs = [tile_start(i, w) for i in range(len(cols))]
    ys = [tile_start(i, h) for i in range(m)]
    for j, ref in enumerate(references, start=1):
        for i in range(m):
            ax.text(
                xs[j],
                ys[i],
                f"r={float(pearson[ref][i]):.2f}",
                va="top",
                fontsize=6,
                color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1},
            )
    ax.set_xticks([x + w / 2 for x in xs], cols, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    fig.suptitle("Samples from the same noise (Pearson r to the network's)", fontsize=9)
    return fig


def memorized_vs_images_figure(history: Sequence[Mapping], label: str = "") -> Figure:
    """Memorized fraction against training images seen (one run; records with ``images_seen``
    and ``memorized_fraction``)."""
    fig = Figure(figsize=(4.6, 3.4))
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.15, top=0.86)
    ax = fig.add_subplot(1, 1, 1)
    rows = sorted((r for r in history if r.get("images_seen") is not None), key=_seen)
    ax.plot([_seen(r) for r in rows], [r["memorized_fraction"] for r in rows], "o-", ms=3)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("memorized fraction of samples")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Memorization over training time{f' ({label})' if label else ''}", fontsize=9)
    return fig


def _seen(record: Mapping) -> int:
    return int(record["images_seen"])


def phase_diagram_figure(histories: Mapping[int, Sequence[Mapping]]) -> Figure:
    """Memorization over training-set size x training time (Bonnaire et al. 2025).

    ``histories``: ``{N: [{"images_seen", "memorized_fraction"}, ...]}`` (runs of one N averaged:
    :func:`lightning_pspc.evaluation.twin_runs.histories_by_size`). Left: memorized
    fraction against images seen, one line per N; right: the phase diagram, a heat map over
    N (rows) and images seen (columns; the union of the evaluation points, gaps left blank).
    """
    sizes = sorted(histories)
    seen = sorted({_seen(r) for h in histories.values() for r in h})
    grid = np.full((len(sizes), len(seen)), np.nan)
    for i, n in enumerate(sizes):
        for r in histories[n]:
            grid[i, seen.index(_seen(r))] = r["memorized_fraction"]
    fig = Figure(figsize=(10.5, 3.2 + 0.25 * len(sizes)))
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.2, top=0.86, wspace=0.3)
    ax = fig.add_subplot(1, 2, 1)
    cmap = colormaps["viridis"]
    for i, n in enumerate(sizes):
        rows = sorted(histories[n], key=_seen)
        ax.plot(
            [_seen(r) for r in rows],
            [r["memorized_fraction"] for r in rows],
            "o-",
            ms=3,
            color=cmap(0.1 + 0.8 * i / max(len(sizes) - 1, 1)),
            label=f"N={n}",
        )
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("memorized fraction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    im = ax.imshow(
        np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=1
    )
    step = max(1, len(seen) // 8)
    ax.set_xticks(range(len(seen))[::step], [f"{s:.2g}" for s in seen][::step], fontsize=7)
    ax.set_yticks(range(len(sizes)), [str(n) for n in sizes], fontsize=7)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("training-set size N")
    fig.colorbar(im, ax=ax, fraction=0.05, label="memorized fraction")
    fig.suptitle("Memorization over training-set size and training time")
    return fig
