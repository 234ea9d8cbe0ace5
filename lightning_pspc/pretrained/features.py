"""Feature spaces for sample similarity: a TorchScript file (SSCD's released models) or a timm model.

Zhang et al. (2023) and Niedoba et al. (2025, fig. 9) measure the similarity of samples in the
space of SSCD, a copy-detection network (Pizzi et al. 2022), whose released models are TorchScript
files. :class:`FeatureExtractor` maps images in the project's convention (``[B, C, H, W]`` in
[-1, 1]) to descriptors ``[B, D]``; the preprocessing is:

1. ``x -> (x + 1) / 2``, clamped to [0, 1];
2. grey (``C = 1``) to RGB by repeating the channel;
3. bilinear resize (antialiased) to ``size x size``: TorchScript default 288 (SSCD's
   ``small_288`` evaluation size), timm default the model's own input size;
4. normalisation ``(x - mean) / std`` per channel: TorchScript default ImageNet's mean
   (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) as SSCD uses, timm the model's own.

Similarities are plain cosines of the descriptors (SSCD's are meant for that).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import PretrainedError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SSCD's evaluation resize (its README's ``small_288`` transform)
TORCHSCRIPT_SIZE = 288


class FeatureExtractor(nn.Module):
    """Images ``[B, C, H, W]`` in [-1, 1] (``C`` 1 or 3) -> descriptors ``[B, D]`` float32.

    Args:
        model: ``model(x [B, 3, size, size]) -> [B, D]`` (or ``[B, D, ...]``, flattened).
        size: side of the square input the model takes.
        mean, std: per-channel normalisation of the [0, 1] RGB input.
        name: the ``--features`` spec, for messages.
    """

    def __init__(
        self,
        model: nn.Module,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "features",
    ) -> None:
        super().__init__()
        self.model, self.size, self.name = model, int(size), name
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` in [-1, 1] -> normalised RGB ``[B, 3, size, size]``."""
        x = ((images.float() + 1) / 2).clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Descriptors ``[B, D]`` of ``images [B, C, H, W]``."""
        return self.model(self.preprocess(images)).float().flatten(1)

    @torch.no_grad()
    def embed(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Descriptors ``[N, D]`` of ``images [N, C, H, W]``, ``batch_size`` at a time, on the
        extractor's device."""
        device = self.mean.device
        parts = [
            self(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)
        ]
        return torch.cat(parts) if parts else images.new_zeros((0, 0))


def load_features(spec: str, size: int = 0, device: torch.device | str = "cpu") -> FeatureExtractor:
    """``--features``: a TorchScript file, or ``timm:<model name>:<local weights file>``.

    ``size`` > 0 replaces the default input side (288 for TorchScript, the model's own for timm).
    The extractor is checked on one image; every failure is one :class:`PretrainedError`.
    """
    if size < 0:
        raise PretrainedError(f"--features-size {size} must be >= 0 (0: the model's default)")
    if spec.startswith("timm:"):
        extractor = _load_timm(spec, size)
    else:
        extractor = _load_torchscript(spec, size)
    extractor = extractor.to(device).eval()
    try:
        out = extractor(torch.zeros(1, 3, 8, 8, device=device))
    except Exception as err:  # any model error: one message
        raise PretrainedError(
            f"--features {spec}: the model fails on a [1, 3, {extractor.size}, "
            f"{extractor.size}] image ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "set --features-size to the input size it takes"
        ) from None
    if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 1:
        raise PretrainedError(f"--features {spec}: the model returns {list(out.shape)}, not [B, D]")
    return extractor


def _load_torchscript(spec: str, size: int) -> FeatureExtractor:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainedError(
            f"--features {spec}: no such file. Fix: pass a TorchScript file (e.g. SSCD's "
            "sscd_disc_mixup.torchscript.pt) or timm:<model name>:<weights file>"
        )
    try:
        with warnings.catch_warnings():  # deprecated for new models; SSCD's files are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedError(
            f"--features {spec} is not a TorchScript file ({reason}); save the model with "
            "torch.jit.script(model).save(path) or use timm:<model name>:<weights file>"
        ) from None
    return FeatureExtractor(model, size or TORCHSCRIPT_SIZE, name=spec)


def _load_timm(spec: str, size: int) -> FeatureExtractor:
    import timm
    from timm.data import resolve_data_config

    name, _, weights = spec[len("timm:") :].partition(":")
    if not name or not weights:
        raise PretrainedError(
            f"--features {spec}: use timm:<model name>:<local weights file> (e.g. "
            "timm:resnet50:/models/resnet50.safetensors)"
        )
    if not Path(weights).expanduser().is_file():
        raise PretrainedError(f"--features {spec}: weights file {weights!r} does not exist")
    try:
        model = timm.create_model(
            name,
            pretrained=True,
            num_classes=0,  # pooled features, no classifier
            pretrained_cfg_overlay={"file": str(Path(weights).expanduser())},
        )
    except Exception as err:  # unknown model, weights of another model: one message
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedError(f"--features {spec}: cannot build it ({reason})") from None
    config = resolve_data_config({}, model=model)
    side = size or int(config["input_size"][-1])
    return FeatureExtractor(model, side, config["mean"], config["std"], name=spec)
