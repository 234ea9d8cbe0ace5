"""The members of an evaluation, one kind of measurement each
(:class:`~lightning_pspc.evaluation.pipeline.EvaluationMember`).

* :class:`Comparison`: MSE of the network to every reference per sigma, on training, held-out
  and reverse probes (Niedoba et al. 2025, figs. 2 and 7);
* :class:`Memorization` / :class:`MemorizationOverTime`: memorized fraction and nearest training
  images of samples from fixed noise (Gu et al. 2023; Bonnaire et al. 2025);
* :class:`Panel`: one image denoised by the network and every reference (Niedoba et al., fig. 1);
* :class:`Generalization`: linearity, normalised MSE to the Gaussian denoiser and R^2 per sigma
  (Li et al. 2024; Lukoianov et al. 2025);
* :class:`Agreement`: the network's and closed forms' samples from the same noise (Kamb &
  Ganguli 2024);
* :class:`Locality`: sensitivity and best-fit patch sizes (Niedoba et al. 2024; Kamb & Ganguli);
* :class:`LinearDistillation`: the network's closed-form linear distillation against the
  Gaussian denoiser and the network (Li et al. 2024).
"""

from .agreement import Agreement, AgreementOptions, AgreementResult
from .comparison import (
    Comparison,
    ComparisonOptions,
    ComparisonResult,
    DenoiserComparer,
    distance_table,
)
from .generalization import Generalization, GeneralizationOptions, GeneralizationResult
from .linear_distillation import (
    LinearDistillation,
    LinearDistillationOptions,
    LinearDistillationResult,
)
from .memorization import (
    Memorization,
    MemorizationOptions,
    MemorizationOverTime,
    MemorizationResult,
    memorization_stats,
    nearest_training_images,
)
from .panel import DenoiserPanel, Panel, PanelOptions, PanelResult
from .patch_sizes import DEFAULT_FRACTIONS, Locality, LocalityOptions, LocalityResult

__all__ = [
    "DEFAULT_FRACTIONS",
    "Agreement",
    "AgreementOptions",
    "AgreementResult",
    "Comparison",
    "ComparisonOptions",
    "ComparisonResult",
    "DenoiserComparer",
    "DenoiserPanel",
    "Generalization",
    "GeneralizationOptions",
    "GeneralizationResult",
    "LinearDistillation",
    "LinearDistillationOptions",
    "LinearDistillationResult",
    "Locality",
    "LocalityOptions",
    "LocalityResult",
    "Memorization",
    "MemorizationOptions",
    "MemorizationOverTime",
    "MemorizationResult",
    "Panel",
    "PanelOptions",
    "PanelResult",
    "distance_table",
    "memorization_stats",
    "nearest_training_images",
]
