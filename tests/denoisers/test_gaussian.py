import pytest
import torch

from lightning_pspc.denoisers import GaussianDenoiser
from lightning_pspc.diffusion import edm_sigmas

from .conftest import noisy

SIGMAS = edm_sigmas(18)


def dense_reference(z, sigma, images, rank=None):
    """mu + Sigma (Sigma + s^2 I)^-1 (z - mu), from the dense population covariance."""
    x = images.double().flatten(1)
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / x.shape[0]
    if rank is not None:
        lam, u = torch.linalg.eigh(cov)
        lam, u = lam.flip(0)[:rank], u.flip(1)[:, :rank]
        cov = u @ torch.diag(lam) @ u.T
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    out = []
    for zi, si in zip(z.double().flatten(1), sigma.double()):
        out.append(mu + cov @ torch.linalg.solve(cov + si**2 * eye, zi - mu))
    return torch.stack(out).view(z.shape)


@pytest.mark.parametrize("n", [30, 200])  # fewer and more images than dimensions (144)
def test_matches_dense_formula(rgb_small, n):
    images = rgb_small.repeat(5, 1, 1, 1)[:n] + 0.01 * torch.randn(n, 3, 12, 12)
    images = images[:, :1]  # 144 dims
    z = noisy(images[:18], SIGMAS)
    out = GaussianDenoiser(images)(z, SIGMAS)
    assert (out.double() - dense_reference(z, SIGMAS, images)).abs().max() < 1e-5


def test_rank_truncation_matches_dense_formula(fmnist):
    images = fmnist[:200, :, 8:20, 8:20]  # 144 dims
    z = noisy(fmnist[200:218, :, 8:20, 8:20], SIGMAS)
    out = GaussianDenoiser(images, rank=10)(z, SIGMAS)
    assert (out.double() - dense_reference(z, SIGMAS, images, rank=10)).abs().max() < 1e-5


def test_one_image_returns_that_image(fmnist):
    x = fmnist[:1]
    z = noisy(x.expand(5, -1, -1, -1), SIGMAS[:5])
    torch.testing.assert_close(GaussianDenoiser(x)(z, SIGMAS[:5]), x.expand(5, -1, -1, -1))


def test_tends_to_the_mean_as_sigma_grows(fmnist):
    train = fmnist[:300]
    d = GaussianDenoiser(train)
    z = noisy(fmnist[300:304], torch.ones(4))
    errs = [
        (d(z, torch.full((4,), s)) - train.mean(0)).abs().max().item() for s in (1, 10, 100, 1e4)
    ]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-5


def test_mixed_sigma_batch_equals_per_element(fmnist):
    d = GaussianDenoiser(fmnist[:300])
    z = noisy(fmnist[300:318], SIGMAS)
    single = torch.cat([d(z[i : i + 1], SIGMAS[i : i + 1]) for i in range(18)])
    torch.testing.assert_close(d(z, SIGMAS), single, rtol=0, atol=1e-6)


def test_bad_rank_raises(fmnist):
    with pytest.raises(ValueError, match="rank must be in"):
        GaussianDenoiser(fmnist[:10], rank=0)
