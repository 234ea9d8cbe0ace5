"""Charts of the locality measurements (:mod:`lightning_pspc.evaluation.members.patch_sizes`):
patch sizes against sigma, over epochs, heatmaps of output pixels, and the sensitivity patch size
against training-set size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .common import epoch_label

FRACTION_STYLES = {"f50": "-", "f75": "--", "f95": ":"}


def patch_size_vs_sigma_figure(
    sigmas: Sequence[float], history: Sequence[tuple[int, Any]]
) -> Figure:
    """Sensitivity patch size (one style per fraction) against sigma, one colour per evaluation
    in ``history`` (``(epoch, LocalityResult.to_json())``, latest last, drawn darkest)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    n = max(len(history), 1)
    for i, (epoch, rec) in enumerate(history):
        colour = (0.2, 0.3, 0.8, 0.25 + 0.75 * (i + 1) / n)
        for key, sizes in rec["sensitivity_patch_size"].items():
            label = f"{epoch_label(epoch)} {key}" if i == len(history) - 1 or key == "f50" else None
            ax.plot(rec["sigmas"], sizes, FRACTION_STYLES.get(key, "-"), color=colour, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("sigma")
    ax.set_ylabel("sensitivity patch size (pixels)")
    ax.set_title("sensitivity patch size (f50 -, f75 --, f95 :)")
    ax.legend(fontsize=6)
    return fig


def patch_size_heatmap_figure(
    sigmas: Sequence[float], history: Sequence[tuple[int, Any]], key: str = "f50"
) -> Figure:
    """Epoch x sigma heat map of the sensitivity patch size at fraction ``key``."""
    table = np.array([rec["sensitivity_patch_size"][key] for _, rec in history], dtype=float)
    fig = Figure(figsize=(6, 1.5 + 0.3 * len(history)))
    ax = fig.add_subplot()
    im = ax.imshow(table, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(sigmas)), [f"{s:.3g}" for s in sigmas], fontsize=7)
    ax.set_yticks(range(len(history)), [str(e) for e, _ in history], fontsize=7)
    ax.set_xlabel("sigma")
    ax.set_ylabel("epoch")
    ax.set_title(f"sensitivity patch size ({key})")
    fig.colorbar(im, ax=ax)
    return fig


def best_fit_figure(sigmas: Sequence[float], history: Sequence[tuple[int, Any]]) -> Figure:
    """Best-fit patch size over epochs, one line per sigma, one panel per kind (PSPC-Square, LS)."""
    kinds = list(history[-1][1]["best_fit_patch_size"])
    fig = Figure(figsize=(4.5 * len(kinds), 3.5))
    epochs = [e for e, _ in history]
    for j, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), j + 1)
        for i, s in enumerate(sigmas):
            values = [rec["best_fit_patch_size"][kind][i] for _, rec in history]
            ax.plot(epochs, values, "o-", label=f"sigma {s:.3g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("best-fit patch size")
        ax.set_title(f"best fit ({kind})")
        ax.legend(fontsize=6)
    return fig


def heatmap_pixels_figure(
    heatmaps: Tensor, pixels: Tensor, sigmas: Sequence[float], num_pixels: int
) -> Figure:
    """Heatmaps ``[S, P, H, W]`` of ``num_pixels`` output pixels spread over ``pixels [P, 2]``
    (columns) at each sigma (rows); the output pixel is marked."""
    pick = np.unique(np.linspace(0, pixels.shape[0] - 1, min(num_pixels, pixels.shape[0])).round())
    rows, cols = len(sigmas), len(pick)
    fig = Figure(figsize=(1.6 * cols + 0.8, 1.6 * rows))
    for i, s in enumerate(sigmas):
        for j, p in enumerate(pick.astype(int)):
            ax = fig.add_subplot(rows, cols, i * cols + j + 1)
            ax.imshow(heatmaps[i, p].float().numpy(), cmap="magma")
            r, c = pixels[p].tolist()
            ax.plot([c], [r], "c+", markersize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"sigma {s:.3g}", fontsize=7)
            if i == 0:
                ax.set_title(f"pixel ({r}, {c})", fontsize=7)
    return fig
