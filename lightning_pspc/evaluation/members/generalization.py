"""Generalization per sigma: linearity (Li et al. 2024), fit to the Gaussian denoiser and R^2.

:class:`Generalization` measures, on fixed held-out pairs, the network's linearity score, its
normalised MSE to the Gaussian denoiser and the ``R^2`` of every reference against it (Lukoianov
et al. 2025); docs/reference.md section 3b. Under DDP every process evaluates its share and the
metrics (:mod:`lightning_pspc.metrics`) reduce across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...metrics import LinearityScore, NormalizedMSE, RSquared
from ...metrics.functional import check_alpha
from ...types import Denoiser
from ..batching import denoise_batched
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.generalization_charts import per_sigma_figure, per_sigma_heatmap


@dataclass
class GeneralizationResult:
    """Per grid sigma ``[S]`` (float64, NaN where no probe fell): ``linearity``,
    ``gaussian_nmse`` and ``r_squared[reference]``; ``pool``: the images of the pairs."""

    sigmas: Tensor
    linearity: Tensor
    gaussian_nmse: Tensor
    r_squared: dict[str, Tensor]
    num_pairs: int
    alpha: float
    pool: str

    def scalars(self, prefix: str = "generalization") -> dict[str, float]:
        """``{prefix}/linearity/sigma_{s:.3g}``, ``{prefix}/gaussian_nmse/...``,
        ``{prefix}/r2/{reference}/...`` and ``{prefix}/linearity/min`` (finite values only)."""
        out = {}
        series = {"linearity": self.linearity, "gaussian_nmse": self.gaussian_nmse}
        series |= {f"r2/{r}": v for r, v in self.r_squared.items()}
        for name, values in series.items():
            for s, v in zip(self.sigmas.tolist(), values.tolist()):
                if math.isfinite(v):
                    out[f"{prefix}/{name}/sigma_{s:.3g}"] = v
        finite = self.linearity[torch.isfinite(self.linearity)]
        if finite.numel():
            out[f"{prefix}/linearity/min"] = float(finite.min())
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"generalization": {"sigmas", "linearity", "gaussian_nmse", "r_squared": {ref: [S]},
        "num_pairs", "alpha", "pool"}}``."""
        return {"generalization": self.record()}

    def record(self) -> dict[str, Any]:
        """The inner record of :meth:`to_json` (kept per evaluation for the charts)."""
        return {
            "sigmas": self.sigmas.tolist(),
            "linearity": self.linearity.tolist(),
            "gaussian_nmse": self.gaussian_nmse.tolist(),
            "r_squared": {r: v.tolist() for r, v in self.r_squared.items()},
            "num_pairs": self.num_pairs,
            "alpha": self.alpha,
            "pool": self.pool,
        }


class Generalization(EvaluationMember):
    """Linearity, normalised Gaussian MSE and ``R^2`` of the references, per sigma.

    ``num_pairs`` pairs of held-out images (training images when fewer than 2 are held out),
    chosen once with the evaluation's ``linearity`` seed, are noised once at every grid sigma
    (``z_i = x_i + s eps_i``, noise from the same seed, so the probes do not depend on the number
    of processes). Per sigma:

    * ``linearity``: mean of ``cos(D(a z1 + b z2), a D(z1) + b D(z2))``, ``a = sqrt(alpha)``,
      ``b = sqrt(1 - alpha)`` (Li et al. 2024);
    * ``gaussian_nmse``: mean over the ``2 * num_pairs`` probes ``z1, z2`` of
      ``||D - D_gauss||^2 / ||D_gauss||^2`` (the evaluation's ``gaussian`` reference, or one
      built from the training set);
    * ``r_squared[ref]``: ``R^2`` of each of the evaluation's references against the network on
      the same probes (Lukoianov et al. 2025).

    The references' outputs are computed once and cached, so every evaluation after the first
    costs ``3 * num_pairs * S`` network calls. Under DDP each process takes every
    ``world_size``-th probe pair.
    """

    name = "generalization"
    uses_references = True

    def __init__(self, num_pairs: int = 8, alpha: float = 0.5) -> None:
        if num_pairs < 1:
            raise ValueError(f"generalization num_pairs={num_pairs} must be >= 1")
        check_alpha(alpha)
        self.num_pairs, self.alpha = num_pairs, float(alpha)

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        data, ev = evaluation.data, evaluation
        self.pool = "heldout" if data.heldout.shape[0] >= 2 else "train"
        images = data.heldout if self.pool == "heldout" else data.train
        pairs = min(self.num_pairs, images.shape[0] // 2)
        if pairs < 1:
            raise ValueError("linearity needs at least 2 images; increase data.num_heldout")
        gen = torch.Generator().manual_seed(ev.seeds.linearity)
        idx = torch.randperm(images.shape[0], generator=gen)[: 2 * pairs]
        x = images[idx].float().cpu().view(2, pairs, *images.shape[1:])  # [2, P, C, H, W]
        s = ev.sigmas.float()  # [S]
        eps = torch.randn((s.numel(), 2, pairs, *images.shape[1:]), generator=gen)
        z = x.unsqueeze(0) + s.view(-1, 1, 1, 1, 1, 1) * eps  # [S, 2, P, C, H, W]
        a, b = math.sqrt(self.alpha), math.sqrt(1 - self.alpha)
        z1, z2 = z[:, 0].flatten(0, 1), z[:, 1].flatten(0, 1)  # [S*P, C, H, W], sigma-major
        sigma = ev.sigmas.repeat_interleave(pairs)  # [S*P] float64
        local = slice(ev.rank, None, ev.world_size)
        self.z = torch.stack([a * z1 + b * z2, z1, z2])[:, local].to(ev.device)  # [3, L, ...]
        self.sigma = sigma[local].to(ev.device)  # [L]
        self.num_pairs_used = pairs
        self.references = dict(ev.references)
        self.gaussian: nn.Module = ev.reference("gaussian")
        self._cache: dict[str, Tensor] = {}

    def work(self) -> int:
        fresh = (
            2 * self.sigma.numel() * (len(self.references) + ("gaussian" not in self.references))
        )
        return 3 * self.sigma.numel() + (0 if self._cache else fresh)

    def _reference_outputs(self, bar: tqdm | None) -> dict[str, Tensor]:
        """``{name: outputs [2L, C, H, W]}`` of the references and the Gaussian on ``z1, z2``."""
        if not self._cache:
            z, sigma = self.z[1:].flatten(0, 1), self.sigma.repeat(2)
            batch = self.evaluation.batch_size
            for name, ref in {**self.references, "gaussian": self.gaussian}.items():
                self._cache[name] = denoise_batched(ref, z, sigma, batch, bar)
        return self._cache

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> GeneralizationResult:
        ev, n = self.evaluation, self.sigma.numel()
        refs = self._reference_outputs(bar)
        out = denoise_batched(
            network, self.z.flatten(0, 1), self.sigma.repeat(3), ev.batch_size, bar
        ).view(3, n, *self.z.shape[2:])
        linearity = LinearityScore(ev.sigmas, self.alpha).to(ev.device)
        linearity.update(out[0], out[1], out[2], self.sigma)
        pair_out, pair_sigma = out[1:].flatten(0, 1), self.sigma.repeat(2)  # D(z1), D(z2)
        nmse = NormalizedMSE(ev.sigmas).to(ev.device)
        nmse.update(pair_out, refs["gaussian"], pair_sigma)
        r2 = {}
        for name in self.references:
            metric = RSquared(ev.sigmas).to(ev.device)
            metric.update(refs[name], pair_out, pair_sigma)
            r2[name] = metric.compute().cpu()
        return GeneralizationResult(
            ev.sigmas,
            linearity.compute().cpu(),
            nmse.compute().cpu(),
            r2,
            self.num_pairs_used,
            self.alpha,
            self.pool,
        )

    def record(self, result: GeneralizationResult) -> dict[str, Any]:
        return result.record()

    def report(self, result: GeneralizationResult) -> dict[str, Any]:
        return result.to_json()

    def references_changed(self, names: Sequence[str]) -> None:
        if set(names) & {*self.references, "gaussian"}:
            self._cache.clear()

    def figures(
        self, result: GeneralizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """Measures against sigma (one line per evaluation); over time the epoch x sigma maps."""
        history = list(history) or [(0, result.record())]
        figs = {"generalization/vs_sigma": per_sigma_figure(self.evaluation.sigmas, history)}
        if over_time:
            figs["generalization/heatmap"] = per_sigma_heatmap(self.evaluation.sigmas, history)
        return figs


@dataclass
class GeneralizationOptions(OptionGroup):
    """``eval.py`` options of the :class:`Generalization` member."""

    key = "generalization"
    num_linearity_pairs: int = option(
        8, "held-out pairs of the linearity / Gaussian-fit / R^2 measures (0: off)"
    )

    def check(self) -> None:
        if self.num_linearity_pairs < 0:
            raise ValueError(
                f"--num-linearity-pairs {self.num_linearity_pairs} must be >= 0 (0 leaves the "
                "measure out)"
            )

    def build(self, settings: Any) -> list[EvaluationMember]:
        return [Generalization(self.num_linearity_pairs)] if self.num_linearity_pairs else []
