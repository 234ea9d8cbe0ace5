"""Per-epoch linear distillation of the EMA network against the Gaussian denoiser (Li et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning

from ..denoisers.network_fitted import ReferenceOptions
from ..evaluation.members.linear_distillation import LinearDistillation
from ..evaluation.pipeline import EvaluationMember
from .periodic import PeriodicEvaluation


class LinearDistillationMonitor(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: the network's closed-form linear distillation per sigma.

    The :class:`~lightning_pspc.evaluation.members.LinearDistillation` member: the EMA network is
    distilled into one affine map per sigma of ``sigmas`` (default the 18 EDM sigmas) from
    ``num_probes`` forward probes of the training set per sigma (0: ``4 * D``, ``D = C*H*W``;
    ``ridge`` per probe; docs/reference.md section 3c), then on ``num_images`` training images
    noised at every sigma it logs

    * ``linear_distillation/gaussian_nmse/sigma_<s>``: ``||D_lin - D_gauss||^2 / ||D_gauss||^2``,
      and its mean over the mid sigma band ``.../gaussian_nmse/mid``;
    * ``linear_distillation/network_gaussian_nmse/...``: the same for the network itself;
    * ``linear_distillation/network_mse/...``: ``MSE(D_lin, D_net)``.

    Each evaluation costs ``num_probes * len(sigmas)`` network calls for the fit (shared over
    DDP processes) plus ``num_images * len(sigmas)``; off by default (no preset adds it). With
    ``log_images`` rank 0 draws the measures against sigma (this epoch against earlier ones) and
    the epoch x sigma map into ``<run>/plots/`` and W&B.
    """

    prefix = "linear_distillation"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_probes: int = 0,
        ridge: float = 0.0,
        num_images: int = 16,
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        batch_size: int = 256,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
    ) -> None:
        super().__init__(
            every_n_epochs, log_images, progress, dirpath, (), sigmas, seed, batch_size
        )
        try:
            self.reference_options = ReferenceOptions(linear_probes=num_probes, linear_ridge=ridge)
            self.member = LinearDistillation(num_images)
        except ValueError as err:
            raise ValueError(f"LinearDistillationMonitor: {err}") from None
        self.num_probes, self.ridge, self.num_images = num_probes, ridge, num_images

    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        return [self.member]

    @property
    def history(self) -> list[tuple[int, dict[str, Any]]]:
        """``(epoch, record)`` of every evaluation so far (records as in ``metrics.json``)."""
        return self.histories.get(LinearDistillation.name, [])

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            seed=self.seed, num_probes=self.num_probes, num_images=self.num_images
        )
