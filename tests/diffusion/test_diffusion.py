import math

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, GaussianDenoiser
from lightning_pspc.diffusion import (
    EDMLoss,
    EDMPrecond,
    edm_coefficients,
    edm_sigmas,
    euler_sample,
    heun_sample,
    sample_training_sigmas,
)


def test_edm_sigmas_follow_eq_5():
    s = edm_sigmas(18)
    assert s.shape == (18,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0) and s[-1].item() == pytest.approx(0.002)
    assert bool((s[1:] < s[:-1]).all())
    i = 7
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[i].item() == pytest.approx(ref, rel=1e-12)
    assert edm_sigmas(5, append_zero=True)[-1].item() == 0.0
    with pytest.raises(ValueError, match="num_steps"):
        edm_sigmas(0)


def test_training_sigmas_are_lognormal():
    s = sample_training_sigmas(200_000, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.01)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.01)


def test_preconditioning_coefficients():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    sd = 0.5
    for k, s in enumerate(sigma.tolist()):
        assert c_skip[k].item() == pytest.approx(sd**2 / (s**2 + sd**2))
        assert c_out[k].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2))
        assert c_in[k].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2))
        assert c_noise[k].item() == pytest.approx(math.log(s) / 4)


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, c_noise):
        self.calls.append((x.clone(), c_noise.clone()))
        return torch.ones_like(x)


def test_precond_wraps_the_raw_network():
    net = Recorder()
    d = EDMPrecond(net)
    z = torch.randn(2, 1, 4, 4)
    sigma = torch.tensor([0.5, 2.0])
    out = d(z, sigma)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma)
    torch.testing.assert_close(net.calls[0][0], c_in.view(-1, 1, 1, 1) * z)
    torch.testing.assert_close(net.calls[0][1], c_noise)
    torch.testing.assert_close(out, c_skip.view(-1, 1, 1, 1) * z + c_out.view(-1, 1, 1, 1))


def test_precond_takes_a_scalar_or_one_sigma_per_image():
    d = EDMPrecond(Recorder())
    z = torch.randn(4, 1, 4, 4)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \[B\] = \[4\].*got shape \[2, 2\]"):
        d(z, sigma.view(2, 2))  # was flattened silently
    torch.testing.assert_close(d(z, 0.5), d(z, torch.full((4,), 0.5)))
    torch.testing.assert_close(d(z, torch.tensor([0.5])), d(z, torch.full((4,), 0.5)))


def test_loss_weight_and_value_for_the_ideal_denoiser():
    loss = EDMLoss()
    sigma = torch.tensor([0.1, 1.0])
    torch.testing.assert_close(loss.weight(sigma), (sigma**2 + 0.25) / (sigma * 0.5) ** 2)
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    perfect = EmpiricalDenoiser(x[:1])  # one training image: D returns x exactly
    per_elem = loss(perfect, x[:1].expand(2, -1, -1, -1).contiguous(), sigma=sigma)
    assert per_elem.shape == (2,) and per_elem.abs().max() < 1e-9
    identity = loss(lambda z, s: z, x, sigma=sigma, noise=torch.ones_like(x))
    torch.testing.assert_close(identity, loss.weight(sigma) * sigma**2)


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
def test_samplers_reproduce_a_one_image_data_set(sampler):
    x = torch.rand(1, 1, 6, 6) * 2 - 1
    noise = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    out = sampler(EmpiricalDenoiser(x), noise)
    torch.testing.assert_close(out, x.expand(3, -1, -1, -1), rtol=0, atol=1e-5)


def test_heun_uses_35_evaluations_for_18_steps_and_returns_the_trajectory():
    calls = []

    def d(z, s):
        calls.append(s)
        return torch.zeros_like(z)

    out, traj = heun_sample(d, torch.randn(2, 1, 4, 4), num_steps=18, return_trajectory=True)
    assert len(calls) == 35 and len(traj) == 18
    assert all(c.shape == (2,) for c in calls)
    # With D = 0 the ODE is dz/dsigma = z / sigma: z scales linearly with sigma, so z(0) = 0.
    assert out.abs().max() < 1e-6


def test_gaussian_data_sampler_matches_the_data_covariance():
    # For Gaussian data the PF-ODE with the exact (Gaussian) denoiser maps N(0, smax^2 I) to the
    # data distribution: sample variance along the principal axis matches the data's.
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4000, 1, 1, 2, generator=g) * torch.tensor([0.8, 0.1]).view(1, 1, 1, 2)
    den = GaussianDenoiser(data)
    samples = heun_sample(den, torch.randn(4000, 1, 1, 2, generator=g), num_steps=40)
    std = samples.flatten(1).std(0)
    torch.testing.assert_close(std, data.flatten(1).std(0), rtol=0.05, atol=0.0)
