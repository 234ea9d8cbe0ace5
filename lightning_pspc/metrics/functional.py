"""Pure functional cores of the metrics (docs/reference.md section 3).

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

from ..diffusion.schedule import nearest_grid_index
from ..types import Denoiser

DEFAULT_CHUNK_SIZE = 1024
_COS_EPS = 1e-12  # norms below this count as zero vectors (cosine 0), as in F.cosine_similarity


def denoiser_mse(out_a: Tensor, out_b: Tensor) -> Tensor:
    """Per-element MSE ``[B]`` (float64, mean over all non-batch dims) of ``out_a, out_b [B, ...]``."""
    a64, b64 = _paired_flat(out_a, out_b)
    return (a64 - b64).pow(2).mean(1)


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
    return nearest_grid_index(sigma.detach(), grid.to(sigma.device), "log")  # [B]


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
    samples: Tensor,
    train: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    center: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Largest cosine similarity of each sample to any training image (pixel vectors).

    Args:
        samples: ``[M, C, H, W]``; train: ``[N, C, H, W]``, streamed in ``chunk_size`` chunks.
        center: optional ``[C, H, W]`` image (e.g. the training mean) subtracted from the samples
            and from every training image before the cosine.

    Returns:
        ``(max_cos [M] float64, idx [M] long)``; a zero vector has cosine 0 to everything.
    """
    check_chunk_size(chunk_size)
    check_train_images(train)
    s, x = _flatten_pair(samples, train)
    s = s.double()
    mu = s.new_zeros(s.shape[1]) if center is None else _flat_center(center, samples).to(s)
    s = s - mu
    s_unit = s / s.norm(dim=1, keepdim=True).clamp_min(_COS_EPS)
    best_c = s.new_full((s.shape[0],), -math.inf)
    best_i = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size].to(device=s.device, dtype=torch.float64) - mu
        x_unit = chunk / chunk.norm(dim=1, keepdim=True).clamp_min(_COS_EPS)
        c_max, c_idx = (s_unit @ x_unit.T).max(dim=1)  # [M]
        better = c_max > best_c
        best_c = torch.where(better, c_max, best_c)
        best_i = torch.where(better, c_idx + start, best_i)
    return best_c, best_i


def _flat_center(center: Tensor, images: Tensor) -> Tensor:
    """``center [C, H, W]`` (one image of the shape of ``images [M, C, H, W]``) flattened, ``[D]``."""
    if tuple(center.shape) != tuple(images.shape[1:]):
        raise ValueError(
            f"center of shape {tuple(center.shape)} does not match images of shape "
            f"{tuple(images.shape)}; pass one [C, H, W] image, e.g. the training mean"
        )
    return center.detach().flatten()


def _paired_flat(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Flattened float64 ``[B, D]`` copies of two same-shape batches ``[B, ...]``."""
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"paired tensors must have the same shape [B, ...], got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; pass the two outputs (or samples) for the same batch"
        )
    return a.detach().flatten(1).double(), b.detach().flatten(1).double()


def paired_cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity ``[B]`` (float64) of flattened pairs ``a[i], b[i]`` of shape ``[B, ...]``.

    Used for the reproducibility and generalization comparisons of docs/reference.md section 3
    (Zhang et al. 2023; Kadkhodaie et al. 2024): same-noise samples of two models. A zero vector
    has cosine 0 to everything.
    """
    a64, b64 = _paired_flat(a, b)
    dot = (a64 * b64).sum(1)
    return dot / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(_COS_EPS)


def paired_pearson_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation ``[B]`` (float64) of the pixels of each pair ``a[i], b[i]`` ``[B, ...]``.

    The cosine of the pairs after subtracting each image's own mean (Kamb & Ganguli's per-sample
    correlation of final samples); a constant image has correlation 0 to everything.
    """
    a64, b64 = _paired_flat(a, b)
    return paired_cosine_similarity(
        a64 - a64.mean(1, keepdim=True), b64 - b64.mean(1, keepdim=True)
    )


def normalized_mse(out: Tensor, ref: Tensor) -> Tensor:
    """Per-sample ``||out - ref||^2 / ||ref||^2`` ``[B]`` (float64) of ``out, ref [B, ...]``.

    Li et al. (2024): the network's distance to the Gaussian denoiser (``out = D_net``,
    ``ref = D_gauss``) relative to the Gaussian output's energy. A zero ``ref`` gives 0 when
    ``out`` is zero too, else ``inf``.
    """
    o, r = _paired_flat(out, ref)
    num, den = (o - r).pow(2).sum(1), r.pow(2).sum(1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), _zero_or_inf(num))


def r_squared(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample ``R^2 = 1 - ||pred - target||^2 / (D * Var(target))`` ``[B]`` (float64).

    Lukoianov et al. (2025): ``pred`` a closed-form denoiser's output ``a``, ``target`` the
    network's output ``b``, both ``[B, ...]``; ``D`` pixels per sample and ``Var`` the population
    variance of ``b``'s pixels, so ``D * Var(b) = ||b - mean(b)||^2``. 1 is a perfect fit, 0 no
    better than ``b``'s mean pixel, negative worse. A constant ``target`` gives 1 when ``pred``
    equals it, else ``-inf``.
    """
    a, b = _paired_flat(pred, target)
    ss_res = (a - b).pow(2).sum(1)
    ss_tot = (b - b.mean(1, keepdim=True)).pow(2).sum(1)
    ratio = torch.where(
        ss_tot > 0, ss_res / ss_tot.clamp_min(torch.finfo(ss_tot.dtype).tiny), _zero_or_inf(ss_res)
    )
    return 1 - ratio


def _zero_or_inf(num: Tensor) -> Tensor:
    """``num / 0`` as a limit: 0 where ``num == 0``, ``inf`` elsewhere."""
    return torch.where(num > 0, torch.full_like(num, math.inf), torch.zeros_like(num))


def linearity_cosine(out_mixed: Tensor, out_1: Tensor, out_2: Tensor, alpha: float = 0.5) -> Tensor:
    """Li et al. (2024) linearity of one probe pair: ``cos(D(a z1 + b z2), a D(z1) + b D(z2))``.

    ``a = sqrt(alpha)``, ``b = sqrt(1 - alpha)`` (``a^2 + b^2 = 1`` keeps the mixture at the noise
    level of its parts). Takes the three outputs ``[B, C, H, W]``: ``out_mixed = D(a z1 + b z2, s)``,
    ``out_1 = D(z1, s)``, ``out_2 = D(z2, s)``; returns the cosine per pair ``[B]`` (float64).
    """
    check_alpha(alpha)
    _paired_flat(out_1, out_2)  # shape check
    combined = (
        math.sqrt(alpha) * out_1.detach().double() + math.sqrt(1 - alpha) * out_2.detach().double()
    )
    return paired_cosine_similarity(out_mixed, combined)


def check_alpha(alpha: float) -> None:
    """Raise a clear error unless ``0 < alpha < 1`` (the mixing weight of the linearity score)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (Li et al. use 0.5), got {alpha}")


@torch.no_grad()
def linearity_score(
    denoiser: Denoiser, z1: Tensor, z2: Tensor, sigma: Tensor | float, alpha: float = 0.5
) -> Tensor:
    """Mean over pairs of :func:`linearity_cosine` for noisy probes ``z1, z2 [B, C, H, W]``.

    Evaluates ``D(a z1 + b z2, s)``, ``D(z1, s)`` and ``D(z2, s)`` with ``sigma`` a float or
    ``[B]``. A linear denoiser scores 1 (Li et al. 2024). Returns a float64 scalar.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}")
    check_alpha(alpha)
    sigma = torch.as_tensor(sigma, dtype=z1.dtype, device=z1.device).expand(z1.shape[0])
    mixed = math.sqrt(alpha) * z1 + math.sqrt(1 - alpha) * z2
    return linearity_cosine(
        denoiser(mixed, sigma), denoiser(z1, sigma), denoiser(z2, sigma), alpha
    ).mean()


def cat_state(state: list[Tensor] | Tensor, device: torch.device) -> Tensor:
    """A torchmetrics ``cat`` state as one tensor ``[M]`` (empty float64 before any update)."""
    if isinstance(state, list):
        if not state:
            return torch.empty(0, dtype=torch.float64, device=device)
        return torch.cat(state)
    return state


def summary_statistics(values: Tensor, prefix: str) -> dict[str, Tensor]:
    """``{prefix}_mean``, ``_median``, ``_q25``, ``_q75`` of ``values [M]`` (linear interpolation).

    An empty ``values`` gives NaN for all four.
    """
    values = values.double().flatten()
    if values.numel() == 0:
        nan = values.new_tensor(math.nan)
        return {f"{prefix}_{key}": nan for key in ("mean", "median", "q25", "q75")}
    q = values.quantile(values.new_tensor([0.25, 0.5, 0.75]))
    return {
        f"{prefix}_mean": values.mean(),
        f"{prefix}_median": q[1],
        f"{prefix}_q25": q[0],
        f"{prefix}_q75": q[2],
    }


def twin_similarities(
    samples_a: Tensor,
    samples_b: Tensor,
    train_a: Tensor,
    train_b: Tensor,
    center: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Cosine similarities of twin models' samples, on images centred on ``center``.

    Kadkhodaie et al. (2024): ``samples_a, samples_b [M, C, H, W]`` come from the twins (trained
    on the disjoint halves ``train_a [Na, C, H, W]``, ``train_b [Nb, C, H, W]``) with the same
    initial noise, pair by pair; ``center [C, H, W]`` is the training mean, subtracted from every
    image so that backgrounds do not dominate the cosine.

    Returns float64 ``(twin [M], nearest_a [M], nearest_b [M])``: the cosine between the twins'
    samples, and of each twin's sample to the most similar (highest centred cosine) image of its
    own training set.
    """
    a64, b64 = _paired_flat(samples_a, samples_b)  # [M, D]
    mu = _flat_center(center, samples_a).to(a64)  # [D]
    twin = paired_cosine_similarity(a64 - mu, b64 - mu)
    nearest_a, _ = pairwise_cosine_max(samples_a, train_a, chunk_size, center=center)
    nearest_b, _ = pairwise_cosine_max(samples_b, train_b, chunk_size, center=center)
    return twin, nearest_a, nearest_b
