"""Fused CPU kernel of PSPC-Square (numba): the ``"fused"`` strategy of
:class:`~lightning_pspc.denoisers.pspc.PSPCSquareDenoiser` (docs/reference.md sections 2.3, 2.8).

The torch strategies in :mod:`lightning_pspc.denoisers.pspc` write every
``(noisy image, training image, window)`` logit to memory several times (logits, max, exp, sum,
weighted sum); on a CPU that traffic, not the arithmetic, is the cost. This kernel streams the
training set in blocks of ``BLOCK`` images laid out image-last (``[C, H, W, BLOCK]``), so every step
is a contiguous vector loop over the block that stays in cache:

1. window distances ``d2[l, v] = ||crop_l(z) - crop_l(x_v)||^2`` in float64 from exact
   per-pixel differences and running box sums, streamed row by row (no ``||z||^2 - 2 z.x +
   ||x||^2`` cancellation: the logits ``-d2 / 2 s^2`` of ~1e5 at sigma = 0.002 keep their digits);
2. as soon as a window row is complete (still in cache), per window a running minimum distance
   and the sum of ``exp(-(d2 - min) / 2 s^2)`` (online log-sum-exp); the weights, ``<= 1``
   relative to the minimum, are float32, and those below ``exp(-64)`` are 0 (near the float32
   minimum their products with pixels would be subnormal numbers, which are slow on x86, and at
   small sigma most weights are there);
3. the normalised weights spread onto the pixels each window covers (transposed running box
   sums) and contracted with the block, accumulated in float64.

Four paths (``pspc_fused_sum(path=...)``; ``"auto"`` picks by :func:`choose_path`), each with
its own functions:

* ``"rows"`` (:mod:`.pspc_rows`, auto for patches of at most ``ROWS_MAX_PATCH`` = 81 pixels,
  and for larger ones while an item's training rows fit ``ROWS_STREAM_VALUES``):
  one work item per (noisy image, band of window rows), the training set in chunks of 32
  images held in vector registers; distances and exponentials once, weights kept per band;
* ``"one_pass"`` (:func:`_one_pass`): each noisy image takes one pass over the training set on
  one thread; the block weights are kept (float32, ``N x windows`` per image, bounded by
  ``keep_elements``) and rescaled by the final minimum and sum before the spread;
* ``"one_pass_windows"`` (:func:`_one_pass_windows`, only when forced): one pass, but each window
  keeps its posterior-mean numerator (``P^2`` dot products per window, rescaled when its minimum
  drops): nothing kept or spread; from ``P = 3`` the dot products cost more than the spread;
* ``"two_pass"`` (:func:`_lse_part`, then :func:`_spread_part`): for batches too small to keep
  every thread busy or weights too many to keep, the training set is split into ``parts``; pass
  1 gives each part's log-sum-exp, merged per image, pass 2 recomputes the distances and spreads
  the normalised weights.

:class:`~lightning_pspc.denoisers.pspc.PSPCSquareDenoiser` does not use this kernel for ``1 x 1``
patches: there :mod:`.pspc_values` sums over the distinct training values at each pixel (at most
256 per channel on 8-bit images, whatever ``N``), same exactness scheme.

Memory beyond the kept weights is a few ``H * W * BLOCK`` buffers per thread (:class:`Scratch`),
whatever ``N``.

Exactness: the only float32 steps act on weights in ``[0, 1]`` (the exponential of a float64
argument, relative error < 4e-7 + 6e-8 ``|x|``, i.e. < 3e-8 absolute on a normalised weight);
sums and the contraction are float64. Tests check every path within 1e-5 of the float64
definition (tests/denoisers/test_pspc.py: every sigma from 0.002 to 80, per-position loop).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import Tensor

from . import (
    numba_target,  # first: before any kernel compiles
    pspc_rows,
)

#: Training images per block (the vector length of every inner loop): the longer the block, the
#: more vector work each helper call does per loop set-up.
BLOCK = 512

Path = Literal["auto", "rows", "one_pass", "one_pass_windows", "two_pass"]
PATHS = ("auto", "rows", "one_pass", "one_pass_windows", "two_pass")

_FM = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: +inf marks padding
F32 = np.float32
_LOG2E = F32(1.4426950408889634)
_LN2_HI = F32(0.693359375)  # ln 2 = hi + lo, hi exact in a few bits
_LN2_LO = F32(-2.12194440e-4)
#: Weights below exp(-64) ~ 1.6e-28 (relative to the window's largest, 1) are flushed to 0: a
#: weight near the float32 minimum (exp(-87) ~ 1.6e-38) times a pixel value < 1 is a subnormal
#: number, and subnormal arithmetic is slow on x86 (at small sigma many weights are there).
#: The error, < N * 1.6e-28 on a normalised weight, is far below float32 rounding.
_EXP_CUT = F32(-64.0)
_C = tuple(F32(1.0 / math.factorial(i)) for i in range(8))


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterprets an int32 as a float32 (to build 2**k in the exponential)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterprets an int64 as a float64."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(cache=True, fastmath={"contract", "nsz"}, inline="always")
def exp32(x):
    """``exp(x)`` for float32 ``x <= 0``, 0 below :data:`_EXP_CUT`; vectorisable (a select, no
    branch), relative error < 4e-7 plus the float32 rounding of ``x``: a weight ``w`` is off by
    at most ``w |x| 6e-8 < 2.2e-8``."""
    xc = max(x, _EXP_CUT)
    k = np.floor(xc * _LOG2E + _C[2])  # _C[2] = 0.5: round to nearest
    r = xc - k * _LN2_HI - k * _LN2_LO  # |r| <= ln(2) / 2
    p = _C[7]
    p = p * r + _C[6]
    p = p * r + _C[5]
    p = p * r + _C[4]
    p = p * r + _C[3]
    p = p * r + _C[2]
    p = p * r + _C[1]
    p = p * r + _C[0]
    e = p * _f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
    return e if x >= _EXP_CUT else F32(0.0)


@njit(cache=True, fastmath=_FM)
def _weights(d2, shift, scale, out):
    """``out[v] = exp(-scale * (d2[v] - shift))`` as float32 (argument in float64); returns the
    float64 sum."""
    t = 0.0
    for v in range(d2.shape[0]):
        w = exp32(F32(-scale * (d2[v] - shift)))
        out[v] = w
        t += np.float64(w)
    return t


@njit(cache=True, fastmath=_FM)
def sqdiff(dst, zc, xr):
    for v in range(dst.shape[0]):
        d = zc - xr[v]
        dst[v] = d * d


@njit(cache=True, fastmath=_FM)
def add_sqdiff(dst, zc, xr):
    for v in range(dst.shape[0]):
        d = zc - xr[v]
        dst[v] += d * d


@njit(cache=True, fastmath=_FM)
def _copy(dst, a):
    for v in range(dst.shape[0]):
        dst[v] = a[v]


@njit(cache=True, fastmath=_FM)
def _iadd(dst, a):
    for v in range(dst.shape[0]):
        dst[v] += a[v]


@njit(cache=True, fastmath=_FM)
def _slide(dst, prev, add, sub):
    for v in range(dst.shape[0]):
        dst[v] = prev[v] + (add[v] - sub[v])


@njit(cache=True, fastmath=_FM)
def _scaled(dst, a, f):
    for v in range(dst.shape[0]):
        dst[v] = a[v] * f


@njit(cache=True, fastmath=_FM)
def dot(a, b):
    t = 0.0
    for v in range(a.shape[0]):
        t += a[v] * b[v]
    return t


@njit(cache=True, fastmath=_FM)
def _vertical(hr, hnew, dprev, dcur):
    """Window row update: ``dcur = dprev + hnew - hr`` (``hr``: the sums of the row leaving the
    window), then ``hr = hnew`` (the ring keeps the row entering it)."""
    for v in range(hr.shape[0]):
        h = hnew[v]
        dcur[v] = dprev[v] + (h - hr[v])
        hr[v] = h


@njit(cache=True, fastmath=_FM)
def _slide_vertical(hr, hleft, add, sub, dprev, dcur):
    """Horizontal slide and window row update in one sweep: ``h = hleft + add - sub``,
    ``dcur = dprev + h - hr``, ``hr = h``."""
    for v in range(hr.shape[0]):
        h = hleft[v] + (add[v] - sub[v])
        dcur[v] = dprev[v] + (h - hr[v])
        hr[v] = h


@njit(cache=True, fastmath=_FM)
def _distance_row(zb, xb, i, ph, pw, er, ring, dprev, dcur):
    """Streams image row ``i`` into the window distances of block ``xb [C,H,W,NV]``.

    ``er [W + 1, NV]`` receives the row's squared errors (and a scratch row), ``ring [ph, Lw, NV]``
    keeps the horizontal window sums of the last ``ph`` rows. Returns ``True`` when
    ``dcur [Lw, NV]`` holds the float64 squared distances of window row ``i - ph + 1`` (from
    ``dprev``, the row above, after the first). Exact per-pixel differences, running sums: no
    cancellation of large terms.
    """
    C, H, W = zb.shape
    Lw = W - pw + 1
    for j in range(W):
        sqdiff(er[j], zb[0, i, j], xb[0, i, j])
        for c in range(1, C):
            add_sqdiff(er[j], zb[c, i, j], xb[c, i, j])
    hr = ring[i % ph]
    if i < ph:  # filling the first window row: horizontal sums only
        _copy(hr[0], er[0])
        for dj in range(1, pw):
            _iadd(hr[0], er[dj])
        for lj in range(1, Lw):
            _slide(hr[lj], hr[lj - 1], er[lj + pw - 1], er[lj - 1])
        if i < ph - 1:
            return False
        for lj in range(Lw):
            _copy(dcur[lj], ring[0, lj])
            for r in range(1, ph):
                _iadd(dcur[lj], ring[r, lj])
        return True
    h0 = er[0]
    if pw > 1:
        h0 = er[W]  # scratch row
        _copy(h0, er[0])
        for dj in range(1, pw):
            _iadd(h0, er[dj])
    _vertical(hr[0], h0, dprev[0], dcur[0])
    for lj in range(1, Lw):
        _slide_vertical(hr[lj], hr[lj - 1], er[lj + pw - 1], er[lj - 1], dprev[lj], dcur[lj])
    return True


@njit(cache=True, fastmath=_FM)
def row_min(row):
    """Minimum of a non-empty contiguous float64 row. Non-negative doubles order like their bit
    patterns, so the search runs on the int64 view (vectorised; a float ``min`` loop is not);
    a row with negative entries (running-sum rounding, ~1e-16) takes the float loop."""
    bits = row.view(np.int64)
    mb = bits[0]
    for v in range(1, bits.shape[0]):
        b = bits[v]
        mb = b if b < mb else mb
    if mb >= 0:
        return _f64_from_bits(mb)
    m = row[0]
    for v in range(1, row.shape[0]):
        m = min(m, row[v])
    return m


@njit(cache=True, fastmath=_FM)
def _lse_row(drow, valid, kb, m, den, ref, w):
    """One window row of a block into the per-window online log-sum-exp: updates the running
    minimum distance ``m [Lw]`` and sum ``den`` (rescaled when the minimum drops) and writes the
    float32 weights ``w [Lw, NV]`` relative to the minimum at that time, kept in ``ref``; lanes
    ``>= valid`` (padding) get weight 0."""
    nv = drow.shape[1]
    for lj in range(drow.shape[0]):
        row = drow[lj, :valid]
        mb = min(m[lj], row_min(row))
        if mb < m[lj]:
            if den[lj] > 0.0:
                den[lj] *= math.exp(-kb * (m[lj] - mb))
            m[lj] = mb
        ref[lj] = mb
        den[lj] += _weights(row, mb, kb, w[lj, :valid])
        for v in range(valid, nv):
            w[lj, v] = 0.0


@njit(cache=True, fastmath=_FM)
def _weight_row(drow, valid, kb, shift, w):
    """Weights ``exp(-kb (d2 - shift))`` of one window row (final shifts known), 0 for padding."""
    nv = drow.shape[1]
    for lj in range(drow.shape[0]):
        _weights(drow[lj, :valid], shift[lj], kb, w[lj, :valid])
        for v in range(valid, nv):
            w[lj, v] = 0.0


class Scratch(NamedTuple):
    """Per-thread buffers of one noisy image's pass over the blocks (``NV`` lanes each).

    ``er [W + 1, NV]``: squared errors of one image row (and a scratch row); ``ring [ph, Lw, NV]``:
    horizontal window sums of the last ``ph`` rows; ``dbuf [2, Lw, NV]``: two window rows of
    distances (the current one and the one above); ``g [Lw + 1, NV]``, ``s [NV]``: running sums
    of the spread (:func:`_block_spread`).
    """

    er: np.ndarray
    ring: np.ndarray
    dbuf: np.ndarray
    g: np.ndarray
    s: np.ndarray


@njit(cache=True)
def _scratch(W, ph, pw, nv):
    Lw = W - pw + 1
    return Scratch(
        np.empty((W + 1, nv)),
        np.empty((ph, Lw, nv)),
        np.empty((2, Lw, nv)),
        np.empty((Lw + 1, nv)),
        np.empty(nv),
    )


@njit(cache=True, fastmath=_FM)
def _next_window_row(zb, xb, i, ph, pw, sc):
    """Streams image row ``i`` of block ``xb``; returns the window row ``li`` it completes, whose
    distances are then in ``sc.dbuf[li % 2]``, or -1 while the first window row fills."""
    li = i - ph + 1
    cur = li % 2 if li >= 0 else 0
    if _distance_row(zb, xb, i, ph, pw, sc.er, sc.ring, sc.dbuf[1 - cur], sc.dbuf[cur]):
        return li
    return -1


@njit(cache=True, fastmath=_FM)
def _lse_block(zb, xb, valid, kb, ph, pw, sc, m, den, ref, w):
    """Pass 1 over one block: the online log-sum-exp of every window into the running minimum
    ``m`` and sum ``den [Lh, Lw]`` (:func:`_lse_row`), with the float32 weights ``w [Lh, Lw, NV]``
    relative to the minimum at the time, kept in ``ref [Lh, Lw]``."""
    valid = min(valid, xb.shape[3])
    for i in range(zb.shape[1]):
        li = _next_window_row(zb, xb, i, ph, pw, sc)
        if li >= 0:
            _lse_row(sc.dbuf[li % 2], valid, kb, m[li], den[li], ref[li], w[li])


@njit(cache=True, fastmath=_FM)
def _weight_block(zb, xb, valid, kb, ph, pw, sc, shift, w):
    """Pass 2 over one block: the normalised weights ``w = exp(-kb (d2 - shift))`` (``shift
    [Lh, Lw]``: the final minimum minus the log of the sum, over the whole training set)."""
    valid = min(valid, xb.shape[3])
    for i in range(zb.shape[1]):
        li = _next_window_row(zb, xb, i, ph, pw, sc)
        if li >= 0:
            _weight_row(sc.dbuf[li % 2], valid, kb, shift[li], w[li])


@njit(cache=True, fastmath=_FM)
def _iadd_scaled(dst, a, f):
    for v in range(dst.shape[0]):
        dst[v] += a[v] * f


@njit(cache=True, fastmath=_FM)
def _step_dot(s, add, sub, x):
    """``s += add - sub`` and returns ``s . x``."""
    t = 0.0
    for v in range(s.shape[0]):
        sv = s[v] + (add[v] - sub[v])
        s[v] = sv
        t += sv * x[v]
    return t


@njit(cache=True, fastmath=_FM)
def _step(s, add, sub):
    for v in range(s.shape[0]):
        s[v] += add[v] - sub[v]


@njit(cache=True, fastmath=_FM)
def _block_spread(w, f, xb, ph, pw, g, s, acc):
    """``acc[c,i,j] += sum_v xb[c,i,j,v] * sum_{windows l covering (i,j)} f[l] w[l, v]``.

    ``g [Lw + 1, NV]``: running sums over the window rows covering the image row (``g[Lw]`` is
    kept zero), ``s [NV]``: the running sum of ``g`` over the window columns covering the pixel.
    """
    C, H, W = acc.shape
    Lh, Lw = H - ph + 1, W - pw + 1
    zero = g[Lw]
    zero[:] = 0.0
    for i in range(H):
        if i == 0:
            for lj in range(Lw):
                _scaled(g[lj], w[0, lj], f[0, lj])
        else:
            if i < Lh:
                for lj in range(Lw):
                    _iadd_scaled(g[lj], w[i, lj], f[i, lj])
            if i >= ph:
                for lj in range(Lw):
                    _iadd_scaled(g[lj], w[i - ph, lj], -f[i - ph, lj])
        s[:] = 0.0
        for j in range(W):
            add = g[j] if j < Lw else zero
            sub = g[j - pw] if j >= pw else zero
            if C == 1:
                acc[0, i, j] += _step_dot(s, add, sub, xb[0, i, j])
            else:
                _step(s, add, sub)
                for c in range(C):
                    acc[c, i, j] += dot(s, xb[c, i, j])


@njit(cache=True, fastmath=_FM)
def _one_pass(zb, kb, xblocks, n_valid, ph, pw, acc):
    """Whole training set for one noisy image, distances computed once: block weights are kept
    (float32, relative to the running minimum at the time) and rescaled at the end."""
    C, H, W = zb.shape
    nblk, nv = xblocks.shape[0], xblocks.shape[4]
    Lh, Lw = H - ph + 1, W - pw + 1
    sc = _scratch(W, ph, pw, nv)
    kept = np.empty((nblk, Lh, Lw, nv), dtype=np.float32)
    ref = np.empty((nblk, Lh, Lw))
    m = np.full((Lh, Lw), np.inf)
    den = np.zeros((Lh, Lw))
    for blk in range(nblk):
        _lse_block(
            zb, xblocks[blk], n_valid - blk * nv, kb, ph, pw, sc, m, den, ref[blk], kept[blk]
        )
    f = np.empty((Lh, Lw))
    for blk in range(nblk):
        for li in range(Lh):
            for lj in range(Lw):
                f[li, lj] = math.exp(-kb * (ref[blk, li, lj] - m[li, lj])) / den[li, lj]
        _block_spread(kept[blk], f, xblocks[blk], ph, pw, sc.g, sc.s, acc)


@njit(cache=True, fastmath=_FM)
def _one_pass_windows(zb, kb, xblocks, n_valid, ph, pw, acc):
    """:func:`_one_pass` for small patches: each window
    keeps its posterior-mean numerator ``num [C, ph, pw]`` (float64, rescaled when its minimum
    drops), so no weights are kept and nothing is spread: ``ph * pw`` dot products per window
    instead."""
    C, H, W = zb.shape
    nblk, nv = xblocks.shape[0], xblocks.shape[4]
    Lh, Lw = H - ph + 1, W - pw + 1
    sc = _scratch(W, ph, pw, nv)
    w = np.empty((Lw, nv), dtype=np.float32)
    m = np.full((Lh, Lw), np.inf)
    den = np.zeros((Lh, Lw))
    ref, before = np.empty(Lw), np.empty(Lw)
    num = np.zeros((Lh, Lw, C, ph, pw))
    for blk in range(nblk):
        xb = xblocks[blk]
        valid = min(n_valid - blk * nv, nv)
        for i in range(H):
            li = _next_window_row(zb, xb, i, ph, pw, sc)
            if li < 0:
                continue
            before[:] = m[li]
            _lse_row(sc.dbuf[li % 2], valid, kb, m[li], den[li], ref, w)
            for lj in range(Lw):
                if ref[lj] < before[lj] and before[lj] < np.inf:  # the minimum dropped
                    num[li, lj] *= math.exp(-kb * (before[lj] - ref[lj]))
                for c in range(C):
                    for di in range(ph):
                        for dj in range(pw):
                            num[li, lj, c, di, dj] += dot(w[lj], xb[c, li + di, lj + dj])
    for li in range(Lh):
        for lj in range(Lw):
            inv = 1.0 / den[li, lj]
            for c in range(C):
                for di in range(ph):
                    for dj in range(pw):
                        acc[c, li + di, lj + dj] += num[li, lj, c, di, dj] * inv


@njit(cache=True, fastmath=_FM)
def _lse_part(zb, kb, xblocks, n_valid, ph, pw, first, stop, m, den):
    """Two-pass path, pass 1: the online log-sum-exp of blocks ``first:stop`` (a part of the
    training set) into ``m``, ``den [Lh, Lw]``; the weights are not kept."""
    C, H, W = zb.shape
    nv = xblocks.shape[4]
    Lh, Lw = H - ph + 1, W - pw + 1
    sc = _scratch(W, ph, pw, nv)
    w = np.empty((Lh, Lw, nv), dtype=np.float32)
    ref = np.empty((Lh, Lw))
    for blk in range(first, stop):
        _lse_block(zb, xblocks[blk], n_valid - blk * nv, kb, ph, pw, sc, m, den, ref, w)


@njit(cache=True, fastmath=_FM)
def _spread_part(zb, kb, xblocks, n_valid, ph, pw, first, stop, shift, acc):
    """Two-pass path, pass 2: the normalised weights of blocks ``first:stop`` (distances
    recomputed) spread onto ``acc [C, H, W]``."""
    C, H, W = zb.shape
    nv = xblocks.shape[4]
    Lh, Lw = H - ph + 1, W - pw + 1
    sc = _scratch(W, ph, pw, nv)
    w = np.empty((Lh, Lw, nv), dtype=np.float32)
    ones = np.ones((Lh, Lw))
    for blk in range(first, stop):
        xb = xblocks[blk]
        _weight_block(zb, xb, n_valid - blk * nv, kb, ph, pw, sc, shift, w)
        _block_spread(w, ones, xb, ph, pw, sc.g, sc.s, acc)


@njit(cache=True, parallel=True, fastmath=_FM)
def _one_pass_batch(z, inv2s2, xblocks, n_valid, ph, pw, windows):
    """One pass per noisy image (one thread each): :func:`_one_pass_windows` when ``windows``,
    else :func:`_one_pass`. ``z [B,C,H,W]`` float64, ``inv2s2 [B] = 1 / (2 sigma^2)``,
    ``xblocks [nblk, C, H, W, NV]`` float32 (the first ``n_valid`` images are real) ->
    ``[B, C, H, W]``: the sum over covering windows of the window posterior means."""
    out = np.zeros(z.shape)
    for b in prange(z.shape[0]):
        if windows:
            _one_pass_windows(z[b], inv2s2[b], xblocks, n_valid, ph, pw, out[b])
        else:
            _one_pass(z[b], inv2s2[b], xblocks, n_valid, ph, pw, out[b])
    return out


@njit(cache=True, parallel=True, fastmath=_FM)
def _two_pass_batch(z, inv2s2, xblocks, n_valid, ph, pw, parts):
    """:func:`_one_pass_batch` in two passes over ``B * parts`` work items, each a part of the
    training set: per-part log-sum-exps (:func:`_lse_part`), merged into the final shifts, then
    the normalised weights spread (:func:`_spread_part`) and the parts summed."""
    B, C, H, W = z.shape
    nblk = xblocks.shape[0]
    Lh, Lw = H - ph + 1, W - pw + 1
    per_part = (nblk + parts - 1) // parts
    mins = np.full((B, parts, Lh, Lw), np.inf)
    sums = np.zeros((B, parts, Lh, Lw))
    for item in prange(B * parts):
        b, part = item // parts, item % parts
        first, stop = part * per_part, min(nblk, (part + 1) * per_part)
        _lse_part(
            z[b], inv2s2[b], xblocks, n_valid, ph, pw, first, stop, mins[b, part], sums[b, part]
        )
    # merge the parts: weights become exp(-k (d2 - shift)) = exp(-k (d2 - min)) / sum
    shift = np.empty((B, Lh, Lw))
    for b in range(B):
        kb = inv2s2[b]
        for li in range(Lh):
            for lj in range(Lw):
                mm = np.inf
                for part in range(parts):
                    mm = min(mm, mins[b, part, li, lj])
                tot = 0.0
                for part in range(parts):
                    if sums[b, part, li, lj] > 0.0:
                        tot += sums[b, part, li, lj] * math.exp(-kb * (mins[b, part, li, lj] - mm))
                shift[b, li, lj] = mm - math.log(tot) / kb
    partial = np.zeros((B, parts, C, H, W))
    for item in prange(B * parts):
        b, part = item // parts, item % parts
        first, stop = part * per_part, min(nblk, (part + 1) * per_part)
        _spread_part(
            z[b], inv2s2[b], xblocks, n_valid, ph, pw, first, stop, shift[b], partial[b, part]
        )
    out = np.zeros((B, C, H, W))
    for b in range(B):
        for part in range(parts):
            out[b] += partial[b, part]
    return out


def to_blocks(images: Tensor, block: int | None = None) -> np.ndarray:
    """``[N, C, H, W]`` -> ``[ceil(N / block), C, H, W, block]`` float32 numpy (zero padded);
    ``block`` defaults to :data:`BLOCK`."""
    return pspc_rows.image_last(images, BLOCK if block is None else block, 0.0)


class TrainingLayout:
    """The training set ``[N, C, H, W]`` in the kernels' layouts, each built on first use:
    :attr:`blocks` (:func:`to_blocks`, the one- and two-pass paths) and :attr:`lanes`
    (:func:`.pspc_rows.to_lanes`, the rows path). ``block``: images per block (default
    :data:`BLOCK`)."""

    def __init__(self, images: Tensor, block: int | None = None) -> None:
        self.images = images.detach().to("cpu", torch.float32)
        self.num_images, self.block = images.shape[0], BLOCK if block is None else block

    @functools.cached_property
    def blocks(self) -> np.ndarray:
        return to_blocks(self.images, self.block)

    @functools.cached_property
    def lanes(self) -> np.ndarray:
        return pspc_rows.to_lanes(self.images)


def choose_path(
    batch: int,
    threads: int,
    nblk: int,
    nv: int,
    ph: int,
    pw: int,
    windows: int,
    keep_elements: int,
    row_windows: int,
    channels: int = 1,
) -> tuple[Path, int]:
    """The path ``"auto"`` takes, and its number of parts (0 for the one-pass and rows paths).

    Patches of at most ``ROWS_MAX_PATCH`` pixels, and larger ones whose work items read at most
    ``ROWS_STREAM_VALUES`` training values (``N x (ROWS_PER_ITEM + ph - 1) x channels x W``),
    take the rows path (any batch: its work items are window rows) when the kept weights of one
    window row, ``N x row_windows`` (``W - pw + 1`` windows in a row), are at most
    ``keep_elements`` (it keeps a band of rows per thread, as many as fit,
    :func:`.pspc_rows.auto_rows_per_item`). Otherwise one pass per image, which
    needs a batch of at least ``4 x threads`` images (every thread busy) and at most
    ``keep_elements`` kept weights per image (``N x windows``); else two passes, the training
    set split into parts so that there are at least ``4 x threads`` work items.
    """
    stream = nblk * nv * (pspc_rows.ROWS_PER_ITEM + ph - 1) * channels * (row_windows + pw - 1)
    small = ph * pw <= pspc_rows.ROWS_MAX_PATCH or stream <= pspc_rows.ROWS_STREAM_VALUES
    if small and nblk * nv * row_windows <= keep_elements:
        return "rows", 0
    if batch >= 4 * threads and nblk * nv * windows <= keep_elements:
        return "one_pass", 0
    return "two_pass", _auto_parts(batch, threads, nblk)


def _auto_parts(batch: int, threads: int, nblk: int) -> int:
    """Parts of the training set for at least ``4 x threads`` work items (at most one per block)."""
    return max(1, min(nblk, -(-4 * threads // batch)))


def pspc_fused_sum(
    z: Tensor,
    sigma: Tensor,
    layout: TrainingLayout,
    ph: int,
    pw: int,
    keep_elements: int = 2**23,
    path: Path = "auto",
    parts: int | None = None,
) -> Tensor:
    """Sum over covering windows of the window posterior means (divide by the cover count).

    ``z [B,C,H,W]`` and ``sigma [B]`` float64 CPU tensors, ``layout`` the training set.
    Uses ``torch.get_num_threads()`` threads. ``path="auto"`` picks by :func:`choose_path`;
    ``"rows"``, ``"one_pass"``, ``"one_pass_windows"`` or ``"two_pass"`` (with ``parts`` parts
    of the training set, default as auto) force one (the one-pass paths then ignore
    ``keep_elements``; the rows path keeps one window row per item when even that exceeds it).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    b = z.shape[0]
    n_valid, nv = layout.num_images, layout.block
    nblk = -(-n_valid // nv)
    row_windows = z.shape[3] - pw + 1
    windows = (z.shape[2] - ph + 1) * row_windows
    zn = z.detach().contiguous().numpy()
    inv2s2 = (0.5 / sigma.square()).contiguous().numpy()
    with numba_target.torch_threads() as threads:
        auto_path, auto_parts = choose_path(
            b, threads, nblk, nv, ph, pw, windows, keep_elements, row_windows, z.shape[1]
        )
        if path == "auto":
            path, parts = auto_path, auto_parts
        elif path == "two_pass":
            parts = max(1, min(nblk, parts or _auto_parts(b, threads, nblk)))
        if path == "rows":
            out = pspc_rows.pspc_rows_sum(zn, inv2s2, layout.lanes, ph, pw, threads, keep_elements)
        elif path == "two_pass":
            out = _two_pass_batch(zn, inv2s2, layout.blocks, n_valid, ph, pw, parts)
        else:
            windows_path = path == "one_pass_windows"
            out = _one_pass_batch(zn, inv2s2, layout.blocks, n_valid, ph, pw, windows_path)
    return torch.from_numpy(out)
