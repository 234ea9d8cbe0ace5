"""Charts of the linear distillation (Li et al. 2024 sec. 3): per sigma, over epochs and over N."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..probes import SIGMA_BANDS
from .common import as_array, log_axes, plot_over_evaluations

#: ``(key in a linear_distillation record, panel title)`` of the per-sigma measures.
LINEAR_MEASURES = (
    ("gaussian_nmse", "||D_lin - D_gauss||^2 / ||D_gauss||^2"),
    ("network_gaussian_nmse", "||D_net - D_gauss||^2 / ||D_gauss||^2"),
    ("network_mse", "MSE(D_lin, D_net)"),
)


def linear_distillation_figure(sigmas: Tensor, history: Sequence[tuple[int, Mapping]]) -> Figure:
    """The distilled linear map's normalised MSE to the Gaussian denoiser, the network's, and the
    map's MSE to the network against sigma (log-log), one panel each; ``history``: ``(epoch,
    linear_distillation record)`` in order, the last bold black, earlier ones thin."""
    fig = Figure(figsize=(3.9 * len(LINEAR_MEASURES), 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.83, wspace=0.3)
    s = sigmas.double().cpu().numpy()
    for i, (key, title) in enumerate(LINEAR_MEASURES):
        ax = fig.add_subplot(1, len(LINEAR_MEASURES), i + 1)
        lines = [(j, (epoch, rec[key])) for j, (epoch, rec) in enumerate(history)]
        plot_over_evaluations(ax, s, lines, len(history))
        log_axes(ax)
        ax.set_xlabel("sigma")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Linear distillation of the network per noise level (training-set probes)")
    return fig


def linear_distillation_heatmap(sigmas: Tensor, history: Sequence[tuple[int, Mapping]]) -> Figure:
    """Epoch x sigma heat map of ``log10`` of the distilled map's normalised MSE to the
    Gaussian denoiser."""
    epochs = [e for e, _ in history]
    height = 1.9 + 0.22 * max(len(epochs), 4)
    fig = Figure(figsize=(5.2, height))
    fig.subplots_adjust(left=0.12, right=0.95, bottom=1.0 / height, top=1 - 0.6 / height)
    ax = fig.add_subplot()
    data = np.stack([as_array(rec["gaussian_nmse"]) for _, rec in history])  # [E, S]
    with np.errstate(divide="ignore", invalid="ignore"):
        data = np.log10(data)
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="magma")
    labels = [f"{v:.2g}" for v in sigmas.tolist()]
    ax.set_xticks(range(len(labels))[::2], labels[::2], rotation=90, fontsize=7)
    ax.set_yticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
    ax.set_xlabel("sigma")
    ax.set_ylabel("epoch")
    ax.set_title("log10 ||D_lin - D_gauss||^2 / ||D_gauss||^2", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


def mid_band_mean(record: Mapping, key: str = "gaussian_nmse") -> float:
    """Mean of ``record[key]`` over the grid sigmas of the mid band of
    :data:`~lightning_pspc.evaluation.probes.SIGMA_BANDS` (finite values; NaN if none)."""
    lo, hi = SIGMA_BANDS["mid"]
    sig = np.asarray(record["sigmas"], dtype=float)
    values = as_array(record[key])
    inside = (sig >= lo) & (sig < hi) & np.isfinite(values)
    return float(values[inside].mean()) if inside.any() else math.nan


def draw_linear_line(ax: Axes, records: Sequence[Mapping]) -> None:
    """Per training-set size (runs of one N averaged), the mid-band normalised MSE of the
    network's distilled linear map to the Gaussian denoiser, on ``ax`` (records of ``eval.py``
    with a ``linear_distillation`` entry; Li et al. 2024: it falls as N grows)."""
    by_n: dict[int, list[float]] = {}
    for rec in records:
        if rec.get("linear_distillation"):
            by_n.setdefault(int(rec["num_train"]), []).append(
                mid_band_mean(rec["linear_distillation"])
            )
    sizes = sorted(by_n)
    if sizes:
        values = [_finite_mean(by_n[n]) for n in sizes]
        ax.plot(
            sizes, values, "^-.", ms=3, color="tab:olive", label="linear map's Gaussian NMSE, mid"
        )


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
