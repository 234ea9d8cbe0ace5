"""The reference denoisers by name: what an evaluation compares a network with.

A name is used in configs (``references: [empirical, pspc, gaussian]``), metric keys and file
names. Each entry builds the denoiser from the training set ``[N, C, H, W]`` as the network sees
it (``ImageDataModule.reference_images()``). ``empirical``, ``gaussian`` and ``wiener_locality``
depend on the training set alone; ``pspc``, ``ls`` and ``els`` take the window sides that fit the
network being evaluated (its calibration), ``pspc_flex`` and ``pspc_flex_soft`` its heatmaps,
``linear_distilled`` its linear distillation: the evaluation refreshes them with the network
(:mod:`.network_fitted`, :mod:`.linear_distilled`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .empirical import EmpiricalDenoiser
from .gaussian import GaussianDenoiser
from .linear_distilled import LinearDistilledReference
from .network_fitted import CalibratedReference, NetworkFlexReference
from .wiener import WienerLocalityDenoiser

#: Reference denoisers by the name used in configs, metric keys and files.
REFERENCE_DENOISERS: dict[str, Callable[[Tensor], nn.Module]] = {
    "empirical": EmpiricalDenoiser,
    "pspc": lambda images: CalibratedReference(images, "pspc"),
    "gaussian": GaussianDenoiser,
    "pspc_flex": lambda images: NetworkFlexReference(images, soft=False),
    "pspc_flex_soft": lambda images: NetworkFlexReference(images, soft=True),
    "ls": lambda images: CalibratedReference(images, "ls"),
    "els": lambda images: CalibratedReference(images, "els"),
    "wiener_locality": WienerLocalityDenoiser,
    "linear_distilled": LinearDistilledReference,
}


def check_reference_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate reference denoiser names (:data:`REFERENCE_DENOISERS`); no duplicates."""
    names = tuple(names)
    unknown = [n for n in names if n not in REFERENCE_DENOISERS]
    if unknown or len(set(names)) != len(names) or not names:
        what = f"unknown reference(s) {unknown}; " if unknown else ""
        raise ValueError(
            f"references={list(names)}: {what}use a non-empty list without duplicates of "
            f"{sorted(REFERENCE_DENOISERS)}"
        )
    return names


def build_references(
    names: Sequence[str], images: Tensor, device: torch.device | str = "cpu"
) -> dict[str, nn.Module]:
    """The named reference denoisers of the training set ``images [N, C, H, W]``, on ``device``.

    Pass the training set as the network sees it (``ImageDataModule.reference_images()``).
    Until an evaluation refreshes them, ``pspc`` uses the default patch-size schedule for the
    image size and ``ls`` / ``els`` their default window sides.
    """
    images = images.to(device)
    return {n: REFERENCE_DENOISERS[n](images).to(device) for n in check_reference_names(names)}
