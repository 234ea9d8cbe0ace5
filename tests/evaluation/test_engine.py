"""Denoiser comparisons and memorization statistics against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, GaussianDenoiser
from lightning_pspc.evaluation import (
    DenoiserComparer,
    band_means,
    build_references,
    fixed_noise,
    forward_probes,
    memorization_stats,
    nearest_training_images,
    probe_sigmas,
)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 6, 6, generator=gen) * 2 - 1, torch.rand(
        4, 1, 6, 6, generator=gen
    ) * 2 - 1


def _comparer(train, heldout, refs, sigmas, **kw) -> DenoiserComparer:
    return DenoiserComparer(
        refs,
        sigmas,
        train,
        heldout,
        3,
        2,
        fixed_noise(2, (1, 6, 6), 5),
        seeds=(1, 2),
        batch_size=7,
        **kw,
    )


def test_distance_to_itself_is_zero_and_to_another_matches_a_direct_computation(data):
    train, heldout = data
    sigmas = probe_sigmas([0.05, 0.5, 5.0])
    refs = build_references(["empirical", "gaussian"], train)
    comparer = _comparer(train, heldout, refs, sigmas)
    result = comparer.evaluate(GaussianDenoiser(train))
    assert set(result.mse) == {"train", "heldout", "reverse"}
    for kind in result.mse:
        assert torch.all(result.mse[kind]["gaussian"] == 0)
        assert torch.all(result.mse[kind]["empirical"] > 0)
    # direct: the same probes (same seed) through both denoisers, MSE per sigma
    probes = forward_probes(train, sigmas, 3, seed=1)
    d = GaussianDenoiser(train)(probes.z, probes.sigma) - EmpiricalDenoiser(train)(
        probes.z, probes.sigma
    )
    per_probe = d.double().pow(2).flatten(1).mean(1).view(3, 3)  # [images, sigmas]
    torch.testing.assert_close(result.mse["train"]["empirical"], per_probe.mean(0))


def test_forward_reference_outputs_are_cached(data):
    train, heldout = data
    sigmas = probe_sigmas([0.1, 1.0])
    comparer = _comparer(train, heldout, build_references(["empirical"], train), sigmas)
    net = EmpiricalDenoiser(train[:6])
    first = comparer.evaluate(net)
    after_first = comparer.reference_probe_evaluations
    second = comparer.evaluate(net)
    forward, reverse = (3 + 2) * 2, 2 * 2  # probes: images x sigmas, seeds x sigmas
    assert after_first == forward + reverse
    assert comparer.reference_probe_evaluations - after_first == reverse  # only the reverse states
    for kind in first.mse:
        torch.testing.assert_close(first.mse[kind]["empirical"], second.mse[kind]["empirical"])


def test_scalars_names_and_bands(data):
    train, heldout = data
    sigmas = probe_sigmas([0.01, 1.0, 50.0])
    comparer = _comparer(train, heldout, build_references(["empirical", "pspc"], train), sigmas)
    scalars = comparer.evaluate(GaussianDenoiser(train)).scalars()
    assert (
        "compare/pspc/heldout/sigma_0.01" in scalars
        and "compare/empirical/reverse/sigma_50" in scalars
    )
    assert scalars["compare/empirical/train/mid"] == scalars["compare/empirical/train/sigma_1"]
    assert len(scalars) == 2 * 3 * (3 + 3) and all(math.isfinite(v) for v in scalars.values())


def test_band_means():
    sigmas = torch.tensor([80.0, 20.0, 5.0, 1.0, 0.3, 0.1, 0.002], dtype=torch.float64)
    mse = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0, float("nan"), 8.0], dtype=torch.float64)
    assert band_means(sigmas, mse) == {"low": 8.0, "mid": 4.0, "high": 2.0}
    assert math.isnan(band_means(sigmas[:2], mse[:2])["low"])


def test_unknown_reference_name(data):
    with pytest.raises(ValueError, match="empirical"):
        build_references(["empirical", "pscp"], data[0])


def test_memorization_stats_copies_and_novel_samples(data):
    train, _ = data
    copies = train[:5] + 1e-3 * torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    stats = memorization_stats(copies, train)
    assert stats["memorized_fraction"] == 1.0 and stats["nn_dist_mean"] < 0.01
    assert stats["max_cos_mean"] > 0.999
    # the mean of two training images is half-way between them: ratio d1/d2 = 1, not memorized
    halfway = (train[0:4:2] + train[1:4:2]) / 2
    assert memorization_stats(halfway, train[:4])["memorized_fraction"] == 0.0
    neighbours, ratio = nearest_training_images(copies, train)
    torch.testing.assert_close(neighbours, train[:5])
    assert torch.all(ratio < 0.01)
