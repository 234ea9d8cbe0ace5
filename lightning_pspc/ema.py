"""Exponential moving average of network weights with EDM's half-life-in-images rule.

Why not Lightning's ``WeightAveraging`` callback: its averaging function sees the number of
averaged steps, not the images each step trained on (batch sizes vary: the last batch of an
epoch, the number of DDP processes), so it cannot express a half-life in images capped at a
fraction of the images seen (EDM's ``ema_halflife_kimg`` with ``ema_rampup_ratio``). It also
keeps the average inside the callback and swaps it into the module only around validation,
whereas here the EMA network is the module's ``denoiser`` at all times: the evaluation callbacks,
samplers and ``eval.py`` (through the checkpoint's state dict) all use it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(
    batch_images: int,
    images_seen: int,
    halflife_images: float,
    rampup_ratio: float | None = None,
) -> float:
    """EMA decay for one optimizer step of ``batch_images`` images (Karras et al. 2022, app. F.3).

    ``beta = 0.5 ** (batch_images / max(h, 1e-8))`` so the average halves its weight every ``h``
    training images whatever the batch size; with ``rampup_ratio`` the half-life is capped at
    ``rampup_ratio * images_seen`` early in training (EDM's ``ema_rampup_ratio``, 0.05).
    """
    halflife = float(halflife_images)
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch_images / max(halflife, 1e-8))


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (``requires_grad=False``, eval mode) to hold the EMA."""
    return copy.deepcopy(module).requires_grad_(False).eval()


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * module`` for parameters; buffers are copied."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in module.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"EMA has {len(ema_params)} parameters, the network {len(params)}")
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), module.buffers()):
        b_ema.copy_(b)
