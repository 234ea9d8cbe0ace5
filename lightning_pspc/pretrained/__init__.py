"""Networks trained elsewhere as denoisers, and feature spaces for comparing samples.

:func:`load_denoiser` turns a ``train.py`` checkpoint, a diffusers ``UNet2DModel`` folder or hub
id, an EDM network pickle or a factory into the project's one call ``D(z [B,C,H,W], sigma [B])``
(docs/pretrained.md); :func:`load_features` loads the feature extractor of ``eval.py
--features``.
"""

from .diffusers_vp import DiscreteVPDenoiser, load_diffusers
from .edm import EDMPickleDenoiser, load_edm
from .errors import PretrainedError
from .features import FeatureExtractor, load_features
from .load import load_denoiser, sigma_range

__all__ = [
    "DiscreteVPDenoiser",
    "EDMPickleDenoiser",
    "FeatureExtractor",
    "PretrainedError",
    "load_denoiser",
    "load_diffusers",
    "load_edm",
    "load_features",
    "sigma_range",
]
