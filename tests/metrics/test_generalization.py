"""Generalization metrics (docs/reference.md 3 and 3b): hand-computed values and mathematical properties."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, GaussianDenoiser
from lightning_pspc.metrics import (
    REPRODUCIBILITY_THRESHOLD,
    LinearityScore,
    NormalizedMSE,
    RSquared,
    SampleAgreement,
    TwinSimilarity,
    linearity_cosine,
    linearity_outputs,
    linearity_score,
    normalized_mse,
    paired_pearson_correlation,
    r_squared,
    summary_statistics,
    twin_similarities,
)

F64 = torch.float64
GRID = [0.05, 0.5, 5.0]


def vecs(*rows: tuple[float, ...]) -> torch.Tensor:
    """Vectors as images ``[B, 1, 1, D]``, so values are easy to compute by hand."""
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 1, 1, -1)


def f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def images(n: int, seed: int, shape: tuple[int, ...] = (1, 4, 4)) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------- functional cores
def test_linearity_cosine_hand_computed() -> None:
    out_1, out_2 = vecs((1, 0), (1, 0)), vecs((0, 1), (0, 1))
    # alpha = 1/4: a = 1/2, b = sqrt(3)/2, so a D(z1) + b D(z2) = (1/2, sqrt(3)/2)
    mixed = vecs((1, 0), (0, 3))
    expected = f64(0.5, math.sqrt(3) / 2)
    torch.testing.assert_close(linearity_cosine(mixed, out_1, out_2, alpha=0.25), expected)
    # the scalar API on a nonlinear |z|: D(a z1 + b z2) = (0, 2a), a D(z1) + b D(z2) = (2a, 2a)
    z1, z2 = vecs((1, 1)), vecs((-1, 1))
    score = linearity_score(lambda z, s: z.abs(), z1, z2, 1.0)
    torch.testing.assert_close(score.item(), 1 / math.sqrt(2))
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="alpha"):
            linearity_cosine(mixed, out_1, out_2, alpha=alpha)
    with pytest.raises(ValueError, match="same shape"):
        linearity_cosine(mixed, out_1, out_2[:1])


def test_normalized_mse_is_per_sample_ratio() -> None:
    out, ref = vecs((1, 1), (2, 0), (3, 4), (0, 0)), vecs((1, 0), (2, 2), (0, 0), (0, 0))
    # ||(0,1)||^2 / 1 = 1; ||(0,-2)||^2 / 8 = 1/2; x / 0 = inf; 0 / 0 = 0
    torch.testing.assert_close(normalized_mse(out, ref), f64(1.0, 0.5, math.inf, 0.0))


def test_r_squared_hand_computed() -> None:
    net = vecs((1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 1, 1), (1, 1, 1))
    ref = vecs((1, 2, 4), (1, 2, 3), (2, 2, 2), (1, 1, 1), (1, 1, 2))
    # ||b - mean b||^2 = 2: 1 - 1/2, exact fit 1, b's mean pixel 0; constant b: 1 or -inf
    torch.testing.assert_close(r_squared(ref, net), f64(0.5, 1.0, 0.0, 1.0, -math.inf))


def test_pearson_correlation_hand_computed() -> None:
    a = vecs((1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3))
    b = vecs((1, 3, 2), (5, 7, 9), (0, -1, -2), (4, 4, 4))
    # centred (-1, 0, 1) . (-1, 1, 0) / 2 = 1/2; affine 2a + 3 -> 1; -a -> -1; constant -> 0
    torch.testing.assert_close(paired_pearson_correlation(a, b), f64(0.5, 1.0, -1.0, 0.0))


def test_summary_statistics_quartiles() -> None:
    stats = summary_statistics(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), "x")
    expected = {"x_mean": 3.0, "x_median": 3.0, "x_q25": 2.0, "x_q75": 4.0}
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(stats[key], torch.tensor(value, dtype=F64), msg=key)
    assert all(v.isnan() for v in summary_statistics(torch.zeros(0), "x").values())


def test_twin_similarities_hand_computed_on_centred_images() -> None:
    center = torch.tensor([1.0, 1.0]).reshape(1, 1, 2)
    samples_a, samples_b = vecs((2, 1), (1, 3)), vecs((3, 1), (0, 1))
    train_a, train_b = vecs((1, 1), (1, 2), (3, 3)), vecs((0, 2), (2, 1))
    twin, near_a, near_b = twin_similarities(samples_a, samples_b, train_a, train_b, center)
    # centred: a = (1,0), (0,2); b = (2,0), (-1,0): twin cosines 1 and 0
    torch.testing.assert_close(twin, f64(1.0, 0.0))
    # train_a centred (0,0), (0,1), (2,2): (1,0) -> 1/sqrt2 (with (2,2)); (0,2) -> 1 (with (0,1))
    torch.testing.assert_close(near_a, f64(1 / math.sqrt(2), 1.0))
    # train_b centred (-1,1), (1,0): (2,0) -> 1; (-1,0) -> 1/sqrt2
    torch.testing.assert_close(near_b, f64(1.0, 1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="center"):
        twin_similarities(samples_a, samples_b, train_a, train_b, center[..., :1])


# ---------------------------------------------------------------- linearity
def test_linear_denoiser_has_linearity_one_at_every_sigma() -> None:
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(3))

    def linear(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # a linear map per sigma
        return (z.flatten(1) @ weight / (1 + sigma[:, None] ** 2)).view_as(z)

    x = images(8, seed=1)
    outputs = linearity_outputs(linear, x[:4], x[4:], GRID, seed=0)
    metric = LinearityScore(GRID)
    metric.update(*outputs)
    torch.testing.assert_close(metric.compute(), torch.ones(3, dtype=F64))

    # the Gaussian denoiser of a zero-mean training set is linear too (affine in general)
    train = images(6, seed=2)
    gauss = GaussianDenoiser(torch.cat([train, -train]))
    metric.reset()
    metric.update(*linearity_outputs(gauss, x[:4], x[4:], GRID, seed=0))
    torch.testing.assert_close(metric.compute(), torch.ones(3, dtype=F64))
    # the empirical denoiser is not linear between the extremes of sigma
    metric.reset()
    metric.update(*linearity_outputs(EmpiricalDenoiser(train), x[:4], x[4:], GRID, seed=0))
    assert metric.compute()[1] < 0.99


def test_linearity_outputs_builds_the_probes() -> None:
    x1, x2 = images(3, seed=4), images(3, seed=5)
    identity = lambda z, sigma: z.clone()  # noqa: E731
    out = linearity_outputs(identity, x1, x2, [0.1, 2.0], seed=7, alpha=0.3)
    assert all(t.shape == (6, 1, 4, 4) for t in out[:3]) and out.sigma.shape == (6,)
    torch.testing.assert_close(out.sigma, torch.tensor([0.1] * 3 + [2.0] * 3))
    # D = identity: the mixed probe is a z1 + b z2 and z_i - x_i is noise of scale sigma
    a, b = math.sqrt(0.3), math.sqrt(0.7)
    torch.testing.assert_close(out.out_mixed, a * out.out_1 + b * out.out_2)
    noise = (out.out_1 - x1.repeat(2, 1, 1, 1)) / out.sigma.view(-1, 1, 1, 1)
    assert 0.7 < noise.std() < 1.3
    again = linearity_outputs(identity, x1, x2, [0.1, 2.0], seed=7, alpha=0.3)
    assert all(torch.equal(u, v) for u, v in zip(out, again))
    other = linearity_outputs(identity, x1, x2, [0.1, 2.0], seed=8, alpha=0.3)
    assert not torch.equal(out.out_1, other.out_1)
    with pytest.raises(ValueError, match="positive"):
        linearity_outputs(identity, x1, x2, [0.0], seed=0)
    with pytest.raises(ValueError, match="paired image batches"):
        linearity_outputs(identity, x1, x2[:2], [1.0], seed=0)


def test_linearity_score_buckets_per_sigma() -> None:
    out_1, out_2 = vecs((1, 0), (1, 0), (1, 0)), vecs((0, 1), (0, 1), (0, 1))
    mixed = vecs((1, 1), (1, 0), (0, 1))  # cosines with (1, 1)/sqrt2: 1, 1/sqrt2, 1/sqrt2
    metric = LinearityScore([0.1, 1.0, 10.0])
    metric.update(mixed[:2], out_1[:2], out_2[:2], torch.tensor([0.1, 1.0]))
    metric.update(mixed[2:], out_1[2:], out_2[2:], 1.2)
    result = metric.compute()
    torch.testing.assert_close(result[:2], f64(1.0, 1 / math.sqrt(2)))
    assert result[2].isnan()


# ---------------------------------------------------------------- fit to a reference denoiser
def test_network_equal_to_gaussian_has_normalized_mse_zero_and_r_squared_one() -> None:
    gauss = GaussianDenoiser(images(10, seed=6))
    x = images(6, seed=7)
    sigma = torch.tensor(GRID).repeat(2)  # [6]
    out = gauss(x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x), sigma)
    nmse, r2 = NormalizedMSE(GRID), RSquared(GRID)
    nmse.update(out, out.clone(), sigma)
    r2.update(out.clone(), out, sigma)
    torch.testing.assert_close(nmse.compute(), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(r2.compute(), torch.ones(3, dtype=F64))


def test_normalized_mse_and_r_squared_per_sigma_hand_computed() -> None:
    net, ref = vecs((1, 1), (3, 0), (1, 2)), vecs((1, 0), (2, 0), (1, 3))
    # per-sample ratios at sigma 1: 1 and 1/4 -> mean 0.625 (the ratio of sums would be 2/5)
    nmse = NormalizedMSE([1.0, 4.0])
    nmse.update(net[:2], ref[:2], 1.0)
    nmse.update(net[2:], ref[2:], torch.tensor([4.0]))
    torch.testing.assert_close(nmse.compute(), f64(0.625, 1 / 10))
    # R^2 of ref against net: ||(3,0) - mean||^2 = 4.5, residual 1; ||(1,2) - mean||^2 = 0.5
    r2 = RSquared([1.0, 4.0])
    r2.update(ref[1:], net[1:], torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(r2.compute(), f64(1 - 1 / 4.5, 1 - 1 / 0.5))


# ---------------------------------------------------------------- agreement of samples
def test_identical_sample_sets_agree_perfectly() -> None:
    x = images(5, seed=8)
    metric = SampleAgreement()
    metric.update(x[:2], x[:2].clone())
    metric.update(x[2:], x[2:].clone())
    result = metric.compute()
    assert len(result) == 12
    for key, value in result.items():
        expected = torch.tensor(0.0 if key.startswith("mse") else 1.0, dtype=F64)
        torch.testing.assert_close(value, expected, msg=key)


def test_sample_agreement_hand_computed_quartiles() -> None:
    a = vecs((1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3), (0, 0, 1))
    b = vecs((1, 3, 2), (5, 7, 9), (0, -1, -2), (1, 2, 3), (0, 0, 2))
    metric = SampleAgreement()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["pearson_median"].isnan()
    metric.update(a[:3], b[:3])
    metric.update(a[3:], b[3:])
    result = metric.compute()
    # MSE per pair: 2/3, 77/3, 35/3, 0, 1/3 -> sorted 0, 1/3, 2/3, 35/3, 77/3
    for key, value in {"mean": 23 / 3, "median": 2 / 3, "q25": 1 / 3, "q75": 35 / 3}.items():
        torch.testing.assert_close(result[f"mse_{key}"], torch.tensor(value, dtype=F64), msg=key)
    # Pearson: 1/2, 1, -1, 1, 1 -> median 1, q25 1/2
    torch.testing.assert_close(result["pearson_median"], torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(result["pearson_q25"], torch.tensor(0.5, dtype=F64))
    # cosine of (0,0,1), (0,0,2) is 1 although the MSE is not 0
    torch.testing.assert_close(result["cosine_q75"], torch.tensor(1.0, dtype=F64))


# ---------------------------------------------------------------- twins
def test_identical_twins_are_similar_and_reproducible() -> None:
    train_a, train_b = images(6, seed=9), images(6, seed=10)
    samples = images(4, seed=11)
    metric = TwinSimilarity(train_a, train_b, chunk_size=4)
    metric.update(samples, samples.clone())
    result = metric.compute()
    for key in ("twin_cos_mean", "twin_cos_median", "twin_cos_q25", "reproducibility"):
        torch.testing.assert_close(result[key], torch.tensor(1.0, dtype=F64), msg=key)
    assert result["train_cos_mean"] < 1 and result["train_copy_fraction"] == 0
    # copies of their own training images: nearest-training cosine 1, copy fraction 1
    metric.reset()
    metric.update(train_a[:3], train_b[:3])
    result = metric.compute()
    torch.testing.assert_close(result["train_cos_q25"], torch.tensor(1.0, dtype=F64))
    assert result["train_copy_fraction"] == 1 and result["reproducibility"] == 0


def test_twin_similarity_hand_computed() -> None:
    # the training mean of both halves is (1, 1)
    train_a, train_b = vecs((1, 1), (1, 2), (3, 3)), vecs((0, 2), (0, -3))
    assert torch.equal(torch.cat([train_a, train_b]).mean(0), torch.ones(1, 1, 2))
    samples_a, samples_b = vecs((2, 1), (1, 3), (1, 2)), vecs((3, 1), (0, 1), (1, 1.9))
    metric = TwinSimilarity(train_a, train_b, threshold=0.9)
    metric.update(samples_a, samples_b)
    result = metric.compute()
    # centred a = (1,0), (0,2), (0,1); b = (2,0), (-1,0), (0,0.9): twin cosines 1, 0, 1
    torch.testing.assert_close(result["twin_cos_mean"], torch.tensor(2 / 3, dtype=F64))
    torch.testing.assert_close(result["reproducibility"], torch.tensor(2 / 3, dtype=F64))
    # train_a centred (0,0), (0,1), (2,2): 1/sqrt2, 1, 1; train_b centred (-1,1), (-1,-4):
    # (2,0) -> max(-1/sqrt2, -1/sqrt17); (-1,0) -> 1/sqrt2; (0,0.9) -> 1/sqrt2
    c = 1 / math.sqrt(2)
    train = torch.tensor([c, 1.0, 1.0, -1 / math.sqrt(17), c, c], dtype=F64)
    torch.testing.assert_close(result["train_cos_mean"], train.mean())
    torch.testing.assert_close(result["train_cos_median"], torch.tensor(c, dtype=F64))
    torch.testing.assert_close(result["train_copy_fraction"], torch.tensor(2 / 6, dtype=F64))
    assert REPRODUCIBILITY_THRESHOLD == 0.95
    assert TwinSimilarity(train_a, train_b).threshold == REPRODUCIBILITY_THRESHOLD


def test_twin_similarity_errors() -> None:
    train = images(3, seed=12)
    with pytest.raises(ValueError, match="threshold"):
        TwinSimilarity(train, train, threshold=1.0)
    with pytest.raises(ValueError, match="different shapes"):
        TwinSimilarity(train, images(3, seed=12, shape=(1, 2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        TwinSimilarity(train, train).update(train, train[:2])
