"""The ``linear_distilled`` reference: the network's own linear distillation (docs/reference.md 3c).

A :class:`~lightning_pspc.denoisers.network_fitted.NetworkDependentReference` that, at every
refresh, distills the evaluated network into one affine map per sigma of the evaluation's grid
(:meth:`~lightning_pspc.denoisers.linear.LinearDenoiser.distill`, Li et al. 2024 sec. 3, in
closed form), and any other sigma it is called with (a sampler's steps) on first use.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..diffusion.preconditioning import batch_sigma
from ..types import Denoiser
from .linear import SIGMA_RTOL, LinearDenoiser
from .network_fitted import NetworkDependentReference


class LinearDistilledReference(NetworkDependentReference):
    """``D_lin(z, s) = W_s z + b_s`` fitted to the evaluated network on forward probes of the
    training set ``images [N, C, H, W]`` (as the network sees it).

    :meth:`refresh` keeps the network as teacher and distills it on the evaluation's grid
    (``evaluation.sigmas``) with ``evaluation.reference_options.linear_probes`` probes per sigma
    (0: ``4 * D``), ridge ``linear_ridge`` and the evaluation's ``linear_distillation`` seed;
    under DDP (an evaluation of ``world_size > 1`` in an initialised process group) every
    process denoises its share of the probes. A call at a sigma off the grid
    distills that sigma first, on every process alone (all the probes, no collective), so that
    samplers with other steps work on any process.
    """

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.images = images
        self.denoiser: LinearDenoiser | None = None
        self._teacher: tuple[Denoiser, ...] = ()  # not a submodule: the network stays the caller's
        self.num_probes: int | None = None
        self.ridge, self.seed, self.batch_size = 0.0, 0, 256

    def refresh(self, network: Denoiser, evaluation: Any) -> bool:
        options = evaluation.reference_options
        self.num_probes = options.linear_probes or None
        self.ridge, self.seed = options.linear_ridge, evaluation.seeds.linear_distillation
        self.batch_size, self._teacher = evaluation.batch_size, (network,)
        # the evaluation's processes share the fit (an evaluation of one process never waits
        # on the others, even inside a process group)
        shared = evaluation.world_size > 1 and dist.is_available() and dist.is_initialized()
        self.denoiser = self._distill(evaluation.sigmas, distributed=shared)
        return True

    def _distill(self, sigmas: Tensor, distributed: bool) -> LinearDenoiser:
        return LinearDenoiser.distill(
            self._teacher[0],
            self.images,
            sigmas,
            self.num_probes,
            self.ridge,
            self.seed,
            self.batch_size,
            distributed=distributed,
        )

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        if self.denoiser is None:
            return super().forward(z, sigma)  # the error of a reference used before refresh
        sigma = batch_sigma(sigma, z.shape[0], z.device)
        off = sigma[self.denoiser.grid_index(sigma).to(sigma.device) < 0]
        if off.numel():
            new = sorted({float(s) for s in off.double().tolist()})
            kept = [s for i, s in enumerate(new) if i == 0 or s - new[i - 1] > SIGMA_RTOL * s]
            extra = self._distill(torch.tensor(kept, dtype=torch.float64), distributed=False)
            self.denoiser = LinearDenoiser.concat([self.denoiser, extra])
        return self.denoiser(z, sigma)
