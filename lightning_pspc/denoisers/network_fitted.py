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
from .pspc_flex import PSPCFlexDenoiser
from .schedules import CIFAR10_TAUS

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
    ``linear_probes`` (0: ``4 * D``) and ``linear_ridge``: forward probes per sigma and ridge of
    the ``linear_distilled`` reference (docs/reference.md section 3c.2).
    """

    flex_probes: int = DEFAULT_FLEX_PROBES
    linear_probes: int = 0
    linear_ridge: float = 0.0

    def __post_init__(self) -> None:
        if self.flex_probes < 1:
            raise ValueError(f"flex_probes={self.flex_probes} must be >= 1")
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


class CalibratedLocalReference(NetworkDependentReference):
    """LS (or ELS, ``equivariant``, zero padding) with the window sides that fit the network best.

    At each :meth:`refresh` the sides come from the evaluation's calibration
    (``evaluation.calibration.schedule(kind, network)``, best fit per sigma of the evaluation's
    grid): LS's own fit for LS; for ELS its own fit when the calibration fits ELS (Kamb & Ganguli
    calibrate ELS itself; off by default for its CPU cost), else LS's. Without a calibration
    (no calibration probes) it keeps :func:`default_local_schedule`. :attr:`calibrated_by` names
    the fit in use (``None``: the default schedule)."""

    def __init__(self, images: Tensor, equivariant: bool = False) -> None:
        super().__init__()
        self.images, self.equivariant = images, equivariant
        self.schedule = default_local_schedule(*images.shape[-2:])
        self.calibrated_by: str | None = None
        self.denoiser = self._build(self.schedule)

    @property
    def calibrated(self) -> bool:
        """Whether a best fit (any kind) sets the window sides."""
        return self.calibrated_by is not None

    def _build(self, schedule: tuple[Sequence[float], Sequence[int]]) -> nn.Module:
        sigmas, sizes = schedule
        if self.equivariant:
            return EquivariantLocalDenoiser(
                self.images, padding="zeros", sigmas=sigmas, patch_sizes=sizes
            )
        return LocalDenoiser(self.images, sigmas=sigmas, patch_sizes=sizes)

    def refresh(self, network: Denoiser, evaluation: Any) -> bool:
        calibration = evaluation.calibration
        kinds = ("els", "ls") if self.equivariant else ("ls",)
        kind = next((k for k in kinds if calibration.fits(k)), None)
        found = calibration.schedule(kind, network) if kind is not None else None
        if found is None:
            return False
        schedule = (tuple(float(s) for s in found[0]), tuple(int(k) for k in found[1]))
        changed = schedule != self.schedule
        self.schedule, self.calibrated_by = schedule, kind
        if changed:
            self.denoiser = self._build(schedule)
        return changed

    def schedule_record(self) -> dict[str, Any]:
        """``{"sigmas", "patch_sizes", "calibrated", "calibrated_by"}`` of the schedule in use."""
        return {
            "sigmas": list(self.schedule[0]),
            "patch_sizes": list(self.schedule[1]),
            "calibrated": self.calibrated,
            "calibrated_by": self.calibrated_by,
        }
