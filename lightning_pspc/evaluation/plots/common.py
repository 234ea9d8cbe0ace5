"""Shared pieces of the evaluation's charts: saving, image mosaics, log axes, line styles.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so
no global backend or figure registry is touched (safe inside training processes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from torch import Tensor
from torchvision.utils import make_grid

from ...runs.files import write_atomic

KIND_LABELS = {
    "train": "train probes",
    "heldout": "held-out probes",
    "reverse": "reverse probes",
    "forward": "forward probes",
}
KIND_STYLES = {"train": "-", "heldout": "--", "reverse": ":"}
BAND_COLORS = {"low": "tab:blue", "mid": "tab:orange", "high": "tab:green"}


def epoch_label(epoch: int | None) -> str:
    """A chart's label of an evaluation after ``epoch`` epochs; ``None`` (a network trained
    elsewhere, no epoch known) reads ``network``."""
    return "network" if epoch is None else f"epoch {epoch}"


def plot_over_evaluations(
    ax: Axes, sigmas: np.ndarray, lines: Sequence[tuple[int | None, object]], count: int
) -> None:
    """One line per evaluation on ``ax`` against ``sigmas``: ``lines`` are ``(index, (epoch,
    values))`` of ``count`` evaluations in order (values: a sequence, ``None`` for missing
    points, or a tensor); the last evaluation bold black with markers, earlier ones thin,
    coloured from light to dark (Niedoba et al., fig. 2); the first and last are labelled."""
    cmap = colormaps["viridis"]
    for j, (epoch, values) in lines:
        last = j == count - 1
        ax.plot(
            sigmas,
            as_array(values.tolist() if isinstance(values, Tensor) else values),
            color="black" if last else cmap(0.15 + 0.7 * j / max(count - 1, 1)),
            lw=2.2 if last else 1.0,
            alpha=1.0 if last else 0.6,
            marker="o" if last else None,
            ms=3,
            label=epoch_label(epoch) if last or j == 0 else None,
        )


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temp file, then rename); returns the path."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi))


def to_display(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] -> ``[H, W]`` (grey) or ``[H, W, 3]`` in [0, 1] for ``imshow``."""
    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    return x[0] if x.shape[0] == 1 else np.transpose(x[:3], (1, 2, 0))


def log_axes(ax, x_base: int = 10, y_log: bool = True) -> None:
    """Log x (and y) axes. The x axis drops minor ticks (they dominate the drawing time); the y
    axis keeps them, as they carry the labels when the values span less than a decade."""
    ax.set_xscale("log", base=x_base)
    ax.xaxis.set_minor_locator(NullLocator())
    if y_log:
        ax.set_yscale("log")


def finite(values: Tensor) -> np.ndarray:
    """float array with NaN for missing values, ready to plot."""
    return values.detach().double().cpu().numpy()


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


def as_array(values) -> np.ndarray:
    """A float array of ``values`` (a sequence of numbers or ``None``), NaN for ``None``."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)
