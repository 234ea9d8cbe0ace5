"""Raw denoising networks ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]`` wrapped by ``EDMPrecond``."""

from .dit import DIT_CONFIGS, DiT, dit_from_name
from .embedding import FourierEmbedding, NoiseEmbedding, PositionalEmbedding
from .unet import UNet

__all__ = [
    "DIT_CONFIGS",
    "DiT",
    "FourierEmbedding",
    "NoiseEmbedding",
    "PositionalEmbedding",
    "UNet",
    "dit_from_name",
]
