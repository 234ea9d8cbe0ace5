"""The distance of the network to each reference denoiser per sigma (Niedoba et al. 2025, figs. 2, 7).

:class:`DenoiserComparer` holds the fixed probes (training and held-out forward probes, whose
reference outputs are computed once; reverse-trajectory states, new at every call) and measures
the MSE per sigma; :class:`Comparison` is its evaluation member (docs/reference.md section 3).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...diffusion.schedule import nearest_grid_index
from ...metrics import DenoiserDistance
from ...types import Denoiser
from ..batching import denoise_batched
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.comparison_charts import heatmap_figure, mse_vs_sigma_figure
from ..probes import (
    ProbeSet,
    band_means,
    check_rank,
    fixed_noise,
    forward_probes,
    reverse_probes,
)


def nearest_sides(schedule: dict[str, Any], sigmas: Tensor) -> list[int]:
    """The window side ``schedule`` (a :meth:`schedule_record`) gives each of ``sigmas [S]``
    (nearest schedule sigma in log sigma)."""
    grid = torch.tensor(schedule["sigmas"], dtype=torch.float64)
    index = nearest_grid_index(sigmas.double().cpu(), grid, "log")
    return [int(schedule["patch_sizes"][i]) for i in index.tolist()]


def distance_table(
    outputs: Tensor, reference_outputs: Mapping[str, Tensor], sigma: Tensor, grid: Tensor
) -> dict[str, Tensor]:
    """Per reference, the mean ``MSE(outputs, reference)`` per grid sigma, ``[S]`` float64 on CPU.

    ``outputs`` and every reference output are ``[P, C, H, W]`` on the same probes at noise levels
    ``sigma [P]``. Synced over DDP processes (every process must call it, even with ``P = 0``).
    """
    table = {}
    for name, ref in reference_outputs.items():
        metric = DenoiserDistance(grid).to(outputs.device)
        metric.update(outputs, ref, sigma)
        table[name] = metric.compute().cpu()  # [S], also for a one-sigma grid
    return table


@dataclass
class ComparisonResult:
    """Output of :meth:`DenoiserComparer.evaluate`.

    ``mse[kind][reference]`` is ``[S]`` float64 (NaN where no probe fell) over ``sigmas [S]``;
    ``samples`` are this process's reverse-trajectory end points ``[R_local, C, H, W]``;
    ``schedules[reference]`` the window schedule a calibrated reference used
    (:meth:`~lightning_pspc.evaluation.Evaluation.reference_schedules`).
    """

    sigmas: Tensor
    mse: dict[str, dict[str, Tensor]]
    samples: Tensor = field(repr=False)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def table(self) -> dict[str, dict[str, list[float]]]:
        """``{kind: {reference: [S] floats}}``: the record kept per evaluation for charts."""
        return {k: {r: v.tolist() for r, v in t.items()} for k, t in self.mse.items()}

    def scalars(self, prefix: str = "compare") -> dict[str, float]:
        """Flat ``{prefix}/{reference}/{kind}/sigma_{s:.3g}`` and ``.../{band}`` values (finite only)."""
        out = {}
        for kind, table in self.mse.items():
            for ref, values in table.items():
                for s, v in zip(self.sigmas.tolist(), values.tolist()):
                    if math.isfinite(v):
                        out[f"{prefix}/{ref}/{kind}/sigma_{s:.3g}"] = v
                for band, v in band_means(self.sigmas, values).items():
                    if math.isfinite(v):
                        out[f"{prefix}/{ref}/{kind}/{band}"] = v
        for ref, schedule in self.schedules.items():  # the window side used at each sigma
            sides = nearest_sides(schedule, self.sigmas)
            for s, k in zip(self.sigmas.tolist(), sides):
                out[f"{prefix}/{ref}/patch_size/sigma_{s:.3g}"] = float(k)
        return out

    def to_json(self) -> dict:
        """``{"sigmas": [...], "mse": {ref: {kind: [...]}}, "bands": {ref: {kind: {band: v}}}}``."""
        refs = list(dict.fromkeys(r for table in self.mse.values() for r in table))
        mse = {r: {k: t[r].tolist() for k, t in self.mse.items() if r in t} for r in refs}
        bands = {
            r: {k: band_means(self.sigmas, t[r]) for k, t in self.mse.items() if r in t}
            for r in refs
        }
        return {"sigmas": self.sigmas.tolist(), "mse": mse, "bands": bands}


class DenoiserComparer:
    """MSE of a network to closed-form denoisers per sigma, on fixed forward and reverse probes.

    Forward probes (``z = x + sigma eps`` from training and held-out images) are fixed, so the
    reference denoisers' outputs on them are computed once and cached; reverse probes are the
    states of the network's own Heun trajectories from fixed seeds, recomputed at every call.
    Under DDP each process evaluates every ``world_size``-th probe and seed from ``rank``.

    Args:
        references: ``{name: D}`` reference denoisers
            (:func:`~lightning_pspc.denoisers.registry.build_references`).
        sigmas: decreasing grid ``[S]`` (:func:`~lightning_pspc.evaluation.probes.probe_sigmas`).
        train_images, heldout_images: ``[N, C, H, W]`` pools for the forward probes.
        num_train_probes, num_heldout_probes: images drawn from each pool, each probed at every
            sigma (``num * S`` probes).
        reverse_noise: ``[R, C, H, W]`` starting noise of the reverse trajectories (``R * S``
            probes); ``R = 0`` skips them.
        seeds: ``(train, held-out)`` seeds of the choice of images and the forward noise
            (:class:`~lightning_pspc.evaluation.pipeline.EvalSeeds`).
        batch_size: probes per denoiser call.
    """

    def __init__(
        self,
        references: Mapping[str, nn.Module],
        sigmas: Tensor,
        train_images: Tensor,
        heldout_images: Tensor,
        num_train_probes: int,
        num_heldout_probes: int,
        reverse_noise: Tensor,
        seeds: tuple[int, int] = (0, 1),
        batch_size: int = 64,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        check_rank(rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.references, self.sigmas = dict(references), sigmas.double().cpu()
        self.batch_size, self.device = batch_size, torch.device(device)
        pools = {
            "train": (train_images, num_train_probes, seeds[0]),
            "heldout": (heldout_images, num_heldout_probes, seeds[1]),
        }
        self.forward: dict[str, ProbeSet] = {}
        self.forward_counts: dict[str, int] = {}  # probes of every process together
        for kind, (images, num, seed) in pools.items():
            probes = forward_probes(images, self.sigmas, num, seed)
            if len(probes):  # same decision on every rank: it depends on global counts only
                self.forward[kind] = probes.shard(rank, world_size).to(self.device)
                self.forward_counts[kind] = len(probes)
        self.has_reverse = reverse_noise.shape[0] > 0
        self.reverse_noise = reverse_noise[rank::world_size].to(self.device)
        self.reverse_source = torch.arange(reverse_noise.shape[0])[rank::world_size]
        self._cache: dict[str, dict[str, Tensor]] = {}
        self.reference_probe_evaluations = 0  # probes the references denoised (forward + reverse)
        self.reference_seconds: dict[str, float] = {}  # wall time of each reference so far

    def work(self) -> int:
        """Denoiser evaluations of this process in the next :meth:`evaluate` (for progress bars)."""
        fwd = sum(len(p) for p in self.forward.values())
        ref_fwd = sum(
            len(p) * sum(n not in self._cache.get(k, {}) for n in self.references)
            for k, p in self.forward.items()
        )
        r = self.reverse_noise.shape[0] * self.sigmas.numel()
        return fwd + ref_fwd + r * (1 + len(self.references))

    def reference_outputs(self, kind: str, bar: tqdm | None = None) -> dict[str, Tensor]:
        """``{reference: outputs [P, C, H, W]}`` on the forward probes ``kind`` (computed once,
        until :meth:`forget`)."""
        cached = self._cache.setdefault(kind, {})
        missing = [n for n in self.references if n not in cached]
        if missing:
            cached.update(self._reference_outputs(self.forward[kind], bar, missing))
        return {n: cached[n] for n in self.references}

    def forget(self, names: Sequence[str]) -> None:
        """Drop the cached outputs of the references ``names`` (they changed)."""
        for cached in self._cache.values():
            for name in names:
                cached.pop(name, None)

    def _reference_outputs(
        self, probes: ProbeSet, bar: tqdm | None, names: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        names = list(self.references) if names is None else list(names)
        self.reference_probe_evaluations += len(probes) * len(names)
        outs = {}
        for name in names:
            ref = self.references[name]
            t0 = time.perf_counter()
            outs[name] = denoise_batched(ref, probes.z, probes.sigma, self.batch_size, bar)
            self.reference_seconds[name] = self.reference_seconds.get(name, 0.0) + (
                time.perf_counter() - t0
            )
        return outs

    @torch.no_grad()
    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> ComparisonResult:
        """MSE of ``network`` to each reference per sigma and probe kind (synced over DDP)."""
        mse = {}
        for kind, probes in self.forward.items():
            refs = self.reference_outputs(kind, bar)
            out = denoise_batched(network, probes.z, probes.sigma, self.batch_size, bar)
            mse[kind] = distance_table(out, refs, probes.sigma, self.sigmas)
        samples = self.reverse_noise.new_zeros((0, *self.reverse_noise.shape[1:]))
        if self.has_reverse:
            states, outs, samples = [], [], [samples]
            for start in range(0, max(self.reverse_noise.shape[0], 1), self.batch_size):
                noise = self.reverse_noise[start : start + self.batch_size]
                source = self.reverse_source[start : start + self.batch_size]
                probes, out, end = reverse_probes(network, noise, self.sigmas, source)
                states.append(probes)
                outs.append(out)
                samples.append(end)
                if bar is not None:
                    bar.update(len(probes))
            probes = ProbeSet(
                torch.cat([p.z for p in states]),
                torch.cat([p.sigma for p in states]),
                torch.cat([p.source for p in states]),
            )
            refs = self._reference_outputs(probes, bar)
            mse["reverse"] = distance_table(torch.cat(outs), refs, probes.sigma, self.sigmas)
            samples = torch.cat(samples)
        return ComparisonResult(self.sigmas, mse, samples)


class Comparison(EvaluationMember):
    """MSE of the network to every reference per sigma, on training / held-out / reverse probes.

    ``num_train_probes`` training and ``num_heldout_probes`` held-out images, each noised once
    at every sigma (the references' outputs on them are computed once and cached), and the
    states of the network's own Heun trajectories from ``num_reverse_probes`` fixed seeds (new
    every evaluation). Result: :class:`~lightning_pspc.evaluation.ComparisonResult`.
    """

    name = "compare"
    uses_references = True

    def __init__(self, num_train_probes: int, num_heldout_probes: int, num_reverse_probes: int):
        counts = {
            "num_train_probes": num_train_probes,
            "num_heldout_probes": num_heldout_probes,
            "num_reverse_probes": num_reverse_probes,
        }
        if any(v < 0 for v in counts.values()) or not any(counts.values()):
            raise ValueError(f"probe counts {counts} must be >= 0 and not all 0")
        self.counts = (num_train_probes, num_heldout_probes, num_reverse_probes)

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        if not evaluation.references:
            raise ValueError("Comparison needs at least one reference denoiser")
        ev, (train, heldout, reverse) = evaluation, self.counts
        self.comparer = DenoiserComparer(
            ev.references,
            ev.sigmas,
            ev.data.train,
            ev.data.heldout,
            train,
            heldout,
            fixed_noise(reverse, ev.data.image_shape, ev.seeds.reverse_noise),
            seeds=(ev.seeds.train_probes, ev.seeds.heldout_probes),
            batch_size=ev.batch_size,
            rank=ev.rank,
            world_size=ev.world_size,
            device=ev.device,
        )

    def work(self) -> int:
        return self.comparer.work()

    def references_changed(self, names: Sequence[str]) -> None:
        self.comparer.forget(names)

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> ComparisonResult:
        result = self.comparer.evaluate(network, bar)
        result.schedules = {
            name: schedule
            for name, schedule in self.evaluation.reference_schedules().items()
            if name in self.evaluation.references
        }
        return result

    def record(self, result: ComparisonResult) -> dict[str, dict[str, list[float]]]:
        return result.table()

    def report(self, result: ComparisonResult) -> dict[str, Any]:
        """``sigmas``, ``mse``, ``bands`` (:meth:`ComparisonResult.to_json`) and the probe counts
        ``num_probes`` (global: forward probes per kind, reverse probes)."""
        forward = self.comparer.forward_counts
        reverse = self.counts[2] * self.evaluation.sigmas.numel()
        return {**result.to_json(), "num_probes": {**forward, "reverse": reverse}}

    def figures(
        self, result: ComparisonResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """MSE against sigma per reference (one line per evaluation in ``history``, whose records
        are :meth:`ComparisonResult.table`), and over time the epoch x sigma heat map of the
        distance to the empirical denoiser."""
        sigmas, figs = self.evaluation.sigmas, {}
        for ref in self.evaluation.references:
            lines = [
                (e, {k: torch.tensor(t[ref]) for k, t in table.items() if ref in t})
                for e, table in history
            ]
            schedule = result.schedules.get(ref, {}).get("schedule", "")
            figs[f"{ref}/mse_vs_sigma"] = mse_vs_sigma_figure(sigmas, lines, ref, schedule)
        if over_time and "empirical" in self.evaluation.references:
            tables = {
                k: torch.tensor([t[k]["empirical"] for _, t in history if k in t])
                for k in result.mse
            }
            epochs = [e for e, _ in history]
            figs["empirical/heatmap"] = heatmap_figure(sigmas, epochs, tables)
        return figs


@dataclass
class ComparisonOptions(OptionGroup):
    """``eval.py`` options of the :class:`Comparison` member (and its :class:`~.panel.Panel`)."""

    key = "comparison"
    num_train_probes: int = option(32, "training images, each probed at every sigma")
    num_heldout_probes: int = option(32, "held-out images, each probed at every sigma")
    num_reverse_probes: int = option(
        8, "seeds of reverse (Heun) trajectories, one probe per sigma each"
    )

    def check(self) -> None:
        counts = {
            "--num-train-probes": self.num_train_probes,
            "--num-heldout-probes": self.num_heldout_probes,
            "--num-reverse-probes": self.num_reverse_probes,
        }
        if min(counts.values()) < 0 or not any(counts.values()):
            raise ValueError(f"probe counts {counts} must be >= 0 and not all 0")

    def build(self, settings: Any) -> list[EvaluationMember]:
        return [Comparison(self.num_train_probes, self.num_heldout_probes, self.num_reverse_probes)]
