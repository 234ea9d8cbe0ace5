"""Twin models: similarity of their samples and reproducibility (Kadkhodaie et al.; Zhang et al.)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from .functional import (
    DEFAULT_CHUNK_SIZE,
    cat_state,
    check_chunk_size,
    check_train_images,
    summary_statistics,
    twin_similarities,
)

# Cosine on images centred on the training mean; why 0.95: see TwinSimilarity.
REPRODUCIBILITY_THRESHOLD = 0.95


class TwinSimilarity(Metric):
    """Cosine similarities of twin models' samples, and Zhang et al.'s reproducibility.

    Kadkhodaie et al. (2024): two models of one preset trained on the disjoint halves ``train_a``,
    ``train_b`` of a ``2N`` subset (``ImageDataModule(subset="a" | "b")``), sampled from the same
    initial noise with the deterministic sampler. All cosines use images centred on the training
    mean ``mean`` (default: the mean of both halves, the ``2N`` set, one reference for both twins
    so the twin cosine is symmetric), so backgrounds do not dominate. Generalization: the twins
    agree more with each other than with their own training sets.

    Args:
        train_a, train_b: ``[Na, C, H, W]``, ``[Nb, C, H, W]`` the twins' training sets. Kept as
            plain attributes where you put them (never synced, broadcast or checkpointed).
        threshold: a twin pair is reproducible when its centred cosine is above it. Default
            :data:`REPRODUCIBILITY_THRESHOLD` = 0.95. Zhang et al.'s 0.6 lives in SSCD
            (copy-detection) space and means "the same image"; in centred pixel space distinct
            images reach far higher cosines (on Fashion-MNIST: docs/reference.md section 3b.7).
            So 0.95 (a centred relative L2 difference of about 0.32 at equal norms) rarely calls
            two distinct images the same, where 0.9 or 0.6 would. It is data-dependent: recheck
            it for another data set.
        mean: optional ``[C, H, W]`` centring image.
        chunk_size: training images compared at once.

    ``update(samples_a, samples_b)``: ``[M, C, H, W]`` samples of twin a and twin b, row ``i``
    of both from the same noise. ``compute()`` -> dict of float64 scalars:
    ``twin_cos_{mean, median, q25, q75}`` (between twins' samples), ``train_cos_{mean, median,
    q25, q75}`` (each sample, of both twins, to the most similar image of its own training set),
    ``reproducibility`` (fraction of twin pairs with cosine > threshold) and
    ``train_copy_fraction`` (fraction of samples whose most similar training image is above the
    same threshold). NaN before any update.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    twin_cos: list[Tensor]
    train_cos_a: list[Tensor]
    train_cos_b: list[Tensor]

    def __init__(
        self,
        train_a: Tensor,
        train_b: Tensor,
        threshold: float = REPRODUCIBILITY_THRESHOLD,
        mean: Tensor | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not -1 <= threshold < 1:
            raise ValueError(f"threshold must be a cosine in [-1, 1), got {threshold}")
        check_chunk_size(chunk_size)
        self.train_a = check_train_images(train_a)
        self.train_b = check_train_images(train_b)
        if self.train_a.shape[1:] != self.train_b.shape[1:]:
            raise ValueError(
                f"twin training sets hold images of different shapes {tuple(train_a.shape)} and "
                f"{tuple(train_b.shape)}; pass the two halves of one data set"
            )
        if mean is None:
            total = self.train_a.double().sum(0) + self.train_b.double().sum(0).to(train_a.device)
            mean = total / (self.train_a.shape[0] + self.train_b.shape[0])
        self.center = mean.detach().double()  # [C, H, W]
        self.threshold, self.chunk_size = float(threshold), chunk_size
        for name in ("twin_cos", "train_cos_a", "train_cos_b"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, samples_a: Tensor, samples_b: Tensor) -> None:
        """Record the centred cosines of twin samples ``samples_a, samples_b [M, C, H, W]``."""
        twin, near_a, near_b = twin_similarities(
            samples_a, samples_b, self.train_a, self.train_b, self.center, self.chunk_size
        )
        self.twin_cos.append(twin.to(self.device))
        self.train_cos_a.append(near_a.to(self.device))
        self.train_cos_b.append(near_b.to(self.device))

    def compute(self) -> dict[str, Tensor]:
        """Summary of the twin and nearest-training cosines, reproducibility, copy fraction."""
        twin = cat_state(self.twin_cos, self.device)
        train = torch.cat(
            [cat_state(self.train_cos_a, self.device), cat_state(self.train_cos_b, self.device)]
        )
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
        return {
            **summary_statistics(twin, "twin_cos"),
            **summary_statistics(train, "train_cos"),
            "reproducibility": (twin > self.threshold).double().mean() if twin.numel() else nan,
            "train_copy_fraction": (train > self.threshold).double().mean()
            if train.numel()
            else nan,
        }
