"""Per-epoch distance of the EMA network to closed-form denoisers (Niedoba et al. 2025, fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning
import torch

from ..evaluation.engine import (
    ComparisonResult,
    DenoiserComparer,
    DenoiserPanel,
    build_references,
    check_reference_names,
)
from ..evaluation.plots import heatmap_figure, mse_vs_sigma_figure, panel_figure
from ..evaluation.probes import fixed_noise, probe_sigmas
from .periodic import PeriodicEvaluation


class DenoiserComparison(PeriodicEvaluation):
    """Every ``every_n_epochs`` epochs: MSE of the EMA network to each reference denoiser per sigma.

    Probes (REFERENCE.md section 3), fixed for the whole run:

    * ``train`` / ``heldout``: ``num_train_probes`` training and ``num_heldout_probes`` held-out
      images, each noised once at every sigma (``z = x + sigma eps``, seeded by ``seed``); the
      reference denoisers' outputs on them are computed once, at the first evaluation, and cached;
    * ``reverse``: the states of the EMA network's own Heun trajectories from
      ``num_reverse_probes`` fixed seeds, at each sigma (new every evaluation).

    The reference denoisers (``empirical``, ``pspc``, ``gaussian``) are built at setup from
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
        references: names of the reference denoisers.
        sigmas: noise-level grid (default: the 18 EDM sigmas).
        num_train_probes, num_heldout_probes: images per pool, each probed at every sigma.
        num_reverse_probes: seeds of reverse trajectories (each gives one probe per sigma).
        seed: seed of the probe images, noise and trajectory seeds.
        batch_size: probes per denoiser call.
        log_images: draw the charts (rank 0).
        panel_sigmas: rows of the image panel.
        progress: show a progress bar (rank 0, when the Trainer shows one).
        dirpath: folder for ``plots/`` (default: the run folder).
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
    ) -> None:
        super().__init__(every_n_epochs, log_images, progress, dirpath)
        counts = {
            "num_train_probes": num_train_probes,
            "num_heldout_probes": num_heldout_probes,
            "num_reverse_probes": num_reverse_probes,
        }
        if any(v < 0 for v in counts.values()) or not any(counts.values()):
            raise ValueError(f"DenoiserComparison: probe counts {counts} must be >= 0, not all 0")
        if batch_size < 1 or panel_sigmas < 1:
            raise ValueError(
                f"DenoiserComparison: batch_size={batch_size} and panel_sigmas={panel_sigmas} "
                "must be >= 1"
            )
        self.references = check_reference_names(references)
        self.sigmas = probe_sigmas(sigmas)
        self.num_train_probes, self.num_heldout_probes = num_train_probes, num_heldout_probes
        self.num_reverse_probes, self.seed, self.batch_size = num_reverse_probes, seed, batch_size
        self.panel_sigmas = panel_sigmas
        self.comparer: DenoiserComparer | None = None
        self.panel: DenoiserPanel | None = None
        # (epoch, {kind: {reference: [S] floats}}) of every evaluation, for the charts
        self.history: list[tuple[int, dict[str, dict[str, list[float]]]]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, references=self.references)

    def prepare(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, device: torch.device
    ) -> None:
        """Build the reference denoisers, the fixed probes and (rank 0) the image panel."""
        dm = trainer.datamodule
        refs = build_references(self.references, dm.reference_images(), device)
        train, heldout = dm.train_images(), dm.heldout_images()
        self.comparer = DenoiserComparer(
            refs,
            self.sigmas,
            train,
            heldout,
            self.num_train_probes,
            self.num_heldout_probes,
            fixed_noise(self.num_reverse_probes, dm.image_shape, self.seed + 2),
            seed=self.seed,
            batch_size=self.batch_size,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            device=device,
        )
        if trainer.is_global_zero and self.log_images:
            image = heldout[0] if heldout.shape[0] else train[0]
            self.panel = DenoiserPanel.build(
                refs, image, self.sigmas, self.panel_sigmas, self.seed + 3, device
            )

    def evaluate(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, epoch: int
    ) -> None:
        """Measure, log the scalars and (rank 0) draw the charts."""
        bar = self.progress_bar(trainer, self.comparer.work(), "DenoiserComparison")
        try:
            result = self.comparer.evaluate(pl_module.denoiser, bar)
        finally:
            bar.close()
        table = {k: {r: v.tolist() for r, v in t.items()} for k, t in result.mse.items()}
        self.history = [h for h in self.history if h[0] != epoch] + [(epoch, table)]
        pl_module.log_dict(result.scalars(self.prefix), on_step=False, on_epoch=True)
        if trainer.is_global_zero and self.log_images:
            self._draw(trainer, pl_module, epoch, result)

    def _draw(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        epoch: int,
        result: ComparisonResult,
    ) -> None:
        for ref in self.references:
            history = [
                (e, {k: torch.tensor(t[ref]) for k, t in table.items()})
                for e, table in self.history
            ]
            fig = mse_vs_sigma_figure(self.sigmas, history, ref)
            self.publish(trainer, fig, f"{self.prefix}/{ref}/mse_vs_sigma", epoch)
        if "empirical" in self.references:
            kinds = list(result.mse)
            tables = {
                k: torch.tensor([t[k]["empirical"] for _, t in self.history if k in t])
                for k in kinds
            }
            fig = heatmap_figure(self.sigmas, [e for e, _ in self.history], tables)
            self.publish(trainer, fig, f"{self.prefix}/empirical/heatmap", epoch)
        if self.panel is not None:
            images = self.panel(pl_module.denoiser)
            fig = panel_figure(images, self.panel.probes.sigma, f"epoch {epoch}")
            self.publish(trainer, fig, f"{self.prefix}/panel", epoch)

    # --- checkpointing: keep the history so the charts of a resumed run go on ---------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": [[e, t] for e, t in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(int(e), t) for e, t in state_dict.get("history", [])]
