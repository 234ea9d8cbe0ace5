"""lightning_pspc: train diffusion denoisers and compare them with closed-form denoisers.

Every denoiser in the project, trained or closed-form, has the one call
``D(z: Tensor[B, C, H, W], sigma: Tensor[B]) -> Tensor[B, C, H, W]`` (EDM conventions,
images in [-1, 1], ``z = x + sigma * eps``). :func:`load_denoiser` gives that call to networks
trained elsewhere (:mod:`lightning_pspc.pretrained`).
"""

from . import _legacy

__version__ = "0.1.0"

_legacy.install()  # old module paths (moved modules) stay importable


def __getattr__(name: str):
    if name == "load_denoiser":  # imported on first use: torch is not needed to import the package
        from .pretrained import load_denoiser

        return load_denoiser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
