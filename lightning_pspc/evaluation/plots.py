"""Charts of the evaluation: matplotlib ``Figure`` objects drawn off-screen (Agg), saved as PNG.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so
no global backend or figure registry is touched (safe inside training processes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator
from torch import Tensor
from torchvision.utils import make_grid

from ..files import write_atomic
from .engine import SIGMA_BANDS

KIND_LABELS = {"train": "train probes", "heldout": "held-out probes", "reverse": "reverse probes"}
KIND_STYLES = {"train": "-", "heldout": "--", "reverse": ":"}
BAND_COLORS = {"low": "tab:blue", "mid": "tab:orange", "high": "tab:green"}


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temp file, then rename); returns the path."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi))


def to_display(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] -> ``[H, W]`` (grey) or ``[H, W, 3]`` in [0, 1] for ``imshow``."""
    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    return x[0] if x.shape[0] == 1 else np.transpose(x[:3], (1, 2, 0))


def _log_axes(ax, x_base: int = 10, y_log: bool = True) -> None:
    """Log x (and y) axes. The x axis drops minor ticks (they dominate the drawing time); the y
    axis keeps them, as they carry the labels when the values span less than a decade."""
    ax.set_xscale("log", base=x_base)
    ax.xaxis.set_minor_locator(NullLocator())
    if y_log:
        ax.set_yscale("log")


def _finite(values: Tensor) -> np.ndarray:
    """float array with NaN for missing values, ready to plot."""
    return values.detach().double().cpu().numpy()


def mse_vs_sigma_figure(
    sigmas: Tensor, history: Sequence[tuple[int, Mapping[str, Tensor]]], reference: str
) -> Figure:
    """MSE of the network to ``reference`` against sigma (log-log), one panel per probe kind.

    ``history``: ``(epoch, {kind: mse [S]})`` in order; the last one (this epoch) is drawn bold
    in black, earlier epochs thin, coloured from light to dark by epoch (Niedoba et al., fig. 2).
    """
    kinds = [k for k in KIND_LABELS if any(k in table for _, table in history)]
    fig = Figure(figsize=(4.2 * max(len(kinds), 1), 3.4))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.83, wspace=0.28)
    cmap = colormaps["viridis"]
    s = sigmas.double().cpu().numpy()
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for j, (epoch, table) in enumerate(history):
            if kind not in table:
                continue
            last = j == len(history) - 1
            color = "black" if last else cmap(0.15 + 0.7 * j / max(len(history) - 1, 1))
            ax.plot(
                s,
                _finite(table[kind]),
                color=color,
                lw=2.2 if last else 1.0,
                alpha=1.0 if last else 0.6,
                marker="o" if last else None,
                ms=3,
                label=f"epoch {epoch}" if last or j == 0 else None,
            )
        _log_axes(ax)
        ax.set_xlabel("sigma")
        ax.set_title(KIND_LABELS[kind])
        ax.grid(True, which="major", alpha=0.3)
        if i == 0:
            ax.set_ylabel(f"MSE(network, {reference})")
            ax.legend(fontsize=8)
    fig.suptitle(f"Distance to the {reference} denoiser")
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
        data = _finite(tables[kind])
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


#: White gap between the tiles of a mosaic, in pixels.
GAP = 2


def mosaic(tiles: Tensor, pad: int = GAP) -> np.ndarray:
    """``tiles [R, K, C, H, W]`` in [-1, 1] -> one display image (``torchvision.utils.make_grid``).

    Tile ``(r, k)`` starts at pixel ``(pad + r (H + pad), pad + k (W + pad))`` on a white
    background (:func:`tile_start`). Drawing one image instead of ``R * K`` axes keeps large grids
    cheap.
    """
    r, k, c, h, w = tiles.shape
    flat = tiles.detach().float().cpu().reshape(r * k, c, h, w)
    grid = make_grid(flat, nrow=k, padding=pad, pad_value=1.0)  # [3 or C, R(H+p)+p, K(W+p)+p]
    return to_display(grid if c != 1 else grid[:1])


def tile_start(index: int, size: int, pad: int = GAP) -> float:
    """First pixel of tile ``index`` along an axis of tiles of ``size`` pixels (see :func:`mosaic`)."""
    return pad + index * (size + pad)


def tile_centre(index: int, size: int, pad: int = GAP) -> float:
    """Centre of tile ``index`` along an axis (tick positions)."""
    return tile_start(index, size, pad) + (size - 1) / 2


def grid_axes(
    fig: Figure,
    image: np.ndarray,
    rect: tuple[float, float, float, float] = (0.08, 0.02, 0.9, 0.88),
):
    """Axes at ``rect`` of ``fig`` showing a mosaic ``image`` (grey, [0, 1]) without ticks or frame."""
    ax = fig.add_axes(rect)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    return ax


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


def transition_figure(
    records: Sequence[Mapping], extra: Sequence[Callable[[Axes], None]] = ()
) -> Figure:
    """The memorization-to-generalization transition against the training-set size (log x).

    ``records``: one per run, ``{"num_train": N, "memorized_fraction": f, "bands": {reference:
    {kind: {band: mse}}}}``. Panel 1: memorized fraction; then one panel per reference with the
    MSE in the low / mid / high sigma bands (colour) for each probe kind (line style). Several
    records with the same ``N`` are averaged. Each of ``extra`` draws one more panel on the axes
    it is given (e.g. the twin models', :mod:`.plots_generalization`).
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
    _log_axes(ax, x_base=2, y_log=False)
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
        _log_axes(ax, x_base=2)
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
