"""PSPC-Square with 1 x 1 patches on CPU (numba): per-pixel posterior means over distinct values.

With ``P = 1`` every window is one pixel (all its channels), no two windows overlap, and the
composite is, per pixel ``p``, the empirical posterior mean over the training images' values
at ``p`` (docs/reference.md section 2.3):

    ``D(z)_p = sum_n w_n x_n[p] / sum_n w_n``,  ``w_n = exp(-||z_p - x_n[p]||^2 / 2 s^2)``

with ``||.||`` over the ``C`` channels. Images that share the value (the ``C``-vector) at ``p``
share the weight, so the sum runs over the DISTINCT values ``v`` at ``p``, each weighted by its
count ``c_v``: ``w_v = c_v exp(-||z_p - v||^2 / 2 s^2)``. 8-bit images have at most 256 values
per pixel and channel: Fashion-MNIST has ~206 distinct values per pixel at N = 2,000 and ~230
at N = 10,000, so this is 10-40x less work than over the N images (and the same work on
continuous data, where every value is distinct).

The table (:class:`ValueTable`, built once per training set by :func:`value_table`) is ragged:
``offsets [H*W + 1]`` into ``values [C, M]`` (float32, the training set's own values, channel
rows contiguous) and ``counts [M]``, ``M <= N * H * W`` distinct items; its memory is at most
``(C + 1) / C`` times that of the training set.

Exactness: the fused kernel's scheme (:mod:`.pspc_cpu`): float64 squared distances from exact
differences, the minimum subtracted, the float32 exponential :func:`.pspc_cpu.exp32` of the
float64 argument (weights below ``exp(-64)`` relative to the nearest value are 0, as there),
float64 sums. tests/denoisers/test_pspc.py compares with the float64 definition from
sigma = 0.002 to 80 (tolerance 1e-5).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .numba_target import torch_threads  # (first: before any kernel compiles)
from .pspc_cpu import F32, add_sqdiff, dot, exp32, row_min, sqdiff

_FM = {"contract", "reassoc", "nsz", "arcp"}


class ValueTable(NamedTuple):
    """Distinct values per pixel: pixel ``p`` (row-major over ``H x W``) owns the items
    ``offsets[p]:offsets[p + 1]`` of ``values [C, M]`` (float32) and ``counts [M]`` (float64:
    how many training images have that value there)."""

    offsets: np.ndarray
    values: np.ndarray
    counts: np.ndarray


@njit(cache=True)
def _sort_columns(x):
    """Sorts the ``N`` columns (C-vectors) of ``x [C, N]`` lexicographically, in place."""
    C = x.shape[0]
    if C == 1:
        x[0, :] = np.sort(x[0])
        return
    order = np.arange(x.shape[1])
    for c in range(C - 1, -1, -1):  # stable sorts, least significant channel first
        order = order[np.argsort(x[c][order], kind="mergesort")]
    for c in range(C):
        x[c, :] = x[c][order]


@njit(cache=True)
def _distinct_count(x):
    """Number of distinct columns of a lexicographically sorted ``x [C, N]``."""
    k = 1
    for n in range(1, x.shape[1]):
        for c in range(x.shape[0]):
            if x[c, n] != x[c, n - 1]:
                k += 1
                break
    return k


@njit(cache=True, parallel=True)
def _build(x):
    """``x [HW, C, N]`` float32 (sorted in place) -> offsets, values, counts of the table."""
    HW, C, N = x.shape
    sizes = np.empty(HW, dtype=np.int64)
    for p in prange(HW):
        _sort_columns(x[p])
        sizes[p] = _distinct_count(x[p])
    offsets = np.zeros(HW + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)
    values = np.empty((C, offsets[HW]), dtype=np.float32)
    counts = np.zeros(offsets[HW])
    for p in prange(HW):
        xp, k = x[p], offsets[p]
        for c in range(C):
            values[c, k] = xp[c, 0]
        counts[k] = 1.0
        for n in range(1, N):
            new = False
            for c in range(C):
                if xp[c, n] != xp[c, n - 1]:
                    new = True
                    break
            if new:
                k += 1
                for c in range(C):
                    values[c, k] = xp[c, n]
            counts[k] += 1.0
    return offsets, values, counts


def value_table(images: Tensor) -> ValueTable:
    """The distinct values (C-vectors) at every pixel of ``images [N, C, H, W]`` with their
    counts (float32 values compared exactly); memory: one float32 copy of the training set while
    it is built."""
    n, c, h, w = images.shape
    x = images.detach().to("cpu", torch.float32).permute(2, 3, 1, 0).reshape(h * w, c, n)
    offsets, values, counts = _build(x.contiguous().numpy())
    return ValueTable(offsets, values, counts)


@njit(cache=True, fastmath=_FM)
def _weighted_sums(d2, shift, kb, counts, v0):
    """``(sum_v w_v, sum_v w_v v0[v])`` with ``w_v = counts[v] exp(-kb (d2[v] - shift))``."""
    den, num = 0.0, 0.0
    for v in range(d2.shape[0]):
        w = counts[v] * np.float64(exp32(F32(-kb * (d2[v] - shift))))
        den += w
        num += w * v0[v]
    return den, num


@njit(cache=True, fastmath=_FM)
def _weights(d2, shift, kb, counts, out):
    """``out[v] = counts[v] exp(-kb (d2[v] - shift))``; returns their sum."""
    den = 0.0
    for v in range(d2.shape[0]):
        w = counts[v] * np.float64(exp32(F32(-kb * (d2[v] - shift))))
        out[v] = w
        den += w
    return den


@njit(cache=True, parallel=True, fastmath=_FM)
def _values_batch(z, inv2s2, offsets, values, counts):
    """``z [B,C,H,W]`` float64, ``inv2s2 [B] = 1 / (2 sigma^2)`` -> the per-pixel posterior
    means ``[B,C,H,W]``; one work item per (noisy image, image row)."""
    B, C, H, W = z.shape
    longest = 1
    for p in range(H * W):
        longest = max(longest, offsets[p + 1] - offsets[p])
    out = np.empty(z.shape)
    for item in prange(B * H):
        b, i = item // H, item % H
        kb = inv2s2[b]
        d2 = np.empty(longest)
        w = np.empty(longest)
        for j in range(W):
            lo, hi = offsets[i * W + j], offsets[i * W + j + 1]
            d = d2[: hi - lo]
            sqdiff(d, z[b, 0, i, j], values[0, lo:hi])
            for c in range(1, C):
                add_sqdiff(d, z[b, c, i, j], values[c, lo:hi])
            m = row_min(d)  # the nearest value has weight counts * 1: den >= 1
            if C == 1:
                den, num = _weighted_sums(d, m, kb, counts[lo:hi], values[0, lo:hi])
                out[b, 0, i, j] = num / den
            else:
                den = _weights(d, m, kb, counts[lo:hi], w[: hi - lo])
                for c in range(C):
                    out[b, c, i, j] = dot(w[: hi - lo], values[c, lo:hi]) / den
    return out


def pspc_values_posterior_mean(z: Tensor, sigma: Tensor, table: ValueTable) -> Tensor:
    """PSPC-Square with ``P = 1``: ``z [B,C,H,W]`` and ``sigma [B]`` float64 CPU tensors, the
    training set's :func:`value_table` -> the per-pixel posterior means ``[B,C,H,W]`` float64.
    Uses ``torch.get_num_threads()`` threads."""
    if table.offsets.shape[0] != z.shape[2] * z.shape[3] + 1 or table.values.shape[0] != z.shape[1]:
        raise ValueError(
            f"the value table is for {table.values.shape[0]} channels and "
            f"{table.offsets.shape[0] - 1} pixels, but z is {tuple(z.shape)}; build it with "
            "value_table(images) of the same image size"
        )
    zn = z.detach().contiguous().numpy()
    inv2s2 = (0.5 / sigma.square()).contiguous().numpy()
    with torch_threads():
        out = _values_batch(zn, inv2s2, table.offsets, table.values, table.counts)
    return torch.from_numpy(out)
