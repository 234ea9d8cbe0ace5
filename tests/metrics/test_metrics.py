"""Metrics against hand-computed values on tiny tensors (docs/reference.md section 3)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lightning_pspc.metrics import (
    DenoiserDistance,
    MemorizedFraction,
    NearestNeighbourStats,
    denoiser_mse,
    linearity_score,
    memorized_mask,
    nearest_neighbours,
    nearest_sigma_index,
    nn_distance_ratio,
    paired_cosine_similarity,
    pairwise_cosine_max,
)


def points(*xy: tuple[float, float]) -> torch.Tensor:
    """2-D points as images ``[N, 1, 1, 2]``, so distances are easy to compute by hand."""
    return torch.tensor(xy, dtype=torch.float32).reshape(-1, 1, 1, 2)


# training set: (0,0), (3,0), (0,4)
TRAIN = points((0, 0), (3, 0), (0, 4))


# ---------------------------------------------------------------- functional cores
def test_denoiser_mse_is_per_element_mean_in_float64() -> None:
    a = torch.zeros(2, 1, 2, 2)
    b = torch.stack([torch.full((1, 2, 2), 2.0), torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])])
    mse = denoiser_mse(a, b)
    assert mse.dtype == torch.float64
    torch.testing.assert_close(mse, torch.tensor([4.0, 2.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        denoiser_mse(a, b[:1])


def test_nearest_sigma_index_uses_log_distance() -> None:
    grid = torch.tensor([0.1, 1.0, 10.0])
    sigma = torch.tensor([0.1, 1.0, 10.0, 0.5, 0.2, 3.0, 4.0, 1e-4, 1e3])
    # 0.5 -> 1.0 (ln 2 < ln 5) although |0.5 - 0.1| < |0.5 - 1.0|; 3 -> 1 and 4 -> 10 likewise
    expected = torch.tensor([0, 1, 2, 1, 0, 1, 2, 0, 2])
    assert torch.equal(nearest_sigma_index(sigma, grid), expected)
    with pytest.raises(ValueError, match="positive"):
        nearest_sigma_index(torch.tensor([0.0, 1.0]), grid)


def test_nearest_neighbours_hand_computed_and_chunk_invariant() -> None:
    samples = points((1, 0), (0, 0), (0, 5))
    for chunk_size in (1, 2, 100):
        dist, idx = nearest_neighbours(samples, TRAIN, k=2, chunk_size=chunk_size)
        assert dist.dtype == torch.float64 and dist.shape == (3, 2)
        torch.testing.assert_close(
            dist, torch.tensor([[1.0, 2.0], [0.0, 3.0], [1.0, 5.0]], dtype=torch.float64)
        )
        assert idx.tolist() == [[0, 1], [0, 1], [2, 0]]


def test_nearest_neighbours_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    train, samples = torch.randn(10, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    full = (samples.double().flatten(1)[:, None] - train.double().flatten(1)[None]).norm(dim=-1)
    ref_d, ref_i = full.sort(dim=1)
    dist, idx = nearest_neighbours(samples, train, k=3, chunk_size=3)
    torch.testing.assert_close(dist, ref_d[:, :3])
    assert torch.equal(idx, ref_i[:, :3])
    with pytest.raises(ValueError, match="k = 11"):
        nearest_neighbours(samples, train, k=11)
    with pytest.raises(ValueError, match="do not match"):
        nearest_neighbours(samples[:, :1], train)


def test_memorized_mask_gu_ratio() -> None:
    samples = points(
        (0, 0),  # a training image: ratio 0 / 3 = 0 -> memorized
        (1.5, 0),  # midway between (0,0) and (3,0): ratio 1 -> not memorized
        (0.5, 0),  # 0.5 / 2.5 = 0.2 < 1/3 -> memorized
        (1, 0),  # 1 / 2 = 0.5 -> not memorized
    )
    torch.testing.assert_close(
        nn_distance_ratio(samples, TRAIN), torch.tensor([0.0, 1.0, 0.2, 0.5], dtype=torch.float64)
    )
    assert memorized_mask(samples, TRAIN).tolist() == [True, False, True, False]
    assert memorized_mask(samples, TRAIN, threshold=0.6).tolist() == [True, False, True, True]


def test_ratio_of_a_sample_equal_to_duplicated_training_images_is_zero() -> None:
    train = points((1, 1), (1, 1), (5, 5))
    assert nn_distance_ratio(points((1, 1)), train).item() == 0.0


def test_distances_exact_where_expanded_float32_form_fails() -> None:
    """A sample 1e-4 from a training image, the next image 1e-3 away, in 3072 dimensions."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    x1, sample = x0.clone(), x0.clone()
    x1.view(-1)[1] += 1e-3
    sample.view(-1)[0] += 1e-4
    train = torch.cat([x1, x0, torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1])
    exact = (sample.double() - train.double()).flatten(1).norm(dim=1)  # from the stored floats

    dist, idx = nearest_neighbours(sample, train, k=2)
    assert idx.tolist() == [[1, 0]]
    torch.testing.assert_close(dist[0], exact[[1, 0]], rtol=1e-12, atol=0)
    ratio = nn_distance_ratio(sample, train)
    torch.testing.assert_close(ratio, (exact[1] / exact[0]).reshape(1), rtol=1e-12, atol=0)
    assert memorized_mask(sample, train).item()

    # the test is sensitive: the expanded form in float32 gets these distances badly wrong
    s, x = sample.flatten(1), train.flatten(1)
    sq = (s.pow(2).sum(1, keepdim=True) - 2 * s @ x.T + x.pow(2).sum(1)).clamp_min(0)
    naive = sq.sqrt()[0, :2].double()
    assert ((naive - exact[:2]).abs() / exact[:2]).max() > 0.1


def test_pairwise_cosine_max_hand_computed() -> None:
    train = points((1, 0), (0, 2), (-1, -1))
    samples = points((3, 0), (1, 2), (-2, -1), (0, 0))
    for chunk_size in (1, 2, 10):
        cos, idx = pairwise_cosine_max(samples, train, chunk_size=chunk_size)
        expected = [1.0, 2 / math.sqrt(5), 3 / math.sqrt(10), 0.0]  # zero vector: cosine 0
        torch.testing.assert_close(cos, torch.tensor(expected, dtype=torch.float64))
        assert idx.tolist()[:3] == [0, 1, 2]


def test_paired_cosine_similarity() -> None:
    a = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    b = torch.stack([2 * a[0], -a[1], torch.zeros_like(a[2])])
    torch.testing.assert_close(
        paired_cosine_similarity(a, b), torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    )


def test_linearity_score_one_for_linear_and_hand_value_for_abs() -> None:
    z1 = torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 2)
    z2 = torch.tensor([-1.0, 1.0]).reshape(1, 1, 1, 2)

    def linear(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return z / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    def absolute(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return z.abs()

    torch.testing.assert_close(linearity_score(linear, z1, z2, 0.5).item(), 1.0)
    # D(a z1 + b z2) = (0, 2a), a D(z1) + b D(z2) = (2a, 2a): cosine 1/sqrt(2)
    torch.testing.assert_close(linearity_score(absolute, z1, z2, 1.0).item(), 1 / math.sqrt(2))


# ---------------------------------------------------------------- metric classes
def test_denoiser_distance_buckets_per_sigma() -> None:
    metric = DenoiserDistance([0.1, 1.0, 10.0, 80.0])
    out_b = torch.zeros(5, 1, 2, 2)
    out_a = torch.arange(1.0, 6.0).view(5, 1, 1, 1).expand(5, 1, 2, 2)  # MSE 1, 4, 9, 16, 25
    sigma = torch.tensor([0.1, 0.1, 10.0, 0.5, 1.0])  # 0.5 -> 1.0 in log space
    metric.update(out_a, out_b, sigma)
    result = metric.compute()
    assert result.dtype == torch.float64
    torch.testing.assert_close(result[:3], torch.tensor([2.5, 20.5, 9.0], dtype=torch.float64))
    assert result[3].isnan()  # no probe at sigma = 80

    # several batches (and a scalar sigma) give the same result as one batch
    split = DenoiserDistance([0.1, 1.0, 10.0, 80.0])
    split.update(out_a[:2], out_b[:2], 0.1)
    split.update(out_a[2:3], out_b[2:3], sigma[2:3])
    split.update(out_a[3:], out_b[3:], sigma[3:])
    torch.testing.assert_close(split.compute(), result, equal_nan=True)

    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().isnan().all()


def test_denoiser_distance_one_sigma_grid_gives_one_value_per_sigma() -> None:
    # torchmetrics squeezes one-element results to 0-d; the contract is [num_sigmas]
    metric = DenoiserDistance([1.0])
    out_a = torch.arange(1.0, 3.0).view(2, 1, 1, 1).expand(2, 1, 2, 2)  # MSE 1, 4
    metric.update(out_a, torch.zeros(2, 1, 2, 2), 0.7)
    result = metric.compute()
    assert result.shape == (1,)
    torch.testing.assert_close(result, torch.tensor([2.5], dtype=torch.float64))
    copied = copy.deepcopy(metric)  # re-wrapped compute (torchmetrics __setstate__)
    copied.reset()
    copied.update(out_a[:1], torch.zeros(1, 1, 2, 2), 1.0)
    assert copied.compute().shape == (1,)
    assert metric(out_a, torch.zeros(2, 1, 2, 2), 1.0).shape == (1,)  # forward: batch value


def test_denoiser_distance_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        DenoiserDistance([0.0, 1.0])
    metric = DenoiserDistance([1.0])
    with pytest.raises(ValueError, match="one sigma per batch element"):
        metric.update(torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2), torch.ones(2))


def test_memorized_fraction_and_batches() -> None:
    samples = points((0, 0), (1.5, 0), (0.5, 0), (1, 0), (3, 0.1))
    metric = MemorizedFraction(TRAIN, chunk_size=2)
    metric.update(samples)
    torch.testing.assert_close(metric.compute(), torch.tensor(3 / 5, dtype=torch.float64))
    split = MemorizedFraction(TRAIN, threshold=0.6)
    split.update(samples[:2])
    split.update(samples[2:])
    torch.testing.assert_close(split.compute(), torch.tensor(4 / 5, dtype=torch.float64))


def test_memorized_fraction_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 training images"):
        MemorizedFraction(TRAIN[:1])
    with pytest.raises(ValueError, match="threshold"):
        MemorizedFraction(TRAIN, threshold=0.0)
    with pytest.raises(ValueError, match="do not match"):
        MemorizedFraction(TRAIN).update(torch.zeros(2, 1, 2, 2))


def test_nearest_neighbour_stats_hand_computed() -> None:
    train = points((1, 0), (0, 2))
    samples = points((3, 0), (0, 1), (1, 1))
    # NN distances: 2, 1, 1; max cosines: 1, 1, 1/sqrt(2)
    metric = NearestNeighbourStats(train, chunk_size=1)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute()["nn_dist_mean"].item())  # nothing yet
    metric.update(samples[:1])
    metric.update(samples[1:])
    result = metric.compute()
    expected = {
        "nn_dist_mean": 4 / 3,
        "nn_dist_median": 1.0,
        "max_cos_mean": (2 + 1 / math.sqrt(2)) / 3,
        "max_cos_median": 1.0,
    }
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(result[key], torch.tensor(value, dtype=torch.float64), msg=key)
