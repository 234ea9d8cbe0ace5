"""Reference denoisers fitted to the network being evaluated (docs/reference.md sections 2 and 3b).

``pspc_flex`` / ``pspc_flex_soft`` cut their masks from the sensitivity heatmaps of the network,
and ``ls`` / ``els`` take the window sides that fit it best (its calibration). Such a reference is
a :class:`NetworkDependentReference`: an evaluation
(:class:`~lightning_pspc.evaluation.Evaluation`) calls :meth:`~NetworkDependentReference.refresh`
with the network and itself before the members that use references, and the members drop their
cached outputs of the references that changed. What a reference reads of the evaluation is its
sigma grid, its held-out probes, its heatmap cache, :class:`ReferenceOptions` and its
calibration (``evaluation.calibration.schedule(kind, network)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion.schedule import edm_sigmas
from ..locality import heatmaps_at_sigmas
from ..types import Denoiser
from .local import EquivariantLocalDenoiser, LocalDenoiser
from .pspc import PSPCSquareDenoiser
from .pspc_flex import PSPCFlexDenoiser
from .schedules import CIFAR10_TAUS, default_patch_schedule

#: Best-fit PSPC-Square patch sides of the small UNet preset (Fashion-MNIST 28x28, N = 1,024,
#: 20 epochs; docs/reference.md section 3b), the default LS / ELS window schedule for 28x28 until the
#: network's own best fit is measured. Largest sigma first.
FMNIST_LOCAL_SIGMAS: tuple[float, ...] = (10.0, 3.0, 1.0, 0.5, 0.2, 0.05)
FMNIST_LOCAL_SIZES: tuple[int, ...] = (17, 13, 7, 5, 3, 1)

#: Probes per sigma of the PSPC-Flex references' heatmaps (a full heatmap costs ``C*H*W``
#: vector-Jacobian products per probe).
DEFAULT_FLEX_PROBES = 2


@dataclass(frozen=True)
class ReferenceOptions:
    """Settings of the network-dependent references of an evaluation.

    ``flex_probes``: held-out probes per sigma of the PSPC-Flex references' full heatmaps;
    ``pspc_schedule``: the patch sides of the ``pspc`` reference, ``"calibrated"`` (the best fit
    to the network per sigma of the evaluation's grid), ``"scaled"`` (the CIFAR-10 schedule
    scaled to the image size) or one side per sigma of the evaluation's grid (a tuple);
    ``linear_probes`` (0: ``4 * D``) and ``linear_ridge``: forward probes per sigma and ridge of
    the ``linear_distilled`` reference (docs/reference.md section 3c.2).
    """

    flex_probes: int = DEFAULT_FLEX_PROBES
    pspc_schedule: str | tuple[int, ...] = "calibrated"
    linear_probes: int = 0
    linear_ridge: float = 0.0

    def __post_init__(self) -> None:
        if self.flex_probes < 1:
            raise ValueError(f"flex_probes={self.flex_probes} must be >= 1")
        choice = self.pspc_schedule
        if isinstance(choice, str):
            if choice not in ("calibrated", "scaled"):
                raise ValueError(
                    f"pspc_schedule={choice!r}: use calibrated, scaled or one patch side per sigma"
                )
        elif not choice or any(int(k) != k or k < 1 for k in choice):
            raise ValueError(f"pspc_schedule={list(choice)}: patch sides must be integers >= 1")
        if self.linear_probes < 0 or not self.linear_ridge >= 0:
            raise ValueError(
                f"linear_probes={self.linear_probes} and linear_ridge={self.linear_ridge} must "
                "be >= 0 (0 probes: 4 x D)"
            )


def default_local_schedule(height: int, width: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """``(sigmas, odd window sides)`` for LS / ELS without a calibration: the measured 28x28
    schedule (:data:`FMNIST_LOCAL_SIZES`), its sides scaled by ``side / 28`` to the nearest odd
    integer for other image sizes."""
    side = max(height, width)
    sizes = tuple(max(1, 2 * round((p * side / 28 - 1) / 2) + 1) for p in FMNIST_LOCAL_SIZES)
    return FMNIST_LOCAL_SIGMAS, sizes


def nearest_taus(sigmas: Tensor, taus: Sequence[float] = CIFAR10_TAUS) -> tuple[float, ...]:
    """PSPC-Flex ``tau`` at each of ``sigmas [S]``: the value of the nearest of the 18 EDM sigmas
    in the published CIFAR-10 schedule (docs/reference.md section 2.9)."""
    grid = edm_sigmas(len(taus)).double()
    idx = (sigmas.double().reshape(-1, 1).cpu() - grid).abs().argmin(1)
    return tuple(float(taus[i]) for i in idx.tolist())


class NetworkDependentReference(nn.Module):
    """A reference denoiser that depends on the evaluated network or on a calibration.

    :meth:`refresh` (called by the evaluation before the members that use references) returns
    whether its outputs changed, so that cached outputs can be dropped.
    """

    def refresh(self, network: Denoiser, evaluation: Any) -> bool:
        raise NotImplementedError

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        if self.denoiser is None:
            raise RuntimeError(
                f"{type(self).__name__} is used before refresh(network, evaluation); use it "
                "through an Evaluation, which refreshes it with the network"
            )
        return self.denoiser(z, sigma)


class NetworkFlexReference(NetworkDependentReference):
    """PSPC-Flex (hard masks, or ``soft``) with heatmaps of the network under evaluation.

    At each :meth:`refresh` the full heatmaps ``[H, W, H, W]`` are computed from ``num_probes``
    (default: the evaluation's ``reference_options.flex_probes``) held-out forward probes (the
    evaluation's held-out images and seed) at every grid sigma of the
    evaluation whose ``tau`` (:func:`nearest_taus`) is below 1; sigmas with ``tau = 1`` get
    uniform heatmaps (the mask is the whole image: the empirical denoiser, hard or soft).
    """

    def __init__(self, images: Tensor, soft: bool = False, num_probes: int | None = None):
        super().__init__()
        if num_probes is not None and num_probes < 1:
            raise ValueError(f"PSPC-Flex heatmap probes must be >= 1, got {num_probes}")
        self.images, self.soft, self.num_probes = images, soft, num_probes
        self.denoiser: PSPCFlexDenoiser | None = None
        self.heatmaps: Tensor | None = None  # [S, H, W, H, W] of the latest refresh

    def refresh(self, network: Denoiser, evaluation: Any) -> bool:
        grid = evaluation.sigmas
        taus = nearest_taus(grid)
        _, h, w = self.images.shape[1:]
        hm = torch.ones(grid.numel(), h, w, h, w, dtype=torch.float64)
        need = [i for i, t in enumerate(taus) if t < 1]
        if need:
            got = self._heatmaps(network, evaluation, grid[need])
            zero = got.flatten(-2).sum(-1) == 0  # pixels sensitive to nothing: whole image
            got[zero] = 1.0
            hm[need] = got
        self.heatmaps = hm
        self.denoiser = PSPCFlexDenoiser(
            self.images, heatmaps=hm, taus=taus, sigmas=grid, soft=self.soft
        ).to(self.images.device)
        return True

    def _heatmaps(self, network: Denoiser, evaluation: Any, sigmas: Tensor) -> Tensor:
        """Full heatmaps ``[S, H, W, H, W]`` at ``sigmas``, shared through the evaluation's
        ``heatmap_cache`` (hard and soft PSPC-Flex compute them once per refresh)."""
        num = self.num_probes or evaluation.reference_options.flex_probes
        key = ("flex", tuple(sigmas.tolist()), num)
        cache = evaluation.heatmap_cache
        if key not in cache:
            probes = evaluation.heldout_probes(sigmas, num)
            cache[key] = heatmaps_at_sigmas(network, probes, sigmas).double().cpu()
        return cache[key].clone()


class CalibratedReference(NetworkDependentReference):
    """PSPC-Square, LS or ELS (zero padding) with the window sides that fit the network best.

    ``kind`` is ``"pspc"``, ``"ls"`` or ``"els"``. At each :meth:`refresh` the sides come from the
    evaluation's calibration (``evaluation.calibration.schedule(kind, network)``: the best fit
    per sigma of the evaluation's grid; a sigma between grid sigmas takes the nearest in log
    sigma); ELS takes its own fit when the calibration fits ELS (Kamb & Ganguli calibrate ELS
    itself; off by default for its CPU cost), else LS's. Without a calibration it keeps its
    default sides: for PSPC the CIFAR-10 schedule scaled to the image size
    (:func:`~lightning_pspc.denoisers.schedules.default_patch_schedule`), for LS / ELS
    :func:`default_local_schedule`. PSPC follows ``evaluation.reference_options.pspc_schedule``:
    ``"calibrated"`` (default), ``"scaled"`` (always the scaled schedule) or one side per sigma
    of the evaluation's grid. :attr:`calibrated_by` names the fit in use (``None``: not fitted).
    """

    KINDS = ("pspc", "ls", "els")

    def __init__(self, images: Tensor, kind: str) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"calibrated reference kind {kind!r}: use one of {self.KINDS}")
        self.images, self.kind = images, kind
        if kind == "pspc":
            grid, sizes = default_patch_schedule(*images.shape[-2:])
            self.default = (tuple(grid.tolist()), tuple(sizes))
        else:
            self.default = default_local_schedule(*images.shape[-2:])
        self.schedule, self.source = self.default, "default"
        self.calibrated_by: str | None = None
        self.denoiser = self._build(self.schedule)

    @property
    def equivariant(self) -> bool:
        return self.kind == "els"

    @property
    def calibrated(self) -> bool:
        """Whether a best fit (any kind) sets the window sides."""
        return self.calibrated_by is not None

    def _build(self, schedule: tuple[Sequence[float], Sequence[int]]) -> nn.Module:
        sigmas, sizes = schedule
        if self.kind == "pspc":
            return PSPCSquareDenoiser(self.images, sigmas=sigmas, patch_sizes=sizes, nearest="log")
        if self.kind == "els":
            return EquivariantLocalDenoiser(
                self.images, padding="zeros", sigmas=sigmas, patch_sizes=sizes, nearest="log"
            )
        return LocalDenoiser(self.images, sigmas=sigmas, patch_sizes=sizes, nearest="log")

    def _target(self, network: Denoiser, evaluation: Any) -> tuple[tuple, str, str | None]:
        """``(schedule, source, calibrated_by)`` this reference should use now."""
        if self.kind == "pspc":
            choice = evaluation.reference_options.pspc_schedule
            if choice == "scaled":
                return self.default, "scaled", None
            if choice != "calibrated":  # one side per grid sigma
                grid = tuple(float(s) for s in evaluation.sigmas.tolist())
                return (grid, tuple(int(k) for k in choice)), "given", None
        calibration = evaluation.calibration
        kinds = ("els", "ls") if self.kind == "els" else (self.kind,)
        kind = next((k for k in kinds if calibration.fits(k)), None)
        found = calibration.schedule(kind, network) if kind is not None else None
        if found is None:
            return self.default, "scaled" if self.kind == "pspc" else "default", None
        schedule = (tuple(float(s) for s in found[0]), tuple(int(k) for k in found[1]))
        return schedule, "calibrated", kind

    def refresh(self, network: Denoiser, evaluation: Any) -> bool:
        schedule, self.source, self.calibrated_by = self._target(network, evaluation)
        changed = schedule != self.schedule
        self.schedule = schedule
        if changed:
            self.denoiser = self._build(schedule)
        return changed

    def schedule_record(self) -> dict[str, Any]:
        """``{"sigmas", "patch_sizes", "schedule", "calibrated", "calibrated_by"}`` of the
        schedule in use (``schedule``: ``calibrated``, ``scaled``, ``given`` or ``default``)."""
        return {
            "sigmas": list(self.schedule[0]),
            "patch_sizes": list(self.schedule[1]),
            "schedule": self.source,
            "calibrated": self.calibrated,
            "calibrated_by": self.calibrated_by,
        }


class CalibratedLocalReference(CalibratedReference):
    """LS, or ELS with ``equivariant``: the :class:`CalibratedReference` of kind ``ls`` / ``els``."""

    def __init__(self, images: Tensor, equivariant: bool = False) -> None:
        super().__init__(images, "els" if equivariant else "ls")
