"""Shared contract and input checks of the closed-form denoisers."""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ..diffusion.preconditioning import batch_sigma

#: Elements (of the largest float64 temporary) processed at once; bounds memory, not N or B.
DEFAULT_CHUNK_ELEMENTS = 2**22


def check_images(images: Tensor, name: str = "images") -> Tensor:
    """Validates a training set ``[N, C, H, W]`` of finite floats; returns it as float32."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape [N, C, H, W] with N >= 1, got {tuple(images.shape)}; "
            "pass e.g. ImageDataModule.reference_images()"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor in [-1, 1], got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 127.5 - 1"
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return images.float()


class ClosedFormDenoiser(nn.Module, abc.ABC):
    """A training-free denoiser ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]`` (EDM conventions).

    Subclasses implement :meth:`_denoise` on float64 inputs. The public call checks shapes,
    accepts a scalar or per-element ``sigma``, disables autocast (results never depend on the
    caller's AMP/TF32 settings) and returns float32 (float64 for float64 inputs).
    """

    def __init__(self, images: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
        super().__init__()
        images = check_images(images)
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.image_shape: tuple[int, int, int] = tuple(images.shape[1:])  # type: ignore[assignment]
        self.num_images = images.shape[0]
        self.chunk_elements = int(chunk_elements)

    @property
    def device(self) -> torch.device:
        """Device of the denoiser's reference data (move it with ``.to(device)``)."""
        return next(self.buffers()).device

    def _check_inputs(self, z: Tensor, sigma: Tensor | float) -> Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} expects z of shape [B, {', '.join(map(str, self.image_shape))}]"
                f" (the shape of its training images), got {tuple(z.shape)}"
            )
        if z.device != self.device:
            raise ValueError(
                f"z is on {z.device} but {type(self).__name__}'s data is on {self.device}; "
                f"call denoiser.to({str(z.device)!r})"
            )
        sigma = batch_sigma(sigma, z.shape[0], z.device)
        # one pass over the batch, small next to any denoiser's pass over its N training images
        if not torch.isfinite(z).all():
            bad = (~torch.isfinite(z)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(
                f"z contains NaN or inf values (in batch elements {bad[:8]}); the denoiser "
                f"needs finite inputs: check what produced z (e.g. a diverged sampler step)"
            )
        sigma = sigma.to(torch.float64)
        if not (torch.isfinite(sigma).all() and (sigma > 0).all()):
            raise ValueError(f"sigma must be finite and > 0, got {sigma.tolist()[:8]}")
        return sigma

    def forward(self, z: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoises ``z [B,C,H,W]`` at noise levels ``sigma [B]`` (or a scalar)."""
        sigma = self._check_inputs(z, sigma)
        out_dtype = torch.promote_types(z.dtype, torch.float32)
        if z.shape[0] == 0:
            return z.to(out_dtype)
        with torch.autocast(z.device.type, enabled=False), torch.no_grad():
            out = self._denoise(z.detach().to(torch.float64), sigma)
        return out.to(out_dtype)

    @abc.abstractmethod
    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        """``z [B,C,H,W]`` float64, ``sigma [B]`` float64 -> ``[B,C,H,W]`` float64."""
