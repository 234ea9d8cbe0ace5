"""Evaluation members of generalization (REFERENCE.md sections 3 and 3b).

* :class:`Generalization`: per sigma, the linearity score of the network (Li et al. 2024), its
  normalised MSE to the Gaussian denoiser and the ``R^2`` of every reference denoiser against it
  (Lukoianov et al. 2025), on fixed held-out pairs;
* :class:`Agreement`: samples of the network and of closed-form denoisers from the same noise
  (same Heun sampler), compared pair by pair (Kamb & Ganguli 2024; Niedoba et al. 2025, fig. 9);
* :class:`MemorizationOverTime`: the :class:`~lightning_pspc.evaluation.Memorization` member
  whose records also hold the training images seen, charted over training time (Bonnaire et al.
  2025).

All are :class:`~lightning_pspc.evaluation.EvaluationMember` s: under DDP every process
evaluates its share and the metrics (:mod:`lightning_pspc.metrics`) reduce across processes.
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

from ..denoisers import GaussianDenoiser
from ..metrics import LinearityScore, NormalizedMSE, RSquared, SampleAgreement
from ..metrics.functional import check_alpha, paired_pearson_correlation
from ..types import Denoiser
from .engine import build_references, check_reference_names, denoise_batched, sample_batched
from .pipeline import Evaluation, EvaluationMember, Memorization, MemorizationResult
from .plots_generalization import (
    agreement_figure,
    memorized_vs_images_figure,
    per_sigma_figure,
    per_sigma_heatmap,
)


# --- linearity, Gaussian fit, R^2 ------------------------------------------------------------
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
        gaussian = ev.references.get("gaussian")
        if gaussian is None:
            gaussian = GaussianDenoiser(data.reference.to(ev.device)).to(ev.device)
        self.gaussian: nn.Module = gaussian
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

    def figures(
        self, result: GeneralizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        """Measures against sigma (one line per evaluation); over time the epoch x sigma maps."""
        history = list(history) or [(0, result.record())]
        figs = {"generalization/vs_sigma": per_sigma_figure(self.evaluation.sigmas, history)}
        if over_time:
            figs["generalization/heatmap"] = per_sigma_heatmap(self.evaluation.sigmas, history)
        return figs


# --- agreement of samples --------------------------------------------------------------------
@dataclass
class AgreementResult:
    """Per reference, summaries of the per-pair MSE, cosine and Pearson r (``stats[ref]``), the
    per-pair Pearson r of this process (``pearson[ref] [M_local]``) and the samples
    (``network [M_local, C, H, W]``, ``samples[ref]``)."""

    stats: dict[str, dict[str, float]]
    pearson: dict[str, Tensor]
    network: Tensor
    samples: dict[str, Tensor]
    num_samples: int

    def scalars(self, prefix: str = "agreement") -> dict[str, float]:
        """``{prefix}/{reference}/{pearson,mse,cosine}_{mean,median,q25,q75}``."""
        return {
            f"{prefix}/{ref}/{k}": v
            for ref, stats in self.stats.items()
            for k, v in stats.items()
            if math.isfinite(v)
        }

    def to_json(self) -> dict[str, Any]:
        """``{"agreement": {ref: {"pearson": {"median", "q25", "q75", "mean"}, "mse": {...},
        "cosine": {...}}, "num_samples": M}}``."""
        nested: dict[str, Any] = {}
        for ref, stats in self.stats.items():
            nested[ref] = {}
            for key, value in stats.items():
                measure, summary = key.rsplit("_", 1)
                nested[ref].setdefault(measure, {})[summary] = value
        return {"agreement": nested | {"num_samples": self.num_samples}}


class Agreement(EvaluationMember):
    """Samples of the network and of closed-form denoisers from the same ``num_samples`` fixed
    noise images, with the same Heun sampler (``num_steps`` steps); per reference the median,
    quartiles and mean of the per-pair Pearson r, MSE and cosine similarity
    (:class:`~lightning_pspc.metrics.SampleAgreement`).

    With a :class:`~lightning_pspc.evaluation.Memorization` member before it in the evaluation
    (``num_samples`` at least this one's, the same ``num_steps``), the noise is the first
    ``num_samples`` of the memorization noise and the network's samples are the memorization's
    own, so the network costs nothing more; otherwise the noise comes from the evaluation's
    ``agreement_noise`` seed. The closed-form samples do not change between evaluations and are
    computed once (PSPC runs at each of the ``2 * num_steps - 1`` sampler calls: 0.4 s / 3.7 s
    for 4 / 8 samples of 18 steps at N = 1,024 on 2 idle CPU cores, 1.5 s for 4 at N = 4,096;
    ``benchmarks/generalization.py``).
    """

    name = "agreement"

    def __init__(
        self,
        references: Sequence[str] = ("empirical", "pspc"),
        num_samples: int = 8,
        num_steps: int = 18,
        grid_size: int = 8,
    ) -> None:
        self.names = check_reference_names(references)
        if min(num_samples, num_steps, grid_size) < 1:
            raise ValueError(
                f"agreement num_samples={num_samples}, num_steps={num_steps} and "
                f"grid_size={grid_size} must be >= 1"
            )
        self.num_samples, self.num_steps, self.grid_size = num_samples, num_steps, grid_size

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        missing = [n for n in self.names if n not in evaluation.references]
        built = (
            build_references(missing, evaluation.data.reference, evaluation.device)
            if missing
            else {}
        )
        self.references = {n: evaluation.references.get(n, built.get(n)) for n in self.names}
        memo = evaluation.members.get(Memorization.name)  # members set up before this one
        self.memorization: Memorization | None = None
        if (
            isinstance(memo, Memorization)
            and memo.num_samples >= self.num_samples
            and memo.num_steps == self.num_steps
        ):
            # this process's memorization seeds whose global index is among the first M
            index = torch.arange(memo.num_samples)[evaluation.rank :: evaluation.world_size]
            self.take = (index < self.num_samples).to(memo.noise.device)
            self.memorization, self.noise = memo, memo.noise[self.take]
        else:
            self.noise = evaluation.noise(self.num_samples, evaluation.seeds.agreement_noise)
        self._samples: dict[str, Tensor] = {}

    def work(self) -> int:
        network = 0 if self.memorization is not None else 1
        return self.noise.shape[0] * (network + (0 if self._samples else len(self.references)))

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> AgreementResult:
        batch = self.evaluation.batch_size
        if not self._samples:
            for name, ref in self.references.items():
                self._samples[name] = sample_batched(ref, self.noise, self.num_steps, batch, bar)
        last = getattr(self.memorization, "last", None)
        if last is not None and last[0] is network:  # the memorization member just sampled it
            net = last[1][self.take]
        else:
            net = sample_batched(network, self.noise, self.num_steps, batch, bar)
        stats, pearson = {}, {}
        for name, samples in self._samples.items():
            metric = SampleAgreement().to(net.device)
            metric.update(net, samples)
            stats[name] = {k: float(v) for k, v in metric.compute().items()}
            pearson[name] = paired_pearson_correlation(net, samples)
        return AgreementResult(stats, pearson, net, dict(self._samples), self.num_samples)

    def record(self, result: AgreementResult) -> dict[str, Any]:
        return result.to_json()["agreement"]

    def figures(
        self, result: AgreementResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        k = min(self.grid_size, result.network.shape[0])
        if not k:
            return {}
        refs = {n: s[:k] for n, s in result.samples.items()}
        pearson = {n: p[:k] for n, p in result.pearson.items()}
        return {"agreement/grid": agreement_figure(result.network[:k], refs, pearson)}


# --- memorization over training time ---------------------------------------------------------
class MemorizationOverTime(Memorization):
    """:class:`~lightning_pspc.evaluation.Memorization` whose records also hold
    ``images_seen`` (set :attr:`images_seen` before each evaluation) and whose charts, over
    time, add the memorized fraction against training images seen (Bonnaire et al. 2025)."""

    images_seen: int = 0

    def record(self, result: MemorizationResult) -> dict[str, Any]:
        return {**result.to_json(), "images_seen": int(self.images_seen)}

    def figures(
        self, result: MemorizationResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        figs = super().figures(result, history, over_time)
        records = [r for _, r in history if r.get("images_seen") is not None]
        if over_time and records:
            figs["memorized_vs_images"] = memorized_vs_images_figure(records)
        return figs
