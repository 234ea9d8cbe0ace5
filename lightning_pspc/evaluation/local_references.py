"""The local family as reference denoisers of an evaluation (REFERENCE.md sections 2 and 3b).

``pspc_flex`` / ``pspc_flex_soft`` cut their masks from the sensitivity heatmaps of the network
being evaluated, and ``ls`` / ``els`` take the best-fit patch sizes measured on it when an
:class:`~lightning_pspc.evaluation.locality.Locality` member has calibrated them. Such a
reference is a :class:`NetworkDependentReference`: the :class:`~lightning_pspc.evaluation.Evaluation`
calls :meth:`~NetworkDependentReference.refresh` with the network before the members that use
references, and the members drop their cached outputs of the references that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..denoisers import (
    CIFAR10_TAUS,
    EquivariantLocalDenoiser,
    LocalDenoiser,
    PSPCFlexDenoiser,
    WienerLocalityDenoiser,
)
from ..diffusion.schedule import edm_sigmas
from ..locality import heatmaps_at_sigmas
from ..types import Denoiser
from .probes import forward_probes

#: Best-fit PSPC-Square patch sides of the small UNet preset (Fashion-MNIST 28x28, N = 1,024,
#: 20 epochs; REFERENCE.md section 3b), the default LS / ELS window schedule for 28x28 until the
#: network's own best fit is measured. Largest sigma first.
FMNIST_LOCAL_SIGMAS: tuple[float, ...] = (10.0, 3.0, 1.0, 0.5, 0.2, 0.05)
FMNIST_LOCAL_SIZES: tuple[int, ...] = (17, 13, 7, 5, 3, 1)

#: Probes per sigma of the PSPC-Flex references' heatmaps (a full heatmap costs ``C*H*W`` VJPs
#: per probe: ~30 s per probe per sigma for the small UNet on 2 loaded CPU cores).
DEFAULT_FLEX_PROBES = 2


def default_local_schedule(height: int, width: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """``(sigmas, odd window sides)`` for LS / ELS without a calibration: the measured 28x28
    schedule (:data:`FMNIST_LOCAL_SIZES`), its sides scaled by ``side / 28`` to the nearest odd
    integer for other image sizes."""
    side = max(height, width)
    sizes = tuple(max(1, 2 * round((p * side / 28 - 1) / 2) + 1) for p in FMNIST_LOCAL_SIZES)
    return FMNIST_LOCAL_SIGMAS, sizes


def nearest_taus(sigmas: Tensor, taus: Sequence[float] = CIFAR10_TAUS) -> tuple[float, ...]:
    """PSPC-Flex ``tau`` at each of ``sigmas [S]``: the value of the nearest of the 18 EDM sigmas
    in the published CIFAR-10 schedule (REFERENCE.md section 2)."""
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
    held-out forward probes (the evaluation's held-out images and seed) at every grid sigma of the
    evaluation whose ``tau`` (:func:`nearest_taus`) is below 1; sigmas with ``tau = 1`` get
    uniform heatmaps (the mask is the whole image: the empirical denoiser, hard or soft).
    """

    def __init__(self, images: Tensor, soft: bool = False, num_probes: int = DEFAULT_FLEX_PROBES):
        super().__init__()
        if num_probes < 1:
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
        key = ("flex", tuple(sigmas.tolist()), self.num_probes)
        cache = getattr(evaluation, "heatmap_cache", {})
        if key not in cache:
            data = evaluation.data
            held = data.heldout if data.heldout.shape[0] else data.train
            probes = forward_probes(
                held, sigmas, self.num_probes, evaluation.seeds.heldout_probes
            ).to(evaluation.device)
            cache[key] = heatmaps_at_sigmas(network, probes, sigmas).double().cpu()
        return cache[key].clone()


class CalibratedLocalReference(NetworkDependentReference):
    """LS (or ELS, ``equivariant``, zero padding) with the network's best-fit window sides when a
    :class:`~lightning_pspc.evaluation.locality.Locality` member has measured them, else
    :func:`default_local_schedule`. LS reads ``evaluation.calibration["ls"]``; ELS reads its own
    ``["els"]`` (Kamb & Ganguli calibrate ELS itself; the member's ``fit_kinds`` must include
    ``"els"``, off by default for its CPU cost) and falls back to the LS calibration.
    :attr:`calibrated_by` names the calibration in use (``None``: the default schedule)."""

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
        calibration = getattr(evaluation, "calibration", {})
        kinds = ("els", "ls") if self.equivariant else ("ls",)
        kind = next((k for k in kinds if k in calibration), None)
        if kind is None:
            return False
        found = calibration[kind]
        schedule = (tuple(float(s) for s in found[0]), tuple(int(k) for k in found[1]))
        if schedule == self.schedule and kind == self.calibrated_by:
            return False
        changed = schedule != self.schedule
        self.schedule, self.calibrated_by = schedule, kind
        if changed:
            self.denoiser = self._build(schedule)
        return changed


#: Factories ``images -> module`` of the local references (added to ``REFERENCE_DENOISERS``).
LOCAL_REFERENCES = {
    "pspc_flex": lambda images: NetworkFlexReference(images, soft=False),
    "pspc_flex_soft": lambda images: NetworkFlexReference(images, soft=True),
    "ls": lambda images: CalibratedLocalReference(images, equivariant=False),
    "els": lambda images: CalibratedLocalReference(images, equivariant=True),
    "wiener_locality": WienerLocalityDenoiser,
}
