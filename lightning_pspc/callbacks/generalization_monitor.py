"""Per-epoch linearity and Gaussian fit of the EMA network (Li et al. 2024; Lukoianov et al. 2025)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning

from ..denoisers.registry import check_reference_names
from ..evaluation.members.generalization import Generalization
from ..evaluation.pipeline import EvaluationMember
from .periodic import PeriodicEvaluation


class GeneralizationMonitor(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: linearity, normalised Gaussian MSE and ``R^2`` per sigma.

    The :class:`~lightning_pspc.evaluation.members.generalization.Generalization` member of the
    evaluation pipeline on ``num_pairs`` held-out pairs fixed for the whole run (seeded through
    :class:`~lightning_pspc.evaluation.EvalSeeds` from ``seed``), each noised once at every sigma:

    * ``generalization/linearity/sigma_<s>``: Li et al.'s linearity score
      ``cos(D(a z1 + b z2), a D(z1) + b D(z2))`` (``a = sqrt(alpha)``, ``b = sqrt(1 - alpha)``),
      and its minimum over sigma ``generalization/linearity/min``;
    * ``generalization/gaussian_nmse/sigma_<s>``: ``||D - D_gauss||^2 / ||D_gauss||^2``;
    * ``generalization/r2/<reference>/sigma_<s>``: ``R^2`` of each reference denoiser against
      the network (``references``; the Gaussian one is built for the normalised MSE anyway).

    The references' outputs are computed at the first evaluation and cached; each evaluation
    then costs ``3 * num_pairs * len(sigmas)`` network calls (432 with the defaults). Under DDP
    each process evaluates its share of the pairs and the per-sigma sums are reduced across
    processes. With ``log_images`` rank 0 draws, into ``<run>/plots/`` and W&B, the measures
    against sigma (this epoch against earlier ones) and the epoch x sigma heat maps.
    """

    prefix = "generalization"

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_pairs: int = 8,
        alpha: float = 0.5,
        references: Sequence[str] = ("empirical", "gaussian"),
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
    ) -> None:
        super().__init__(
            every_n_epochs,
            log_images,
            progress,
            dirpath,
            check_reference_names(references) if references else (),
            sigmas,
            seed,
            batch_size,
        )
        try:
            self.member = Generalization(num_pairs, alpha)
        except ValueError as err:
            raise ValueError(f"GeneralizationMonitor: {err}") from None
        self.num_pairs, self.alpha = num_pairs, alpha

    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        return [self.member]

    @property
    def history(self) -> list[tuple[int, dict[str, Any]]]:
        """``(epoch, record)`` of every evaluation so far (records as in ``metrics.json``)."""
        return self.histories.get(Generalization.name, [])

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, num_pairs=self.num_pairs, alpha=self.alpha)
