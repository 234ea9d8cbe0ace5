"""Pure functional cores of the metrics (REFERENCE.md section 3).

The ``torchmetrics.Metric`` classes in this package only accumulate what these functions return,
so the mathematics lives (and is tested) here once.

Distances between images are pixel L2 distances of the flattened images, computed from exact
differences in float64 (``torch.cdist`` without the matrix-product shortcut): the expanded form
``||s||^2 - 2 s.x + ||x||^2`` cancels badly in float32 when a sample lies close to a training
image, which is exactly the memorized case these metrics must detect. The training set is
streamed in chunks of ``chunk_size`` images so memory stays ``O(M * chunk_size)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..types import Denoiser

DEFAULT_CHUNK_SIZE = 1024
_COS_EPS = 1e-12  # norms below this count as zero vectors (cosine 0), as in F.cosine_similarity


def denoiser_mse(out_a: Tensor, out_b: Tensor) -> Tensor:
    """Per-element MSE ``[B]`` (float64, mean over all non-batch dims) of ``out_a, out_b [B, ...]``."""
    if out_a.shape != out_b.shape or out_a.ndim < 2:
        raise ValueError(
            f"denoiser outputs must have the same shape [B, C, H, W], got {tuple(out_a.shape)} "
            f"and {tuple(out_b.shape)}; pass the two denoisers' outputs for the same batch"
        )
    diff = out_a.detach().double() - out_b.detach().double()
    return diff.pow(2).flatten(1).mean(1)


def nearest_sigma_index(sigma: Tensor, grid: Tensor) -> Tensor:
    """Index ``[B]`` of the grid sigma nearest to each ``sigma [B]`` in log space.

    The nearest grid point by ``|ln sigma - ln grid_j|`` (ties go to the lower index); a sigma
    equal to a grid point always maps to it. Every sigma is assigned, however far it lies from the
    grid. Both ``sigma`` and ``grid [S]`` must be positive.
    """
    if (sigma <= 0).any() or not torch.isfinite(sigma).all():
        raise ValueError(
            f"sigma must be positive and finite, got min {sigma.min().item()}; "
            "drop the sigma = 0 step of a sampling trajectory before updating the metric"
        )
    log_sigma = sigma.detach().double().log().reshape(-1, 1)  # [B, 1]
    log_grid = grid.to(device=sigma.device, dtype=torch.float64).log().reshape(1, -1)  # [1, S]
    return (log_sigma - log_grid).abs().argmin(dim=1)  # [B]


def check_train_images(train: Tensor, min_images: int = 1) -> Tensor:
    """Validate a training set ``[N, C, H, W]`` with ``N >= min_images``; returned detached."""
    if not isinstance(train, Tensor) or train.ndim < 2 or not train.is_floating_point():
        shape = tuple(train.shape) if isinstance(train, Tensor) else type(train).__name__
        raise ValueError(
            f"training images must be a float tensor [N, C, H, W], got {shape}; "
            "pass the training set as a float tensor in [-1, 1]"
        )
    if train.shape[0] < min_images:
        raise ValueError(
            f"need at least {min_images} training images, got {train.shape[0]}; "
            "pass the whole training set"
        )
    return train.detach()


def _flatten_pair(samples: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    """Check that ``samples [M, ...]`` and ``train [N, ...]`` hold images of the same shape."""
    if samples.ndim < 2 or samples.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"samples of shape {tuple(samples.shape)} do not match training images of shape "
            f"{tuple(train.shape)}; both must be [batch, C, H, W] with the same C, H, W"
        )
    return samples.detach().flatten(1), train.detach().flatten(1)


def check_chunk_size(chunk_size: int) -> None:
    """Raise a clear error unless ``chunk_size >= 1``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def nearest_neighbours(
    samples: Tensor, train: Tensor, k: int = 2, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest training images of each sample by pixel L2 distance.

    Args:
        samples: ``[M, C, H, W]`` generated images.
        train: ``[N, C, H, W]`` training images, ``N >= k``; streamed in ``chunk_size`` chunks.
        k: number of neighbours.

    Returns:
        ``(dist [M, k] float64, idx [M, k] long)``, sorted by increasing distance; ``idx`` indexes
        ``train``. Distances come from exact float64 differences.
    """
    check_chunk_size(chunk_size)
    if not 1 <= k <= train.shape[0]:
        raise ValueError(
            f"k = {k} neighbours requested from {train.shape[0]} training images; "
            "need 1 <= k <= number of training images"
        )
    s, x = _flatten_pair(samples, train)
    s = s.double()
    best_d = s.new_full((s.shape[0], 0), math.inf)
    best_i = torch.zeros((s.shape[0], 0), dtype=torch.long, device=s.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size].to(device=s.device, dtype=torch.float64)
        d = torch.cdist(s, chunk, compute_mode="donot_use_mm_for_euclid_dist")  # [M, n]
        idx = torch.arange(start, start + chunk.shape[0], device=s.device).expand_as(d)
        cand_d, cand_i = torch.cat([best_d, d], dim=1), torch.cat([best_i, idx], dim=1)
        kk = min(k, cand_d.shape[1])
        best_d, pos = cand_d.topk(kk, dim=1, largest=False, sorted=True)
        best_i = cand_i.gather(1, pos)
    return best_d, best_i


def nn_distance_ratio(
    samples: Tensor, train: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Gu et al. (2023) ratio ``||s - NN1|| / ||s - NN2||`` per sample, ``[M]`` float64.

    ``NN1``, ``NN2``: nearest and second-nearest training images (pixel L2). When both distances
    are 0 (the sample equals two identical training images) the ratio is defined as 0.
    Needs ``train [N, C, H, W]`` with ``N >= 2``.
    """
    check_train_images(train, min_images=2)
    dist, _ = nearest_neighbours(samples, train, k=2, chunk_size=chunk_size)
    d1, d2 = dist[:, 0], dist[:, 1]
    return torch.where(d2 > 0, d1 / d2.clamp_min(torch.finfo(d2.dtype).tiny), torch.zeros_like(d1))


def memorized_mask(
    samples: Tensor, train: Tensor, threshold: float = 1 / 3, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Bool ``[M]``: sample memorized when ``||s - NN1|| / ||s - NN2|| < threshold`` (Gu et al.)."""
    return nn_distance_ratio(samples, train, chunk_size) < threshold


def pairwise_cosine_max(
    samples: Tensor, train: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """Largest cosine similarity of each sample to any training image (pixel vectors).

    Args:
        samples: ``[M, C, H, W]``; train: ``[N, C, H, W]``, streamed in ``chunk_size`` chunks.

    Returns:
        ``(max_cos [M] float64, idx [M] long)``; a zero vector has cosine 0 to everything.
    """
    check_chunk_size(chunk_size)
    check_train_images(train)
    s, x = _flatten_pair(samples, train)
    s = s.double()
    s_unit = s / s.norm(dim=1, keepdim=True).clamp_min(_COS_EPS)
    best_c = s.new_full((s.shape[0],), -math.inf)
    best_i = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size].to(device=s.device, dtype=torch.float64)
        x_unit = chunk / chunk.norm(dim=1, keepdim=True).clamp_min(_COS_EPS)
        c_max, c_idx = (s_unit @ x_unit.T).max(dim=1)  # [M]
        better = c_max > best_c
        best_c = torch.where(better, c_max, best_c)
        best_i = torch.where(better, c_idx + start, best_i)
    return best_c, best_i


def paired_cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity ``[B]`` (float64) of flattened pairs ``a[i], b[i]`` of shape ``[B, ...]``.

    Used for the reproducibility and generalization comparisons of REFERENCE.md section 3
    (Zhang et al. 2023; Kadkhodaie et al. 2024): same-noise samples of two models.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"paired tensors must have the same shape [B, ...], got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a64, b64 = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    dot = (a64 * b64).sum(1)
    return dot / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(_COS_EPS)


@torch.no_grad()
def linearity_score(denoiser: Denoiser, z1: Tensor, z2: Tensor, sigma: Tensor | float) -> Tensor:
    """Mean cosine similarity of ``D(a z1 + b z2, s)`` and ``a D(z1, s) + b D(z2, s)``.

    ``a = b = 1/sqrt(2)`` keeps the mixture at the noise level of its parts. A linear denoiser
    scores 1; the score rises as a model generalizes (Li et al. 2024, working definition of
    REFERENCE.md section 3). ``z1, z2 [B, C, H, W]``; ``sigma`` a float or ``[B]``. Returns a
    float64 scalar.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}")
    sigma = torch.as_tensor(sigma, dtype=z1.dtype, device=z1.device).expand(z1.shape[0])
    a = b = 1 / math.sqrt(2)
    mixed = denoiser(a * z1 + b * z2, sigma)
    combined = a * denoiser(z1, sigma) + b * denoiser(z2, sigma)
    return paired_cosine_similarity(mixed, combined).mean()
