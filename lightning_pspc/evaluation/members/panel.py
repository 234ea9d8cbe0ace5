"""One image denoised at a few sigmas by the network and every reference (Niedoba et al., fig. 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...types import Denoiser
from ..options import OptionGroup
from ..pipeline import Evaluation, EvaluationMember
from ..plots.comparison_charts import panel_figure
from ..probes import ProbeSet, forward_probes


@dataclass
class DenoiserPanel:
    """One clean image at a few sigmas, denoised by the network and each reference (PSPC fig. 1).

    ``panel(network)`` returns ``{"noisy": [K,C,H,W], "network": ..., <reference>: ...}``; the
    references' outputs are computed on the first call and cached.
    """

    references: Mapping[str, nn.Module]
    probes: ProbeSet
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        references: Mapping[str, nn.Module],
        image: Tensor,
        sigmas: Tensor,
        num_sigmas: int = 6,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> DenoiserPanel:
        """Panel of ``image [C, H, W]`` at ``num_sigmas`` grid sigmas spread over ``sigmas [S]``."""
        pick = torch.linspace(0, sigmas.numel() - 1, min(num_sigmas, sigmas.numel())).round().long()
        probes = forward_probes(image.unsqueeze(0), sigmas[pick.unique()], 1, seed)
        return cls(references, probes.to(device))

    @torch.no_grad()
    def __call__(self, network: Denoiser) -> dict[str, Tensor]:
        z, sigma = self.probes.z, self.probes.sigma
        if not self._cache:
            self._cache = {n: r(z, sigma.to(z.dtype)).float() for n, r in self.references.items()}
        return {"noisy": z, "network": network(z, sigma.to(z.dtype)).float(), **self._cache}


@dataclass
class PanelResult:
    """``{"noisy": [K,C,H,W], "network": ..., <reference>: ...}`` at ``sigmas [K]``."""

    images: dict[str, Tensor]
    sigmas: Tensor

    def scalars(self, prefix: str = "panel") -> dict[str, float]:
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"sigmas": self.sigmas.tolist()}


class Panel(EvaluationMember):
    """One held-out image (a training image without held-out ones) at ``num_sigmas`` grid sigmas,
    denoised by the network and every reference (figure 1 of Niedoba et al.). No reduction
    across processes: build it on the process that draws."""

    name = "panel"
    uses_references = True

    def __init__(self, num_sigmas: int = 6) -> None:
        if num_sigmas < 1:
            raise ValueError(f"panel num_sigmas={num_sigmas} must be >= 1")
        self.num_sigmas = num_sigmas

    def setup(self, evaluation: Evaluation) -> None:
        super().setup(evaluation)
        data = evaluation.data
        image = data.heldout[0] if data.heldout.shape[0] else data.train[0]
        self.panel = DenoiserPanel.build(
            evaluation.references,
            image,
            evaluation.sigmas,
            self.num_sigmas,
            evaluation.seeds.panel,
            evaluation.device,
        )

    def references_changed(self, names: Sequence[str]) -> None:
        self.panel._cache.clear()

    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> PanelResult:
        return PanelResult(self.panel(network), self.panel.probes.sigma)

    def figures(
        self, result: PanelResult, history: Sequence[tuple[int, Any]], over_time: bool
    ) -> dict[str, Figure]:
        title = f"epoch {history[-1][0]}" if history else ""
        return {"panel": panel_figure(result.images, result.sigmas, title)}


@dataclass
class PanelOptions(OptionGroup):
    """``eval.py`` has a :class:`Panel` (no options)."""

    key = "panel"

    def build(self, settings: Any) -> list[EvaluationMember]:
        return [Panel()]
