import contextlib

import pytest
import torch

from lightning_pspc.data import IDXSource


@pytest.fixture(scope="session")
def fmnist() -> torch.Tensor:
    """First 400 Fashion-MNIST training images, [400, 1, 28, 28] in [-1, 1]."""
    return IDXSource().load()[:400].float() / 127.5 - 1


@pytest.fixture(scope="session")
def rgb_small() -> torch.Tensor:
    """A small RGB data set [40, 3, 12, 12] in [-1, 1] (smooth random images)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)


def empirical_reference(z: torch.Tensor, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The definition, in float64 with exact differences: softmax(-||z - x_i||^2 / 2 s^2)."""
    zf, xf = z.double().flatten(1), images.double().flatten(1)
    d = (zf[:, None] - xf[None]).square().sum(-1)
    w = torch.softmax(-d / (2 * sigma.double().view(-1, 1) ** 2), dim=1)
    return (w @ xf).view(z.shape)


def noisy(images: torch.Tensor, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(images.shape, generator=g)
    return images + sigma.view(-1, 1, 1, 1).float() * eps


@contextlib.contextmanager
def reduced_precision():
    """The settings training uses: bf16 autocast and reduced-precision float32 matmuls."""
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        torch.set_float32_matmul_precision(before)
