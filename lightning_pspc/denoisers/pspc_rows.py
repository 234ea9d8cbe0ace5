"""Window-row CPU kernel of PSPC-Square (numba): the ``"rows"`` path of
:func:`.pspc_cpu.pspc_fused_sum`, auto for small patches (:data:`ROWS_MAX_PATCH`).

A work item is one noisy image and one row ``li`` of window positions; items run in parallel
(``B x (H - P + 1)`` of them, so a batch of one keeps every thread busy). The training set is
laid out in chunks of :data:`~.simd.LANES` images, image-last (:func:`to_lanes`), and every step
works on one chunk in vector registers (:mod:`.simd`), not on arrays in memory:

1. **Pass 1** (:func:`_row_lse`), per chunk, column by column: the column sums of squared
   differences over the ``P`` image rows of the window row, in float64 from exact per-pixel
   differences, and from them the window distance ``d`` (running sum over the last ``P``
   columns). Each window keeps a reference distance ``ref`` (the smallest seen, updated only
   when a distance falls more than ``T_DROP / k`` below it, ``k = 1 / 2 sigma^2``) and
   accumulates ``exp(k (ref - d))`` per lane (float32, flushed to float64 every
   :data:`FLUSH` chunks). These weights, ``<= e^T_DROP``, are kept (float32, ``N x (W - P + 1)``
   per item) with the reference they were taken against; windows whose weights are all below
   ``e^CUT`` keep nothing.
2. **Pass 2** (:func:`_row_spread`), per chunk: the kept weights times
   ``exp(-k (ref_then - ref_final)) / sum`` are the normalised weights; per image column the
   sum of the weights of the windows covering it (at most ``P``, summed directly) times the
   training pixels of the ``P`` rows is accumulated (float32 per lane, flushed to float64).
   Columns no live window covers are skipped, so at small sigma pass 2 costs almost nothing.

Exactness: distances are float64 sums of exact float64 differences; the only float32 steps act
on weights (the exponential, relative error < 4e-7, :func:`.simd.exp_weights`) and on partial
sums of at most ``FLUSH`` chunks per lane. Results match the float64 definition to ~1e-7
(tests/denoisers/test_pspc.py, every sigma from 0.002 to 80).

Cost: pass 1 is ``P`` pixel terms and one exponential per (window, training image), pass 2
``P`` multiply-adds; per (noisy image, training image, pixel) 2.5 ns for ``P = 3`` on one core
of the development machine against 4.1-4.4 ns for :func:`.pspc_cpu._one_pass`. The column sums
grow with ``P`` (the one-pass path's running sums do not), so from ``P = 7`` the one-pass path
is faster (:func:`.pspc_cpu.choose_path`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from . import numba_target  # noqa: F401  (before any kernel compiles)
from .simd import (
    LANES,
    any_ge,
    any_gt,
    exp_weights,
    hmin,
    hsum,
    load,
    splat32,
    splat64,
    store,
    widen,
)

_FM = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: +inf marks an unset reference
#: Patches of at most this many pixels take the ``"rows"`` path under ``"auto"`` (measured,
#: one core, N = 2,000, sigma = 3, ns per pixel pair, rows vs one-pass: P = 3 2.5 vs 4.2,
#: P = 5 4.5 vs 4.6, P = 7 3.9 vs 3.7, P = 15 4.2 vs 2.4).
ROWS_MAX_PATCH = 25
#: A window's reference distance drops when a weight would exceed ``e^T_DROP`` (float32 holds
#: ``N e^T_DROP`` easily); the larger, the rarer the (scalar) rescaling.
T_DROP = 32.0
#: Weights below ``e^CUT`` relative to the reference are 0 (never subnormal numbers).
CUT = -64.0
#: Chunks summed per lane in float32 before a float64 flush.
FLUSH = 8
#: Value of the lanes padding the last chunk: distances ~1e30, so their weights are 0.
PAD = 1e15


def to_lanes(images: Tensor) -> np.ndarray:
    """``[N, C, H, W]`` -> flat float32 ``[ceil(N / LANES), C, H, W, LANES]`` (padded with
    :data:`PAD`)."""
    n, c, h, w = images.shape
    nch = -(-n // LANES)
    x = images.detach().to("cpu", torch.float32)
    if nch * LANES != n:
        x = torch.cat([x, x.new_full((nch * LANES - n, c, h, w), PAD)])
    return x.view(nch, LANES, c, h, w).permute(0, 2, 3, 4, 1).contiguous().view(-1).numpy()


@njit(cache=True, fastmath=_FM, inline="always")
def _column(zf, xf, base, C, H, W, li, ph, j):
    """Sum over the ``ph`` rows from ``li`` (and channels) of image column ``j`` of the squared
    differences ``(z - x)^2``, per lane (float64)."""
    s = splat64(0.0)
    for c in range(C):
        for di in range(ph):
            p = (c * H + li + di) * W + j
            e = splat64(zf[p]) - widen(load(xf, base + p * LANES))
            s = s + e * e
    return s


@njit(cache=True, fastmath=_FM)
def _row_lse(zf, k, xf, nch, C, H, W, li, ph, pw, ring, ref, den, den32, kept, ref_at):
    """Pass 1 of window row ``li`` for one noisy image ``zf`` (flat ``[C*H*W]`` float64, ``k =
    1 / 2 sigma^2``) over the ``nch`` chunks of ``xf``: ``ref [Lw]`` and ``den [Lw * LANES]``
    (float64) become each window's reference distance and the per-lane sums of ``exp(k (ref -
    d))``; ``kept [nch * Lw * LANES]`` gets the float32 weights against ``ref_at [nch * Lw]``,
    the reference at the time (+inf where all were below ``e^CUT``, nothing kept).
    ``ring [pw * LANES]``: the last ``pw`` column sums."""
    L = LANES
    chunk = C * H * W * L
    Lw = W - pw + 1
    for ch in range(nch):
        base = ch * chunk
        d = splat64(0.0)
        slot = 0
        for j in range(W):
            s = _column(zf, xf, base, C, H, W, li, ph, j)
            if j >= pw:
                d = d + (s - load(ring, slot))
            else:
                d = d + s
            store(ring, slot, s)
            slot = slot + L if slot + L < pw * L else 0
            if j < pw - 1:
                continue
            lj = j - pw + 1
            o = lj * L
            r = ref[lj]
            t = splat64(k * r) - splat64(k) * d
            if any_gt(t, T_DROP):  # new reference: rescale what was summed against the old
                m = hmin(d)
                f = math.exp(-k * (r - m)) if r < np.inf else 0.0
                store(den, o, (load(den, o) + widen(load(den32, o))) * splat64(f))
                store(den32, o, splat32(0.0))
                ref[lj] = r = m
                t = splat64(k * m) - splat64(k) * d
            kidx = ch * Lw + lj
            if any_ge(t, CUT):
                w = exp_weights(t, CUT)
                store(kept, kidx * L, w)
                store(den32, o, load(den32, o) + w)
                ref_at[kidx] = r
            else:
                ref_at[kidx] = np.inf
        if (ch + 1) % FLUSH == 0 or ch == nch - 1:
            for o in range(0, Lw * L, L):
                store(den, o, load(den, o) + widen(load(den32, o)))
                store(den32, o, splat32(0.0))


@njit(cache=True, fastmath=_FM, inline="always")
def _spread_column(xf, base, C, H, W, li, ph, pw, Lw, wrow, jc, acc):
    """``acc[c, di, jc] += g * x[c, li + di, jc]`` with ``g`` the sum of the weights ``wrow`` of
    the windows covering image column ``jc``."""
    L = LANES
    lo = max(0, jc - pw + 1)
    g = load(wrow, lo * L)
    for m in range(lo + 1, min(jc, Lw - 1) + 1):
        g = g + load(wrow, m * L)
    for c in range(C):
        for di in range(ph):
            p = (c * H + li + di) * W + jc
            o = ((c * ph + di) * W + jc) * L
            store(acc, o, load(acc, o) + g * load(xf, base + p * L))


@njit(cache=True, fastmath=_FM)
def _row_spread(k, xf, nch, C, H, W, li, ph, pw, kept, ref_at, ref, den, wrow, acc, acc64):
    """Pass 2 of window row ``li``: the kept weights normalised (``ref``, ``den`` from pass 1)
    and spread onto ``acc64 [C, ph, W, LANES]`` (the ``ph`` image rows from ``li``; ``acc``:
    the float32 partial sums, ``wrow [Lw * LANES]``: one chunk's normalised weights)."""
    L = LANES
    chunk = C * H * W * L
    Lw = W - pw + 1
    inv = np.empty(Lw)
    for lj in range(Lw):
        inv[lj] = 1.0 / hsum(load(den, lj * L))
    seen = np.full(Lw, np.nan)  # the reference of the cached factor
    factor = np.zeros(Lw)
    for ch in range(nch):
        base = ch * chunk
        last = -W  # the last live window of this chunk
        for lj in range(Lw):
            kidx = ch * Lw + lj
            ra = ref_at[kidx]
            if ra < np.inf:
                if ra != seen[lj]:
                    seen[lj] = ra
                    factor[lj] = math.exp(-k * (ra - ref[lj])) * inv[lj]
                store(wrow, lj * L, load(kept, kidx * L) * splat32(factor[lj]))
                last = lj
            else:
                store(wrow, lj * L, splat32(0.0))
            if last >= lj - pw + 1:
                _spread_column(xf, base, C, H, W, li, ph, pw, Lw, wrow, lj, acc)
        for jc in range(Lw, W):
            if last >= jc - pw + 1:
                _spread_column(xf, base, C, H, W, li, ph, pw, Lw, wrow, jc, acc)
        if (ch + 1) % FLUSH == 0 or ch == nch - 1:
            for o in range(0, acc.shape[0], L):
                store(acc64, o, load(acc64, o) + widen(load(acc, o)))
                store(acc, o, splat32(0.0))


@njit(cache=True, parallel=True, fastmath=_FM)
def _rows_batch(z, inv2s2, xf, nch, ph, pw):
    """``z [B,C,H,W]`` float64, ``inv2s2 [B] = 1 / (2 sigma^2)``, ``xf`` from :func:`to_lanes`
    (``nch`` chunks) -> ``[B,C,H,W]``: the sum over covering windows of the window posterior
    means. One work item per (noisy image, window row)."""
    L = LANES
    B, C, H, W = z.shape
    Lh, Lw = H - ph + 1, W - pw + 1
    zflat = z.reshape(B, C * H * W)
    part = np.zeros((B, Lh, C, ph, W))
    for item in prange(B * Lh):
        b, li = item // Lh, item % Lh
        k = inv2s2[b]
        ref = np.full(Lw, np.inf)
        den = np.zeros(Lw * L)
        kept = np.empty(nch * Lw * L, dtype=np.float32)
        ref_at = np.empty(nch * Lw)
        _row_lse(
            zflat[b],
            k,
            xf,
            nch,
            C,
            H,
            W,
            li,
            ph,
            pw,
            np.empty(pw * L),
            ref,
            den,
            np.zeros(Lw * L, dtype=np.float32),
            kept,
            ref_at,
        )
        acc64 = np.zeros(C * ph * W * L)
        _row_spread(
            k,
            xf,
            nch,
            C,
            H,
            W,
            li,
            ph,
            pw,
            kept,
            ref_at,
            ref,
            den,
            np.empty(Lw * L, dtype=np.float32),
            np.zeros(C * ph * W * L, dtype=np.float32),
            acc64,
        )
        for c in range(C):
            for di in range(ph):
                for j in range(W):
                    part[b, li, c, di, j] = hsum(load(acc64, ((c * ph + di) * W + j) * L))
    out = np.zeros((B, C, H, W))
    for b in range(B):
        for li in range(Lh):
            for c in range(C):
                for di in range(ph):
                    for j in range(W):
                        out[b, c, li + di, j] += part[b, li, c, di, j]
    return out


def pspc_rows_sum(
    z: np.ndarray, inv2s2: np.ndarray, lanes: np.ndarray, ph: int, pw: int
) -> np.ndarray:
    """:func:`_rows_batch` for ``z [B,C,H,W]`` float64 numpy and ``lanes`` from
    :func:`to_lanes` of images of the same ``C, H, W``."""
    b, c, h, w = z.shape
    nch = lanes.shape[0] // (c * h * w * LANES)
    if nch * c * h * w * LANES != lanes.shape[0]:
        raise ValueError(
            f"lanes of {lanes.shape[0]} values do not hold images of shape {(c, h, w)}"
        )
    return _rows_batch(np.ascontiguousarray(z), np.ascontiguousarray(inv2s2), lanes, nch, ph, pw)
