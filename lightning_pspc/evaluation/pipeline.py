"""One evaluation pipeline: fixed data, seeds, references and probes, and the measurements on them.

An :class:`Evaluation` is built once from the training data (:class:`EvalData`), a noise-level
grid and one seed. It owns everything that must stay fixed between evaluations (the closed-form
reference denoisers, the probes, the starting noise of samples, all seeded by name through
:class:`EvalSeeds`) and a list of members, each one kind of measurement:

* :class:`Comparison`: MSE of the network to each reference denoiser per sigma on training,
  held-out and reverse-process probes (Niedoba et al. 2025, figs. 2 and 7);
* :class:`Memorization`: samples from fixed noise and their memorized fraction (Gu et al. 2023);
* :class:`Panel`: one image denoised at a few sigmas by the network and every reference.

The training callbacks, ``eval.py`` (and so the sweep) and ``python -m lightning_pspc.compare``
all build an :class:`Evaluation` and call :meth:`Evaluation.evaluate`; a new kind of evaluation is
one more :class:`EvaluationMember`. Under DDP every process builds the same evaluation with its
``rank`` and ``world_size``, evaluates its share and gets the globally reduced result.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..types import Denoiser
from .engine import (
    ComparisonResult,
    DenoiserComparer,
    DenoiserPanel,
    build_references,
    check_reference_names,
    memorization_stats,
    nearest_training_images,
    sample_batched,
)
from .local_references import NetworkDependentReference
from .plots import heatmap_figure, mse_vs_sigma_figure, neighbours_figure, panel_figure
from .probes import check_rank, fixed_noise, probe_sigmas


@dataclass(frozen=True)
class EvalSeeds:
    """The seed of every random choice of an evaluation, derived from one seed by name.

    Children of ``numpy.random.SeedSequence(seed)``, so the streams are independent and a new
    field never shifts the others.
    """

    train_probes: int
    heldout_probes: int
    reverse_noise: int
    sample_noise: int
    panel: int
    linearity: int  # held-out pairs and noise of the linearity probes (Generalization)
    agreement_noise: int  # starting noise of the sample-agreement member (Agreement)

    @classmethod
    def derive(cls, seed: int) -> EvalSeeds:
        """The seeds of evaluation seed ``seed`` (the same on every process, epoch and run)."""
        children = np.random.SeedSequence(int(seed)).spawn(len(fields(cls)))
        return cls(*(int(c.generate_state(1, np.uint32)[0]) for c in children))


@dataclass(frozen=True)
class EvalData:
    """The images an evaluation needs, as float32 ``[N, C, H, W]`` in [-1, 1].

    ``train``: the training images (no flipped copies; memorization is measured against them);
    ``heldout``: images the network never saw; ``reference``: the training set as the network
    sees it (with x-flipped copies when training flips), from which the closed-form denoisers are
    built.
    """

    train: Tensor
    heldout: Tensor
    reference: Tensor

    @classmethod
    def from_datamodule(cls, datamodule: Any) -> EvalData:
        """From an :class:`~lightning_pspc.data.ImageDataModule` (loads its data)."""
        return cls(
            datamodule.train_images(), datamodule.heldout_images(), datamodule.reference_images()
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.train.shape[1:])  # type: ignore[return-value]


class EvaluationMember(abc.ABC):
    """One kind of measurement in an :class:`Evaluation`.

    :meth:`setup` builds its fixed inputs once from the evaluation (data, seeds, references);
    :meth:`evaluate` measures a network and returns a result with ``scalars(prefix)`` (flat
    numbers to log) and ``to_json()`` (a JSON-ready record); :meth:`figures` draws its charts
    from the latest result and the history of earlier records.
    """

    name: ClassVar[str]
    #: whether :meth:`evaluate` uses the evaluation's references (they are refreshed before it)
    uses_references: ClassVar[bool] = False

    def setup(self, evaluation: Evaluation) -> None:
        """Build the fixed inputs (called once, by the :class:`Evaluation`)."""
        self.evaluation = evaluation

    def work(self) -> int:
        """Denoiser evaluations of this process in the next :meth:`evaluate` (progress bars)."""
        return 0

    @abc.abstractmethod
    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> Any:
        """Measure ``network`` (every process calls it; results are reduced across processes)."""

    def references_changed(self, names: Sequence[str]) -> None:
        """The references ``names`` changed (network-dependent ones were refreshed): drop any
        cached outputs of them (default: nothing cached)."""
        return None

    def record(self, result: Any) -> Any:
        """What a caller keeps of ``result`` per evaluation (JSON-ready; default its ``to_json``)."""
        return result.to_json()

    def figures(
        self, result: Any, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """Charts of ``result`` keyed by a name unique within the caller (e.g. ``pspc/mse_vs_sigma``;
        callbacks log it under their prefix); ``history``: ``(epoch, record)`` of evaluations so
        far (this one last); ``over_time`` adds charts across epochs (callbacks, not eval.py)."""
        return {}


class Evaluation:
    """References, fixed probes and seeds of one evaluation set-up, and its members.

    Args:
        data: the images (:meth:`EvalData.from_datamodule`).
        members: the measurements, each set up here once.
        references: names of the closed-form denoisers the members compare with
            (:data:`~lightning_pspc.evaluation.REFERENCE_DENOISERS`); built once on ``device``.
        sigmas: noise-level grid (default: the 18 EDM sigmas).
        seed: derives every random choice (:class:`EvalSeeds`).
        batch_size: probes per denoiser call.
        device: where the references, probes and noise live.
        rank, world_size: this process's share under DDP.
    """

    def __init__(
        self,
        data: EvalData,
        members: Sequence[EvaluationMember],
        references: Sequence[str] = (),
        sigmas: Sequence[float] | Tensor | None = None,
        seed: int = 0,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_rank(rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.sigmas = data, probe_sigmas(sigmas)
        self.seed, self.seeds = seed, EvalSeeds.derive(seed)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.rank, self.world_size = rank, world_size
        names = check_reference_names(references) if references else ()
        self.references: dict[str, nn.Module] = (
            build_references(names, data.reference, self.device) if names else {}
        )
        #: best-fit patch sizes ``{"pspc" | "ls" | "els": (sigmas, sizes)}`` of the latest locality
        #: member, read by the calibrated LS / ELS references (may be shared between evaluations)
        self.calibration: dict[str, tuple[list[float], list[int]]] = {}
        #: heatmaps of the network being evaluated, shared by the references of one refresh
        #: (``{key: [S, H, W, H, W]}``, cleared at every refresh)
        self.heatmap_cache: dict[tuple, Tensor] = {}
        self.members: dict[str, EvaluationMember] = {}
        for member in members:
            if member.name in self.members:
                raise ValueError(f"two evaluation members named {member.name!r}")
            member.setup(self)
            self.members[member.name] = member

    def work(self) -> int:
        """Denoiser evaluations of this process in the next :meth:`evaluate`."""
        return sum(m.work() for m in self.members.values())

    @torch.no_grad()
    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> dict[str, Any]:
        """``{member name: result}`` for ``network`` (every process calls it, in step).

        Members run in order; before the first member that uses references, the
        network-dependent references (PSPC-Flex from the network's heatmaps, calibrated LS/ELS)
        are refreshed with ``network``."""
        results, refreshed = {}, False
        for name, member in self.members.items():
            if member.uses_references and not refreshed:
                self.refresh_references(network)
                refreshed = True
            results[name] = member.evaluate(network, bar)
        return results

    def refresh_references(self, network: Denoiser) -> list[str]:
        """Refresh the references that depend on ``network`` (or on :attr:`calibration`); tell
        the members which changed. Returns their names."""
        self.heatmap_cache = {}
        changed = [
            name
            for name, ref in self.references.items()
            if isinstance(ref, NetworkDependentReference) and ref.refresh(network, self)
        ]
        if changed:
            for member in self.members.values():
                member.references_changed(changed)
        return changed

    def noise(self, num: int, seed: int) -> Tensor:
        """This process's share (every ``world_size``-th from ``rank``) of ``num`` fixed noise
        images ``[num_local, C, H, W]`` seeded by ``seed``, on the evaluation's device."""
        all_noise = fixed_noise(num, self.data.image_shape, seed)
        return all_noise[self.rank :: self.world_size].to(self.device)


# --- members ---------------------------------------------------------------------------------
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
        return self.comparer.evaluate(network, bar)

    def record(self, result: ComparisonResult) -> dict[str, dict[str, list[float]]]:
        return result.table()

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
            figs[f"{ref}/mse_vs_sigma"] = mse_vs_sigma_figure(sigmas, lines, ref)
        if over_time and "empirical" in self.evaluation.references:
            tables = {
                k: torch.tensor([t[k]["empirical"] for _, t in history if k in t])
                for k in result.mse
            }
            epochs = [e for e, _ in history]
            figs["empirical/heatmap"] = heatmap_figure(sigmas, epochs, tables)
        return figs


@dataclass
class MemorizationResult:
    """Samples of this process ``[M_local, C, H, W]`` and the global memorization statistics."""

    samples: Tensor
    stats: dict[str, float]
    threshold: float

    def scalars(self, prefix: str = "memorization") -> dict[str, float]:
        """``{prefix}/memorized_fraction``, ``{prefix}/nn_dist_mean`` ..."""
        return {f"{prefix}/{k}": v for k, v in self.stats.items()}

    def to_json(self) -> dict[str, Any]:
        """``{"memorized_fraction": f, "nearest_neighbour": {...}}``."""
        return {
            "memorized_fraction": self.stats["memorized_fraction"],
            "nearest_neighbour": {k: v for k, v in self.stats.items() if k != "memorized_fraction"},
        }


class Memorization(EvaluationMember):
    """Heun samples (``num_steps`` steps) from ``num_samples`` fixed noise images, compared with
    the training images: memorized fraction (``d1/d2 < threshold``, Gu et al. 2023), nearest-
    neighbour distance and cosine similarity (Kadkhodaie et al. 2024). ``grid_size`` samples are
    drawn above their nearest training images."""

    name = "memorization"

    def __init__(
        self, num_samples: int, num_steps: int = 18, threshold: float = 1 / 3, grid_size: int = 16
    ) -> None:
        if min(num_samples, num_steps, grid_size) < 1 or not threshold > 0:
            raise ValueError(
                f"num_samples={num_samples}, num_steps={num_steps} and grid_size={grid_size} must "
                f"be >= 1 and threshold={threshold} > 0"
            )
        self.num_samples, self.num_steps = num_samples, num_steps
        self.threshold, self.grid_size = threshold, grid_size

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        if evaluation.data.train.shape[0] < 2:
            raise ValueError(
                "memorization needs at least 2 training images (nearest and second-nearest "
                "neighbours); increase data.num_train"
            )
        self.noise = evaluation.noise(self.num_samples, evaluation.seeds.sample_noise)
        self.train_images = evaluation.data.train.to(evaluation.device)

    def work(self) -> int:
        return self.noise.shape[0]

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> MemorizationResult:
        batch = self.evaluation.batch_size
        samples = sample_batched(network, self.noise, self.num_steps, batch, bar)
        self.last = (network, samples)  # reused by members that sample from the same noise
        stats = memorization_stats(samples, self.train_images, self.threshold)
        return MemorizationResult(samples, stats, self.threshold)

    def figures(
        self, result: MemorizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        shown = result.samples[: self.grid_size]
        if not shown.shape[0]:
            return {}
        neighbours, ratio = nearest_training_images(shown, self.train_images)
        return {"neighbours": neighbours_figure(shown, neighbours, ratio, result.threshold)}


@dataclass
class PanelResult:
    """``{"noisy": [K,C,H,W], "network": ..., <reference>: ...}`` at ``sigmas [K]``."""

    images: dict[str, Tensor]
    sigmas: Tensor

    def scalars(self, prefix: str = "panel") -> dict[str, float]:
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"sigmas": self.sigmas.tolist()}


class Panel(EvaluationMember):
    """One held-out image (a training image without held-out ones) at ``num_sigmas`` grid sigmas,
    denoised by the network and every reference (figure 1 of Niedoba et al.). No reduction
    across processes: build it on the process that draws."""

    name = "panel"
    uses_references = True

    def __init__(self, num_sigmas: int = 6) -> None:
        if num_sigmas < 1:
            raise ValueError(f"panel num_sigmas={num_sigmas} must be >= 1")
        self.num_sigmas = num_sigmas

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        data = evaluation.data
        image = data.heldout[0] if data.heldout.shape[0] else data.train[0]
        self.panel = DenoiserPanel.build(
            evaluation.references,
            image,
            evaluation.sigmas,
            self.num_sigmas,
            evaluation.seeds.panel,
            evaluation.device,
        )

    def references_changed(self, names: Sequence[str]) -> None:
        self.panel._cache.clear()

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> PanelResult:
        return PanelResult(self.panel(network), self.panel.probes.sigma)

    def figures(
        self, result: PanelResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        title = f"epoch {history[-1][0]}" if history else ""
        return {"panel": panel_figure(result.images, result.sigmas, title)}


def figures_of(
    evaluation: Evaluation,
    results: Mapping[str, Any],
    histories: Mapping[str, Sequence[tuple[int, Any]]],
    over_time: bool,
) -> dict[str, Figure]:
    """Every member's charts for ``results`` (:meth:`Evaluation.evaluate`), keyed by chart name."""
    figs: dict[str, Figure] = {}
    for name, member in evaluation.members.items():
        for key, fig in member.figures(results[name], histories.get(name, ()), over_time).items():
            if key in figs:
                raise ValueError(f"two evaluation members draw a chart named {key!r}")
            figs[key] = fig
    return figs
