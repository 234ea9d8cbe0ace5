"""Fixed probe sets: deterministic, correctly noised, split over ranks without overlap."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import edm_sigmas, heun_sample
from lightning_pspc.evaluation import fixed_noise, forward_probes, probe_sigmas, reverse_probes


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_probe_sigmas_default_and_bad_values():
    torch.testing.assert_close(probe_sigmas(), edm_sigmas(18))
    assert probe_sigmas([0.1, 5.0, 1.0]).tolist() == [5.0, 1.0, 0.1]  # sorted decreasing
    for bad in ([], [0.0, 1.0], [float("nan")]):
        with pytest.raises(ValueError, match="sigmas"):
            probe_sigmas(bad)


def test_forward_probes_are_fixed_and_are_x_plus_sigma_eps(images):
    sigmas = torch.tensor([2.0, 0.5], dtype=torch.float64)
    a = forward_probes(images, sigmas, 3, seed=7)
    b = forward_probes(images, sigmas, 3, seed=7)
    c = forward_probes(images, sigmas, 3, seed=8)
    assert len(a) == 6 and torch.equal(a.z, b.z) and not torch.equal(a.z, c.z)
    assert a.sigma.tolist() == [2.0, 0.5] * 3  # image-major
    assert a.source.unique().numel() == 3 and torch.equal(a.source[0::2], a.source[1::2])
    eps = (a.z - images[a.source]) / a.sigma.float().view(-1, 1, 1, 1)
    # the noise at the two sigmas of one image is independent (not the same eps rescaled)
    assert not torch.allclose(eps[0], eps[1])
    assert abs(eps.std().item() - 1) < 0.3
    assert len(forward_probes(images, sigmas, 50, 0)) == 20  # clipped to N images


def test_shards_partition_the_probes(images):
    probes = forward_probes(images, probe_sigmas(), 5, seed=0)  # 90 probes
    shards = [probes.shard(r, 4) for r in range(4)]
    assert sum(len(s) for s in shards) == len(probes)
    merged = torch.cat([s.z for s in shards])
    # every probe exactly once: sort both by a fingerprint
    fp = lambda z: z.flatten(1).sum(1).sort().values  # noqa: E731
    torch.testing.assert_close(fp(merged), fp(probes.z))
    # each rank gets a mix of sigmas (balanced cost), not one block
    assert shards[0].sigma.unique().numel() > 4
    with pytest.raises(ValueError, match="rank"):
        probes.shard(4, 4)


def test_reverse_probes_are_the_heun_trajectory_and_reuse_its_evaluations(images):
    denoiser = EmpiricalDenoiser(images)
    calls = []

    def counted(z, s):
        calls.append(z.shape[0])
        return denoiser(z, s)

    sigmas = edm_sigmas(6)
    noise = fixed_noise(3, (1, 4, 4), seed=0)
    probes, outputs, samples = reverse_probes(counted, noise, sigmas)
    ref_samples, traj = heun_sample(denoiser, noise, sigmas=sigmas, return_trajectory=True)
    assert len(calls) == 2 * 6 - 1  # Heun's own calls only: outputs come for free
    torch.testing.assert_close(samples, ref_samples)
    torch.testing.assert_close(probes.z.view(3, 6, 1, 4, 4), torch.stack(traj, 1))
    assert probes.sigma.tolist() == sigmas.tolist() * 3
    torch.testing.assert_close(outputs, denoiser(probes.z, probes.sigma.float()))
    assert probes.source.tolist() == [0] * 6 + [1] * 6 + [2] * 6
