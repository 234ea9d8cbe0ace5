"""lightning_pspc: train diffusion denoisers and compare them with closed-form denoisers.

Every denoiser in the project, trained or closed-form, has the one call
``D(z: Tensor[B, C, H, W], sigma: Tensor[B]) -> Tensor[B, C, H, W]`` (EDM conventions,
images in [-1, 1], ``z = x + sigma * eps``).
"""

from . import _legacy

__version__ = "0.1.0"

_legacy.install()  # old module paths (moved modules) stay importable
