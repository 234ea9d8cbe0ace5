"""Agreement of samples: the network's and closed forms' from the same noise (Kamb & Ganguli
2024).

:class:`Agreement` samples the network and closed-form denoisers from the same fixed noise with
the same Heun sampler and compares them pair by pair (Pearson r, MSE, cosine; Niedoba et al. 2025,
fig. 9; docs/reference.md section 3b.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from ...denoisers.registry import check_reference_names
from ...metrics import FeatureCosine, SampleAgreement
from ...metrics.functional import paired_pearson_correlation
from ...types import Denoiser
from ..batching import sample_batched
from ..options import OptionGroup, option
from ..pipeline import Evaluation, EvaluationMember
from ..plots.generalization_charts import agreement_figure
from .memorization import Memorization


@dataclass
class AgreementResult:
    """Per reference, summaries of the per-pair MSE, cosine and Pearson r (``stats[ref]``; with a
    feature extractor also the cosine of the pairs' features, ``feature_cosine_*``), the
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
        "cosine": {...}[, "feature_cosine": {...}]}, "num_samples": M}}``."""
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
    (:class:`~lightning_pspc.metrics.SampleAgreement`) and, when the evaluation has a feature
    extractor (``eval.py --features``), of the cosine of the pairs' features
    (:class:`~lightning_pspc.metrics.FeatureCosine`).

    With a :class:`~lightning_pspc.evaluation.Memorization` member before it in the evaluation
    (``num_samples`` at least this one's, the same ``num_steps``), the noise is the first
    ``num_samples`` of the memorization noise and the network's samples are the memorization's
    own, so the network costs nothing more; otherwise the noise comes from the evaluation's
    ``agreement_noise`` seed. The closed-form samples do not change between evaluations and are
    computed once (each closed form runs at each of the ``2 * num_steps - 1`` sampler calls;
    timings: ``benchmarks/generalization.py``, docs/benchmarks.md).
    """

    name = "agreement"
    uses_references = True

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
        # references only this member uses are built by the evaluation too, so that they are
        # refreshed and calibrated as every other reference of it
        self.references = {n: evaluation.reference(n) for n in self.names}
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

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> AgreementResult:
        batch, steps = self.evaluation.batch_size, self.num_steps
        schedule = self.evaluation.sampler_sigmas(steps)
        for name, ref in self.references.items():
            if name not in self._samples:
                self._samples[name] = sample_batched(ref, self.noise, steps, batch, bar, schedule)
        last = getattr(self.memorization, "last", None)
        if last is not None and last[0] is network:  # the memorization member just sampled it
            net = last[1][self.take]
        else:
            net = sample_batched(network, self.noise, steps, batch, bar, schedule)
        stats, pearson = {}, {}
        features = self.evaluation.features
        for name, samples in self._samples.items():
            metric = SampleAgreement().to(net.device)
            metric.update(net, samples)
            stats[name] = {k: float(v) for k, v in metric.compute().items()}
            pearson[name] = paired_pearson_correlation(net, samples)
            if features is not None:
                cosine = FeatureCosine().to(net.device)
                cosine.update(features.embed(net, batch), features.embed(samples, batch))
                stats[name] |= {k: float(v) for k, v in cosine.compute().items()}
        return AgreementResult(stats, pearson, net, dict(self._samples), self.num_samples)

    def references_changed(self, names: Sequence[str]) -> None:
        for name in names:
            self._samples.pop(name, None)

    def work(self) -> int:
        network = 0 if self.memorization is not None else 1
        fresh = sum(n not in self._samples for n in self.references)
        return self.noise.shape[0] * (network + fresh)

    def record(self, result: AgreementResult) -> dict[str, Any]:
        return result.to_json()["agreement"]

    def report(self, result: AgreementResult) -> dict[str, Any]:
        return result.to_json()

    def figures(
        self, result: AgreementResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        k = min(self.grid_size, result.network.shape[0])
        if not k:
            return {}
        refs = {n: s[:k] for n, s in result.samples.items()}
        pearson = {n: p[:k] for n, p in result.pearson.items()}
        return {"agreement/grid": agreement_figure(result.network[:k], refs, pearson)}


@dataclass
class AgreementOptions(OptionGroup):
    """``eval.py`` options of the :class:`Agreement` member."""

    key = "agreement"
    num_agreement_samples: int = option(
        8,
        "samples from the same noise by network and closed-form denoisers (0: off; the "
        "closed-form samples take seconds on CPU, once per checkpoint)",
    )
    agreement_references: tuple[str, ...] = option(
        ("empirical", "pspc"),
        "closed-form denoisers the network's samples are compared with (linear_distilled is "
        "added when --linear-distillation is on)",
    )

    def check(self) -> None:
        if self.num_agreement_samples < 0:
            raise ValueError(
                f"--num-agreement-samples {self.num_agreement_samples} must be >= 0 (0 leaves "
                "the measure out)"
            )
        if self.num_agreement_samples:
            check_reference_names(self.agreement_references)

    def build(self, settings: Any) -> list[EvaluationMember]:
        if not self.num_agreement_samples:
            return []
        steps = settings.evaluation.num_steps
        references = self.agreement_references
        if getattr(settings, "linear_distillation", "off") == "on":  # the linear map's samples
            references = tuple(dict.fromkeys((*references, "linear_distilled")))
        return [Agreement(references, self.num_agreement_samples, steps)]
