"""The settings of ``eval.py``: the evaluation's own options and one group per member.

:class:`EvaluationOptions` sets up the :class:`~lightning_pspc.evaluation.Evaluation` (references,
sigma grid, seed, batches, device, sampler steps, the network-dependent references' options and
their calibration); each member's :class:`~lightning_pspc.evaluation.options.OptionGroup` lives
beside the member and builds it. :class:`EvalSettings` collects them in the order the members
run, takes every option by its flag name (``EvalSettings(num_samples=16)``) and writes them back
flat into ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..denoisers.network_fitted import ReferenceOptions
from ..denoisers.registry import check_reference_names
from .calibration import CalibrationSettings
from .members.agreement import AgreementOptions
from .members.comparison import ComparisonOptions
from .members.generalization import GeneralizationOptions
from .members.linear_distillation import LinearDistillationOptions
from .members.memorization import MemorizationOptions
from .members.panel import PanelOptions
from .members.patch_sizes import LocalityOptions
from .options import OptionGroup, option
from .pipeline import EvalData, Evaluation, EvaluationMember
from .probes import probe_sigmas


class EvalError(ValueError):
    """A bad input of ``eval.py``; the message names the value and the fix."""


@dataclass
class EvaluationOptions(OptionGroup):
    """Options of the evaluation itself (every member uses them)."""

    key = "evaluation"
    references: tuple[str, ...] = option(
        ("empirical", "pspc", "gaussian"),
        "reference denoisers: empirical, pspc, gaussian, pspc_flex, pspc_flex_soft, ls, els, "
        "wiener_locality, linear_distilled (the local ones are slow on CPU; see README)",
    )
    sigmas: list[float] | None = option(
        None, "noise levels (default: the 18 EDM sigmas)", item=float
    )
    seed: int = option(0, "seed of the probes and samples")
    batch_size: int = option(128, "images per denoiser call")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    num_steps: int = option(18, "Heun steps per sample")
    flex_probes: int = option(
        2, "held-out probes per sigma of the pspc_flex references' full heatmaps"
    )
    pspc_schedule: str = option(
        "calibrated",
        "patch sides of the pspc reference: calibrated (best fit to the network at each sigma, "
        "on the calibration probes), scaled (the CIFAR-10 schedule scaled to the image size) or "
        "P1,P2,... (one side per evaluation sigma, largest sigma first)",
    )
    calibration_probes: int = option(
        4,
        "held-out probes per sigma on which the ls / els references fit their window sides "
        "(disjoint from the scored probes; 0 with --calibration-reverse-probes 0: default sides)",
    )
    calibration_reverse_probes: int = option(
        2, "seeds of the network's own Heun trajectories whose states join the calibration"
    )

    def check(self) -> None:
        check_reference_names(self.references)
        probe_sigmas(self.sigmas)
        if self.flex_probes < 1:
            raise ValueError(f"--flex-probes {self.flex_probes} must be >= 1")
        self.reference_options()
        if min(self.num_steps, self.batch_size) < 1:
            raise ValueError(
                f"--num-steps {self.num_steps} and --batch-size {self.batch_size} must be >= 1"
            )
        if min(self.calibration_probes, self.calibration_reverse_probes) < 0:
            raise ValueError(
                f"--calibration-probes {self.calibration_probes} and "
                f"--calibration-reverse-probes {self.calibration_reverse_probes} must be >= 0"
            )
        check_device(self.device)

    def reference_options(self) -> ReferenceOptions:
        """The options of the network-dependent references (``--pspc-schedule`` parsed and
        checked against the sigma grid)."""
        choice: str | tuple[int, ...] = self.pspc_schedule
        if choice not in ("calibrated", "scaled"):
            num = probe_sigmas(self.sigmas).numel()
            try:
                choice = tuple(int(k) for k in str(choice).split(","))
            except ValueError:
                choice = ()
            if len(choice) != num or min(choice, default=0) < 1:
                raise ValueError(
                    f"--pspc-schedule {self.pspc_schedule!r}: give calibrated, scaled or {num} "
                    "patch sides >= 1 separated by commas (one per evaluation sigma, largest "
                    "sigma first)"
                )
        return ReferenceOptions(flex_probes=self.flex_probes, pspc_schedule=choice)

    def torch_device(self) -> torch.device:
        """``auto``: CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def check_device(name: str) -> None:
    """``auto``, ``cpu``, or a CUDA device this machine has; else :class:`EvalError`."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise EvalError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise EvalError(
            f"--device {name!r}: this machine has {count} usable CUDA device(s). "
            "Fix: --device cpu (or auto: CUDA when available)"
        )


@dataclass
class FeatureOptions(OptionGroup):
    """The feature space in which ``eval.py`` also compares samples (twins, agreement)."""

    key = "feature_space"
    features: str = option(
        "",
        "feature extractor for sample similarity: a TorchScript file (e.g. SSCD's) or "
        "timm:<model name>:<local weights file>; twin similarity, reproducibility and sample "
        "agreement are then also given as feature cosines (docs/pretrained.md)",
    )
    features_size: int = option(
        0, "input side of the feature extractor (0: 288 for TorchScript, timm's own)"
    )
    features_threshold: float = option(
        0.6,
        "feature cosine above which twin samples count as reproduced (0.6: Zhang et al.'s SSCD "
        "threshold)",
    )

    def check(self) -> None:
        if self.features_size < 0:
            raise ValueError(f"--features-size {self.features_size} must be >= 0 (0: default)")
        if not -1 <= self.features_threshold < 1:
            raise ValueError(
                f"--features-threshold {self.features_threshold} must be a cosine in [-1, 1)"
            )

    def load(self, device: torch.device) -> Any:
        """The :class:`~lightning_pspc.pretrained.FeatureExtractor` of ``--features`` on
        ``device`` (``None`` without one); a bad one is an :class:`EvalError`."""
        if not self.features:
            return None
        from ..pretrained import PretrainedError, load_features

        try:
            return load_features(self.features, self.features_size, device)
        except PretrainedError as err:
            raise EvalError(str(err)) from None


#: The option groups of ``eval.py``, the members' in the order they run (the agreement reuses
#: the memorization's samples, so it comes after it).
GROUPS: tuple[type[OptionGroup], ...] = (
    EvaluationOptions,
    LocalityOptions,
    ComparisonOptions,
    MemorizationOptions,
    PanelOptions,
    GeneralizationOptions,
    AgreementOptions,
    FeatureOptions,
    LinearDistillationOptions,
)


class EvalSettings:
    """Every option of ``eval.py``, by group (``settings.comparison.num_train_probes``).

    Built from options by flag name, ``EvalSettings(num_train_probes=8, references=("empirical",))``;
    a name of no group is a ``TypeError``. Read an option by its group, or by its flag name
    (``settings.num_train_probes``).
    """

    def __init__(self, **values: Any) -> None:
        owner = {f.name: g for g in GROUPS for f in g.option_fields()}
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise TypeError(f"EvalSettings: unknown option(s) {unknown}")
        self.groups: dict[str, OptionGroup] = {}
        for group in GROUPS:
            mine = {k: v for k, v in values.items() if owner[k] is group}
            for f in group.option_fields():  # a list given for a tuple option becomes a tuple
                tuple_option = f.default_factory is not dataclasses.MISSING
                if f.name in mine and tuple_option and isinstance(f.default_factory(), tuple):
                    mine[f.name] = tuple(mine[f.name])
            self.groups[group.key] = group(**mine)

    @property
    def evaluation(self) -> EvaluationOptions:
        return self.groups["evaluation"]  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        groups = self.__dict__.get("groups", {})
        if name in groups:
            return groups[name]
        for group in groups.values():
            if name in {f.name for f in group.option_fields()}:
                return getattr(group, name)
        raise AttributeError(f"EvalSettings has no option {name!r}")

    def flat(self) -> dict[str, Any]:
        """``{option: value}`` of every group (``metrics.json``'s ``settings``)."""
        return {k: v for g in self.groups.values() for k, v in dataclasses.asdict(g).items()}

    def check(self) -> None:
        """Raise :class:`EvalError` for a bad option."""
        for group in self.groups.values():
            try:
                group.check()
            except ValueError as err:
                raise EvalError(str(err)) from None

    def torch_device(self) -> torch.device:
        return self.evaluation.torch_device()

    def members(self) -> list[EvaluationMember]:
        """The evaluation members of these settings, in order."""
        return [m for g in self.groups.values() for m in g.build(self)]

    def for_data(self, image_shape: tuple[int, ...], device: torch.device) -> EvalSettings:
        """These settings with every ``auto`` option decided for images of ``image_shape``
        ``[C, H, W]`` evaluated on ``device`` (:meth:`OptionGroup.resolve`); an option that
        does not fit the images is an :class:`EvalError`."""
        decided: dict[str, Any] = {}
        for group in self.groups.values():
            try:
                decided |= group.resolve(tuple(image_shape), device)
            except ValueError as err:
                raise EvalError(str(err)) from None
        if not decided:
            return self
        values = {
            f.name: getattr(g, f.name) for g in self.groups.values() for f in g.option_fields()
        }
        return EvalSettings(**(values | decided))

    def build_evaluation(
        self,
        data: EvalData,
        device: torch.device,
        sigma_range: tuple[float, float] | None = None,
        features: Any = None,
    ) -> Evaluation:
        """The evaluation of these settings (``auto`` options decided for ``data`` and
        ``device``) on ``data``; ``sigma_range``: the noise levels the network accepts;
        ``features``: the feature extractor (:meth:`FeatureOptions.load`)."""
        settings = self.for_data(data.image_shape, device)
        if settings is not self:
            return settings.build_evaluation(data, device, sigma_range, features)
        ev, linear = self.evaluation, self.groups["linear"]
        calibration = CalibrationSettings(
            ev.calibration_probes,
            ev.calibration_reverse_probes,
            fit_kinds=tuple(self.locality_fit_kinds),
        )
        return Evaluation(
            data,
            self.members(),
            ev.references,
            ev.sigmas,
            ev.seed,
            ev.batch_size,
            device,
            reference_options=dataclasses.replace(
                ev.reference_options(),
                linear_probes=linear.linear_probes,
                linear_ridge=linear.linear_ridge,
            ),
            calibration=calibration,
            sigma_range=sigma_range,
            features=features,
        )
