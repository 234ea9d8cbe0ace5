"""The shared input checks of every closed-form denoiser: non-finite z, sigma shapes."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, GaussianDenoiser, PSPCSquareDenoiser

DENOISERS = [EmpiricalDenoiser, GaussianDenoiser, PSPCSquareDenoiser]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("cls", DENOISERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_z_is_a_clear_error(cls, bad, images):
    d = cls(images)
    z = torch.randn(4, 1, 6, 6)
    z[2, 0, 3, 1] = bad
    with pytest.raises(
        ValueError, match=r"z contains NaN or inf values \(in batch elements \[2\]\)"
    ):
        d(z, torch.ones(4))


@pytest.mark.parametrize("cls", DENOISERS)
def test_sigma_must_be_a_scalar_or_one_per_image(cls, images):
    d = cls(images)
    z = torch.randn(4, 1, 6, 6)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    expected = d(z, sigma)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[4\].*got shape \[2, 2\]"):
        d(z, sigma.view(2, 2))  # was flattened silently
    with pytest.raises(ValueError, match=r"got shape \[4, 1\]"):
        d(z, sigma.view(4, 1))
    torch.testing.assert_close(d(z, sigma.tolist()), expected)
    # a scalar (or a single value) is every image's noise level
    one = d(z, torch.full((4,), 0.5))
    for scalar in (0.5, torch.tensor(0.5), torch.tensor([0.5])):
        torch.testing.assert_close(d(z, scalar), one)
