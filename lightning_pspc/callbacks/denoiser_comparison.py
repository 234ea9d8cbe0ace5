"""Per-epoch distance of the EMA network to closed-form denoisers (Niedoba et al. 2025, fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning

from ..denoisers.registry import check_reference_names
from ..evaluation.calibration import CalibrationSettings
from ..evaluation.members.comparison import Comparison, DenoiserComparer
from ..evaluation.members.panel import Panel
from ..evaluation.pipeline import EvaluationMember
from .periodic import PeriodicEvaluation


class DenoiserComparison(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: MSE of the EMA network to each reference denoiser per sigma.

    The :class:`~lightning_pspc.evaluation.Comparison` member of the evaluation pipeline, on
    probes fixed for the whole run (docs/reference.md section 3):

    * ``train`` / ``heldout``: ``num_train_probes`` training and ``num_heldout_probes`` held-out
      images, each noised once at every sigma; the reference denoisers' outputs on them are
      computed once, at the first evaluation, and cached;
    * ``reverse``: the states of the EMA network's own Heun trajectories from
      ``num_reverse_probes`` fixed seeds, at each sigma (new every evaluation).

    All random choices derive from ``seed`` (:class:`~lightning_pspc.evaluation.EvalSeeds`). The
    reference denoisers (``empirical``, ``pspc``, ``gaussian``) are built at setup from
    ``trainer.datamodule.reference_images()`` on the training device. Under DDP every process
    evaluates its share of the probes and the per-sigma sums are reduced across processes.

    Logged: ``compare/<reference>/<kind>/sigma_<s>`` (``s`` to 3 significant digits) and the
    band means ``compare/<reference>/<kind>/{low,mid,high}`` (sigma < 0.25, 0.25-10, > 10), plus
    ``compare/seconds``. With ``log_images`` rank 0 also draws, into ``<run>/plots/`` and W&B: MSE
    against sigma per reference (this epoch against earlier ones), the epoch x sigma heat map of
    the distance to the empirical denoiser, and a figure-1-like panel (noisy input | network |
    references) of one held-out image at ``panel_sigmas`` sigmas.

    Args:
        every_n_epochs: evaluation period (also after the last epoch).
        references: names of the reference denoisers
            (:data:`~lightning_pspc.evaluation.REFERENCE_DENOISERS`): ``empirical``, ``pspc``,
            ``gaussian`` and the local family ``pspc_flex``, ``pspc_flex_soft`` (masks from the
            current network's heatmaps, recomputed at every evaluation), ``ls``, ``els`` (window
            sides fitted to the current network at every evaluation, on the calibration probes;
            ELS is slow on CPU) and ``wiener_locality``.
        sigmas: noise-level grid (default: the 18 EDM sigmas).
        num_train_probes, num_heldout_probes: images per pool, each probed at every sigma.
        num_reverse_probes: seeds of reverse trajectories (each gives one probe per sigma).
        seed: seed of the probe images, noise and trajectory seeds.
        batch_size: probes per denoiser call.
        log_images: draw the charts (rank 0).
        panel_sigmas: rows of the image panel.
        progress: show a progress bar (rank 0, when the Trainer shows one).
        dirpath: folder for ``plots/`` (default: the run folder).
        calibration_probes, calibration_reverse_probes: held-out probes and reverse
            trajectories per sigma on which ``ls`` / ``els`` fit their window sides (disjoint
            from the scored probes; both 0: the default sides).
    """

    prefix = "compare"

    def __init__(
        self,
        every_n_epochs: int = 1,
        references: Sequence[str] = ("empirical", "pspc", "gaussian"),
        sigmas: Sequence[float] | None = None,
        num_train_probes: int = 8,
        num_heldout_probes: int = 8,
        num_reverse_probes: int = 4,
        seed: int = 0,
        batch_size: int = 64,
        log_images: bool = True,
        panel_sigmas: int = 6,
        progress: bool = True,
        dirpath: str | None = None,
        calibration_probes: int = 4,
        calibration_reverse_probes: int = 2,
    ) -> None:
        super().__init__(
            every_n_epochs,
            log_images,
            progress,
            dirpath,
            check_reference_names(references),
            sigmas,
            seed,
            batch_size,
        )
        try:
            self.calibration = CalibrationSettings(calibration_probes, calibration_reverse_probes)
            self._members = (
                Comparison(num_train_probes, num_heldout_probes, num_reverse_probes),
                Panel(panel_sigmas),
            )
        except ValueError as err:
            raise ValueError(f"DenoiserComparison: {err}") from None

    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        comparison, panel = self._members
        return [comparison, panel] if trainer.is_global_zero and self.log_images else [comparison]

    @property
    def comparer(self) -> DenoiserComparer:
        """The comparer of this process (after setup)."""
        return self._members[0].comparer

    @property
    def history(self) -> list[tuple[int, dict[str, dict[str, list[float]]]]]:
        """``(epoch, {kind: {reference: [S] MSEs}})`` of every evaluation so far."""
        return self.histories.get(Comparison.name, [])

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, references=self.references)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "history" in state_dict:  # checkpoints written before the evaluation pipeline
            state_dict = {"histories": {Comparison.name: state_dict["history"]}}
        super().load_state_dict(state_dict)
