"""Per-epoch locality of the EMA network: sensitivity and best-fit patch sizes (docs/reference.md
section 3b)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning

from ..evaluation.members.patch_sizes import (
    DEFAULT_CANDIDATES,
    DEFAULT_FIT_KINDS,
    DEFAULT_FRACTIONS,
    Locality,
)
from ..evaluation.pipeline import EvaluationMember
from .periodic import PeriodicEvaluation


class LocalityMonitor(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: how local the EMA network is, per noise level.

    The :class:`~lightning_pspc.evaluation.members.patch_sizes.Locality` member of the evaluation
    pipeline.
    At each of ``sigmas`` it computes the network's sensitivity heatmaps (mean ``|dD/dz|``, through
    the EDM preconditioner) on ``num_probes`` fixed held-out forward probes (the evaluation's
    held-out images and seed, so the same probes every epoch) for the output pixels of a grid with
    step ``stride``, and logs

    * ``locality/patch_size_f50/sigma_<s>`` (and ``f75``, ``f95``): the sensitivity patch size,
      the mean over the grid's pixels of the side of the smallest centred square holding that
      fraction of the pixel's heatmap mass (Niedoba et al. 2024, sec. 5);
    * ``locality/best_fit_pspc/sigma_<s>``, ``locality/best_fit_ls/sigma_<s>`` (and ``els``):
      the candidate patch side whose PSPC-Square / LS / ELS output is closest in MSE to the
      network's on the same probes (Kamb & Ganguli 2024's calibration), pooled with the states
      of ``num_reverse_probes`` of the network's own Heun trajectories when that is > 0 (then
      also ``best_fit_<kind>_forward`` / ``_reverse``: each set alone); the candidates' outputs
      on the forward probes are computed once, at the first evaluation;

    and ``locality/seconds``. With ``log_images`` rank 0 draws the patch size against sigma (this
    epoch against earlier ones), the epoch x sigma heat map of the f50 patch size, the best-fit
    patch sizes over epochs, and the heatmaps of ``num_pixels_shown`` output pixels.

    It measures only: the ``ls`` / ``els`` references of a
    :class:`~lightning_pspc.callbacks.DenoiserComparison` are calibrated by that callback's own
    evaluation, whatever the order of the callbacks. Every process computes the same heatmaps
    (no sharding under DDP).

    Settings and what they do to the estimate (cost ~ ``len(sigmas) * num_probes * C*H*W /
    stride^2`` vector-Jacobian products per evaluation; timings: ``benchmarks/locality.py``,
    docs/benchmarks.md):

    Args:
        every_n_epochs: evaluation period (also after the last epoch).
        sigmas: noise levels (default 10, 3, 1, 0.5, 0.2, 0.05).
        num_probes: held-out probes per sigma; the heatmap is their mean, so fewer probes give
            noisier patch sizes (the best fit is measured on the same probes).
        stride: output pixel grid step; the patch size is the mean over the grid's pixels, an
            unbiased sample of all pixels' when the grid covers border and interior alike.
        fractions: mass fractions of the sensitivity patch size.
        candidates: odd patch sides tried by the best fit (the result is one of them).
        fit_kinds: a subset of ``pspc``, ``ls``, ``els`` (empty: no best fit); ELS costs
            seconds per probe on the CPU at N = 1,024, so it is not in the default.
        num_reverse_probes: seeds of reverse-process probes pooled into the best fit (default
            0: forward probes only). The trajectories change every epoch, so the candidates'
            outputs on them are recomputed at every evaluation (``R * len(sigmas)`` calls per
            candidate, against ``num_probes * len(sigmas)`` once per fit): in the small preset
            (2 probes, 6 sigmas, 16 candidates, 4 evaluations) one seed adds 96 closed-form
            calls to every evaluation, where the forward fit makes 192 once (so 576 in all
            instead of 192), plus a Heun trajectory; ``eval.py`` pools 2 by default.
        num_pixels_shown: output pixels whose heatmaps are drawn.
        seed: evaluation seed (:class:`~lightning_pspc.evaluation.EvalSeeds`).
        batch_size: probes per denoiser call.
        log_images, progress, dirpath: as for the other evaluation callbacks.
    """

    prefix = "locality"

    def __init__(
        self,
        every_n_epochs: int = 5,
        sigmas: Sequence[float] | None = None,
        num_probes: int = 2,
        stride: int = 4,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        candidates: Sequence[int] = DEFAULT_CANDIDATES,
        fit_kinds: Sequence[str] = DEFAULT_FIT_KINDS,
        num_pixels_shown: int = 4,
        num_reverse_probes: int = 0,
        seed: int = 0,
        batch_size: int = 64,
        log_images: bool = True,
        progress: bool = True,
        dirpath: str | None = None,
    ) -> None:
        super().__init__(
            every_n_epochs, log_images, progress, dirpath, seed=seed, batch_size=batch_size
        )
        try:
            self.member = Locality(
                sigmas,
                num_probes,
                stride,
                fractions,
                candidates,
                fit_kinds,
                num_pixels_shown,
                num_reverse_probes,
            )
        except ValueError as err:
            raise ValueError(f"LocalityMonitor: {err}") from None

    def members(self, trainer: lightning.Trainer) -> list[EvaluationMember]:
        return [self.member]

    @property
    def history(self) -> list[tuple[int, dict[str, Any]]]:
        """``(epoch, LocalityResult.to_json())`` of every evaluation so far."""
        return self.histories.get(Locality.name, [])

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, sigmas=tuple(self.member.sigmas))
