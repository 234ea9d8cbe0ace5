"""One evaluation pipeline: fixed data, seeds, references and probes, and the measurements on them.

An :class:`Evaluation` is built once from the training data (:class:`EvalData`), a noise-level
grid and one seed. It owns everything that must stay fixed between evaluations (the reference
denoisers, the probes, the starting noise of samples, all seeded by name through
:class:`EvalSeeds`), the calibration of the local references
(:class:`~lightning_pspc.evaluation.calibration.Calibration`) and a list of members, each one
kind of measurement (:mod:`lightning_pspc.evaluation.members`).

The training callbacks, ``eval.py`` (and so the sweep) and ``python -m lightning_pspc.commands.compare``
all build an :class:`Evaluation` and call :meth:`Evaluation.evaluate`; a new kind of evaluation is
one more :class:`EvaluationMember`. Members read the evaluation (its data, seeds, references and
probes) and never change each other. Under DDP every process builds the same evaluation with its
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

from ..denoisers.network_fitted import NetworkDependentReference, ReferenceOptions
from ..denoisers.registry import build_references, check_reference_names
from ..types import Denoiser
from .calibration import Calibration, CalibrationSettings
from .probes import (
    ProbeSet,
    check_rank,
    clip_sigmas,
    fixed_noise,
    forward_probes,
    probe_sigmas,
    sampler_sigmas,
)


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
    calibration_probes: int  # noise of the calibration's held-out probes (Calibration)
    calibration_noise: int  # starting noise of the calibration's reverse trajectories
    linear_distillation: int  # probes of the linear_distilled reference's fit
    linear_scoring: int  # forward probes the LinearDistillation member scores the fit on

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

    def report(self, result: Any) -> dict[str, Any]:
        """What ``result`` adds to a checkpoint's record in ``metrics.json`` (JSON-ready keys;
        default: nothing)."""
        return {}

    def samples(self, result: Any) -> Tensor | None:
        """The network's samples ``[M_local, C, H, W]`` from the evaluation's fixed sample noise
        in ``result``, when this member draws them (twin runs compare them)."""
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
        members: the measurements, each set up here once, in order.
        references: names of the reference denoisers the members compare with
            (:data:`~lightning_pspc.denoisers.registry.REFERENCE_DENOISERS`); built once on
            ``device``. Members may ask for more (:meth:`reference`); every reference of the
            evaluation is refreshed and calibrated alike.
        sigmas: noise-level grid (default: the 18 EDM sigmas).
        seed: derives every random choice (:class:`EvalSeeds`).
        batch_size: probes per denoiser call.
        device: where the references, probes and noise live.
        rank, world_size: this process's share under DDP.
        reference_options: settings of the network-dependent references (PSPC-Flex heatmap
            probes).
        calibration: how the calibrated references fit their window sides to the network
            (:class:`~lightning_pspc.evaluation.calibration.CalibrationSettings`).
        sigma_range: ``(sigma_min, sigma_max)`` the network accepts (a network trained
            elsewhere, :func:`~lightning_pspc.pretrained.sigma_range`): the grid and every
            sampler's schedule are clipped into it (:meth:`clip_sigmas`,
            :meth:`sampler_sigmas`); ``None``: no limit.
        features: a feature extractor (``images [B,C,H,W] -> [B, D]``,
            :class:`~lightning_pspc.pretrained.FeatureExtractor`) in whose space members
            also compare samples; ``None``: pixel space only.
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
        reference_options: ReferenceOptions | None = None,
        calibration: CalibrationSettings | None = None,
        sigma_range: tuple[float, float] | None = None,
        features: nn.Module | None = None,
    ) -> None:
        check_rank(rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sigma_range = None if sigma_range is None else tuple(map(float, sigma_range))
        if self.sigma_range is not None and not 0 <= self.sigma_range[0] <= self.sigma_range[1]:
            raise ValueError(f"sigma_range {sigma_range} must be 0 <= sigma_min <= sigma_max")
        #: the grid asked for, and the grid used: clipped into :attr:`sigma_range`
        self.requested_sigmas = probe_sigmas(sigmas)
        self.data, self.sigmas = data, self.clip_sigmas(self.requested_sigmas)
        self.features = features
        self.seed, self.seeds = seed, EvalSeeds.derive(seed)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.reference_options = reference_options or ReferenceOptions()
        #: best-fit window sides of the calibrated references for the network being evaluated
        self.calibration = Calibration(self, calibration or CalibrationSettings())
        names = check_reference_names(references) if references else ()
        #: the references the members compare with (``references``), in that order
        self.references: dict[str, nn.Module] = (
            build_references(names, data.reference, self.device) if names else {}
        )
        self._extra_references: dict[str, nn.Module] = {}  # asked for by members only
        #: heatmaps of the network being evaluated, shared by the references of one refresh
        #: (``{key: [S, H, W, H, W]}``, cleared at every refresh)
        self.heatmap_cache: dict[tuple, Tensor] = {}
        self.members: dict[str, EvaluationMember] = {}
        for member in members:
            if member.name in self.members:
                raise ValueError(f"two evaluation members named {member.name!r}")
            member.setup(self)
            self.members[member.name] = member

    def clip_sigmas(self, sigmas: Sequence[float] | Tensor) -> Tensor:
        """``sigmas`` clamped into :attr:`sigma_range` (duplicates merged), float64 decreasing."""
        return clip_sigmas(sigmas, self.sigma_range)

    def sampler_sigmas(self, num_steps: int) -> Tensor:
        """The Heun schedule ``[num_steps]`` of the evaluation's samplers (EDM eq. 5, clipped to
        :attr:`sigma_range`)."""
        return sampler_sigmas(num_steps, self.sigma_range)

    def sigma_record(self, num_steps: int) -> dict[str, Any] | None:
        """How the network's range clipped the noise levels (``None`` when nothing was clipped):
        ``{"model_range", "requested_sigmas", "sigmas", "sampler": [first, last]}``."""
        sampler = self.sampler_sigmas(num_steps)
        if torch.equal(self.sigmas, self.requested_sigmas) and torch.equal(
            sampler, sampler_sigmas(num_steps)
        ):
            return None
        return {
            "model_range": list(self.sigma_range),
            "requested_sigmas": self.requested_sigmas.tolist(),
            "sigmas": self.sigmas.tolist(),
            "sampler": [float(sampler[0]), float(sampler[-1])],
        }

    def reference(self, name: str) -> nn.Module:
        """The reference denoiser ``name``: one of :attr:`references`, or built once for the
        member that asks (refreshed and calibrated with the others)."""
        if name in self.references:
            return self.references[name]
        if name not in self._extra_references:
            check_reference_names([name])
            built = build_references([name], self.data.reference, self.device)
            self._extra_references[name] = built[name]
        return self._extra_references[name]

    def all_references(self) -> dict[str, nn.Module]:
        """Every reference of the evaluation: :attr:`references` and those members asked for."""
        return {**self.references, **self._extra_references}

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
        """Refresh the references that depend on ``network`` (its heatmaps, its calibration);
        tell the members which changed. Returns their names."""
        self.heatmap_cache = {}
        self.calibration.forget()
        changed = [
            name
            for name, ref in self.all_references().items()
            if isinstance(ref, NetworkDependentReference) and ref.refresh(network, self)
        ]
        if changed:
            for member in self.members.values():
                member.references_changed(changed)
        return changed

    def reference_schedules(self) -> dict[str, dict[str, Any]]:
        """``{name: {"sigmas", "patch_sizes", "calibrated", "calibrated_by"}}``: the window
        schedule each calibrated reference used in the latest evaluation."""
        return {
            name: ref.schedule_record()
            for name, ref in self.all_references().items()
            if hasattr(ref, "schedule_record")
        }

    def noise(self, num: int, seed: int) -> Tensor:
        """This process's share (every ``world_size``-th from ``rank``) of ``num`` fixed noise
        images ``[num_local, C, H, W]`` seeded by ``seed``, on the evaluation's device."""
        all_noise = fixed_noise(num, self.data.image_shape, seed)
        return all_noise[self.rank :: self.world_size].to(self.device)

    def heldout_pool(self) -> Tensor:
        """The held-out images, or the training images when none are held out."""
        data = self.data
        return data.heldout if data.heldout.shape[0] else data.train

    def heldout_probes(self, sigmas: Tensor, num_images: int) -> ProbeSet:
        """Forward probes of ``num_images`` held-out images at ``sigmas`` (every process the
        same; seed :attr:`EvalSeeds.heldout_probes`), on the evaluation's device."""
        pool = self.heldout_pool()
        return forward_probes(pool, sigmas, num_images, self.seeds.heldout_probes).to(self.device)


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


#: Members that lived in this module before :mod:`lightning_pspc.evaluation.members`; their old
#: import path (``lightning_pspc.evaluation.pipeline.Comparison``) still works.
_MOVED_MEMBERS = ("Comparison", "Memorization", "MemorizationResult", "Panel", "PanelResult")


def __getattr__(name: str) -> Any:
    if name in _MOVED_MEMBERS:
        from . import members

        return getattr(members, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
