"""Window-row CPU kernel of PSPC-Square (numba): the ``"rows"`` path of
:func:`.pspc_cpu.pspc_fused_sum`, chosen under ``"auto"`` for patches of at most
:data:`ROWS_MAX_PATCH` pixels, and for larger ones while the training rows a work item reads stay
in cache (:data:`ROWS_STREAM_VALUES`). The maths is docs/reference.md sections 2.3 and 2.8.

A work item is one noisy image and a band of up to :data:`ROWS_PER_ITEM` consecutive rows of
window positions; the ``B x bands`` items run in parallel, band-major, so that consecutive items
of a thread read the same training rows while they are in cache. Bands split the rows evenly,
larger and smaller ones alternating (:func:`band_order`), so that the threads get equal work; a
band shrinks until there are ``4 x threads`` items and its kept weights fit in ``keep_elements``
(:func:`auto_rows_per_item`). The training set is laid out in chunks of :data:`~.simd.LANES`
images, image index last (:func:`to_lanes`); every step works on one chunk in vector registers
(:mod:`.simd`), and its vector buffers start at a 64-byte boundary (:func:`_empty64`; numba
aligns to 32 bytes only, which makes 64-byte vector loads straddle two cache lines).

1. **Pass 1**, per chunk and window row of the band: the column sums of squared differences over
   the ``P`` image rows of the window row (:func:`_columns`: float64 from exact differences,
   summed for the band's first row, then updated from the row above with two pixel terms per
   column whatever ``P``), and from them the window distances ``d`` as running sums over ``P``
   columns (:func:`_row_lse`). Each window keeps a reference distance ``ref`` (the smallest seen,
   moved only when a distance falls more than ``T_DROP / k`` below it, ``k = 1 / 2 sigma^2``),
   sums ``exp(k (ref - d))`` per lane and keeps these float32 weights, ``<= e^T_DROP``, with the
   reference they were taken against (``band x N x (W - P + 1)`` per item; windows whose weights
   are all below ``e^CUT`` keep nothing).
2. **Pass 2**, per chunk: the kept weights times ``exp(-k (ref_then - ref_final)) / sum`` are the
   normalised weights, in place, those below :data:`TINY` set to 0 (:func:`_normalize_row`).
   :func:`_sweep` then forms ``G``, the sum of the normalised weights of the windows covering
   each image pixel, as two running sums (down each window column, then along the image row), and
   each pixel adds ``G`` times its training pixels. Only the chunk's live windows and the image
   rows they cover are swept, so at small sigma pass 2 costs almost nothing.

Exactness: distances, column and window sums are float64 from exact differences; the float32
steps act on weights and partial sums only: the exponent ``t = k (ref - d) <= T_DROP`` rounded to
float32 (relative error ``|t| x 6e-8`` on a weight, at most 5e-7 within ``e^T_DROP`` of the
reference), the exponential (< 4e-7, :func:`.simd.exp_weights`), the running covering sums of
weights ``<= 1``, and per-lane sums of at most :data:`FLUSH` chunks before a float64 flush. Tests
check the result within 1e-5 of the float64 definition on the same training values at every
sigma from 0.002 to 80 (tests/denoisers/test_pspc.py).

Cost per (window, training image): about ``2 + 2 / band`` pixel terms and one exponential in
pass 1, a few running-sum terms and one multiply-add per image pixel in pass 2; the kernel is bound
by vector arithmetic, not memory (timings: ``benchmarks/denoisers.py``, docs/benchmarks.md).
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
    flush_below,
    hmin,
    hsum,
    load,
    narrow,
    splat32,
    splat64,
    store,
    widen,
)

_FM = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: +inf marks an unset reference
#: Patches of at most this many pixels (up to 9 x 9) take the ``"rows"`` path under ``"auto"``,
#: where it is faster than the block kernel (:func:`.pspc_cpu._one_pass`); larger ones while the
#: training rows one work item reads, ``N x (ROWS_PER_ITEM + P - 1) x C x W`` values, are at most
#: :data:`ROWS_STREAM_VALUES`.
ROWS_MAX_PATCH = 81
#: Training values one work item may read for a patch above :data:`ROWS_MAX_PATCH` to take the
#: ``"rows"`` path: while they stay in the last-level cache the rows path is the faster one for
#: large patches too; beyond, the block kernel (:func:`.pspc_cpu._one_pass`) can be faster.
ROWS_STREAM_VALUES = 2**21
#: A window's reference distance drops when a weight would exceed ``e^T_DROP``: the larger, the
#: rarer the (scalar) rescaling, but the exponent is rounded to float32, an error of
#: ``T_DROP x 6e-8`` relative on the largest weights (5e-7 at 8).
T_DROP = 8.0
#: Weights below ``e^CUT`` relative to the reference are 0 (never subnormal numbers).
CUT = -64.0
#: Window rows per work item: the column sums of one row are updated from the row above (two
#: pixel terms per column instead of ``P``), and an item reads ``band + P - 1`` training rows
#: for ``band`` window rows, while ``B x rows / ROWS_PER_ITEM`` items keep every thread busy.
#: Larger bands amortise the ``P - 1`` extra rows better but keep more weights per item.
ROWS_PER_ITEM = 8
#: Normalised weights below this are 0 in pass 2: kept weights down to ``e^CUT`` against a
#: reference up to ``e^T_DROP`` below the largest would otherwise become subnormal numbers,
#: whose products are slow on x86 (docs/reference.md section 2.8).
TINY = math.exp(CUT)
#: Chunks summed per lane in float32 before a float64 flush.
FLUSH = 8
#: Value of the lanes padding the last chunk: distances ~1e30, so their weights are 0.
PAD = 1e15


def image_last(images: Tensor, group: int, pad: float) -> np.ndarray:
    """``[N, C, H, W]`` -> float32 numpy ``[ceil(N / group), C, H, W, group]``: the training set
    in groups of ``group`` images, image index last (the kernels' vector lanes); the last group
    padded with images of value ``pad``."""
    n, c, h, w = images.shape
    ng = -(-n // group)
    x = images.detach().to("cpu", torch.float32)
    if ng * group != n:
        x = torch.cat([x, x.new_full((ng * group - n, c, h, w), pad)])
    return x.view(ng, group, c, h, w).permute(0, 2, 3, 4, 1).contiguous().numpy()


def to_lanes(images: Tensor) -> np.ndarray:
    """``[N, C, H, W]`` -> flat float32 ``[ceil(N / LANES), C, H, W, LANES]`` (padded with
    :data:`PAD`)."""
    return image_last(images, LANES, PAD).reshape(-1)


@njit(cache=True, fastmath=_FM, inline="always")
def _sq(zf, xf, base, p):
    """Per-lane squared difference ``(z[p] - x[p])^2`` (float64) at flat pixel index ``p``."""
    e = splat64(zf[p]) - widen(load(xf, base + p * LANES))
    return e * e


@njit(cache=True, fastmath=_FM)
def _columns(zf, xf, base, C, H, W, li, ph, first, cols):
    """Column sums of squared differences over the ``ph`` image rows from ``li`` (and the
    channels), per lane, into ``cols [W * LANES]`` (float64): summed directly for the ``first``
    window row of an item, else updated from the row above (add row ``li + ph - 1``, remove
    row ``li - 1``)."""
    L = LANES
    for j in range(W):
        if first:
            s = splat64(0.0)
            for c in range(C):
                for di in range(ph):
                    s = s + _sq(zf, xf, base, (c * H + li + di) * W + j)
        elif C == 1:  # grayscale: no channel loop in the innermost code
            s = load(cols, j * L) + (
                _sq(zf, xf, base, (li + ph - 1) * W + j) - _sq(zf, xf, base, (li - 1) * W + j)
            )
        else:
            s = load(cols, j * L)
            for c in range(C):
                s = s + (
                    _sq(zf, xf, base, (c * H + li + ph - 1) * W + j)
                    - _sq(zf, xf, base, (c * H + li - 1) * W + j)
                )
        store(cols, j * L, s)


@njit(cache=True, fastmath=_FM)
def _row_lse(k, cols, W, pw, ref, den, den32, kept, kbase, ref_at, abase):
    """Pass 1 for one window row of one chunk, from its column sums ``cols``: the window
    distances ``d`` (running sums over ``pw`` columns, ``k = 1 / 2 sigma^2``); each window's
    reference ``ref [Lw]``, per-lane sums ``den [Lw * LANES]`` (float64) / ``den32`` (float32,
    flushed by the caller) of ``exp(k (ref - d))``, and the float32 weights into ``kept`` from
    ``kbase`` with the reference at the time into ``ref_at`` from ``abase`` (+inf where all
    were below ``e^CUT``: nothing kept)."""
    L = LANES
    d = splat64(0.0)
    for j in range(W):
        d = d + load(cols, j * L)
        if j >= pw:
            d = d - load(cols, (j - pw) * L)
        if j < pw - 1:
            continue
        lj = j - pw + 1
        o = lj * L
        r = ref[lj]
        t = narrow(d * splat64(-k) + splat64(k * r))  # one FMA per register
        if any_gt(t, T_DROP):  # new reference: rescale what was summed against the old
            m = hmin(d)
            f = math.exp(-k * (r - m)) if r < np.inf else 0.0
            store(den, o, (load(den, o) + widen(load(den32, o))) * splat64(f))
            store(den32, o, splat32(0.0))
            ref[lj] = r = m
            t = narrow((splat64(m) - d) * splat64(k))  # not k * d: the FMA above stays fused
        if any_ge(t, CUT):
            w = exp_weights(t, CUT)
            store(kept, kbase + o, w)
            store(den32, o, load(den32, o) + w)
            ref_at[abase + lj] = r
        else:
            ref_at[abase + lj] = np.inf


@njit(cache=True, fastmath=_FM)
def _flush(acc64, acc32):
    """``acc64 += acc32`` (float64 += float32), ``acc32 = 0``."""
    for o in range(0, acc32.shape[0], LANES):
        store(acc64, o, load(acc64, o) + widen(load(acc32, o)))
        store(acc32, o, splat32(0.0))


@njit(cache=True, fastmath=_FM)
def _normalize_row(k, kept, ref_at, a, Lw, ref, inv, seen, factor, lo, hi):
    """Pass 2, one window row of one chunk: the kept weights (from ``a``) times
    ``exp(-k (ref_then - ref)) / sum``, in place (below TINY: 0; windows that kept nothing: 0).
    Returns the live column range widened to this row's live windows and whether it has any."""
    L = LANES
    live = False
    for lj in range(Lw):
        ra = ref_at[a + lj]
        o = (a + lj) * L
        if ra < np.inf:
            if ra != seen[lj]:
                seen[lj] = ra
                factor[lj] = math.exp(-k * (ra - ref[lj])) * inv[lj]
            store(kept, o, flush_below(load(kept, o) * splat32(factor[lj]), TINY))
            lo = min(lo, lj)
            hi = max(hi, lj)
            live = True
        else:
            store(kept, o, splat32(0.0))
    return lo, hi, live


@njit(cache=True, fastmath=_FM)
def _image_row(xf, xo, acc, ao, astep, xstep, C, vcol, lo, hi, pw):
    """Pass 2, one image row of a chunk: ``acc[ao + c astep + j L] += G_j x[xo + c xstep + j L]``
    per lane for the columns ``j`` of windows ``lo..hi``, ``G_j`` the running sum of ``vcol`` over
    the windows covering column ``j``. Grayscale has a loop of its own, so that no test of ``C``
    runs per pixel and the loop's registers do not spill. The running-sum steps are written out
    in both loops: an inlined helper taking ``vcol`` would keep numba's reference counting of the
    array inside the loop."""
    L = LANES
    h = splat32(0.0)
    if C == 1:
        for j in range(lo, hi + pw):
            if j <= hi:  # window j enters
                h = h + load(vcol, j * L)
            if j >= lo + pw:  # window j - pw leaves
                h = h - load(vcol, (j - pw) * L)
            o = ao + j * L
            store(acc, o, load(acc, o) + h * load(xf, xo + j * L))
        return
    for j in range(lo, hi + pw):  # the same, with the channel loop
        if j <= hi:
            h = h + load(vcol, j * L)
        if j >= lo + pw:
            h = h - load(vcol, (j - pw) * L)
        for c in range(C):
            o = ao + c * astep + j * L
            store(acc, o, load(acc, o) + h * load(xf, xo + c * xstep + j * L))


@njit(cache=True, fastmath=_FM)
def _sweep(xf, kept, ch, C, H, W, l0, ph, pw, rows, rowlive, lo, hi, vcol, acc):
    """Pass 2, chunk ``ch``: ``acc[c, i, j] += G[i, j] x[c, l0 + i, j]`` where ``G`` sums the
    normalised weights (the chunk's ``[nr, Lw]`` of ``kept``, ``nr = len(rowlive)`` window rows)
    of the windows covering image pixel ``(i, j)``: down each window column a running sum over
    the ``ph`` window rows covering image row ``i`` (``vcol``), then along the row a running sum
    over the ``pw`` windows covering column ``j``; only the columns of windows ``lo..hi`` (the
    chunk's live range) and the rows covered by live window rows."""
    L = LANES
    Lw = W - pw + 1
    WL = W * L
    nr = rowlive.shape[0]
    base, kb = ch * C * H * WL, ch * nr * Lw * L  # the chunk's training pixels, kept weights
    astep, xstep = rows * WL, H * WL
    for lj in range(lo, hi + 1):
        store(vcol, lj * L, splat32(0.0))
    nlive = 0  # live window rows covering image row i
    for i in range(nr + ph - 1):
        add = i < nr and rowlive[i]
        sub = i >= ph and rowlive[i - ph]
        ka = kb + (i * Lw) * L
        ks = kb + ((i - ph) * Lw) * L
        if add or sub:  # the same two tests for every column
            for lj in range(lo, hi + 1):
                o = lj * L
                v = load(vcol, o)
                if add:
                    v = v + load(kept, ka + o)
                if sub:
                    v = v - load(kept, ks + o)
                store(vcol, o, v)
        nlive += (1 if add else 0) - (1 if sub else 0)
        if nlive == 0:
            if sub:  # running-sum residues: back to exact zeros
                for lj in range(lo, hi + 1):
                    store(vcol, lj * L, splat32(0.0))
            continue
        _image_row(xf, base + (l0 + i) * WL, acc, i * WL, astep, xstep, C, vcol, lo, hi, pw)


@njit(cache=True, inline="always")
def _empty64(n, dtype):
    """``n`` uninitialised elements of ``dtype``, the first at a 64-byte boundary."""
    buf = np.empty(n + 16, dtype=dtype)  # 16 elements of at least 4 bytes: 64 to spare
    off = ((64 - buf.ctypes.data % 64) % 64) // buf.itemsize
    return buf[off : off + n]


@njit(cache=True, inline="always")
def _zeros64(n, dtype):
    """:func:`_empty64`, zeroed."""
    a = _empty64(n, dtype)
    a[:] = 0
    return a


@njit(cache=True)
def _band(row_positions, nbands, kk):
    """First window row and number of rows of band ``kk`` of ``nbands`` (the first
    ``row_positions % nbands`` bands have one row more)."""
    base, extra = divmod(row_positions, nbands)
    return kk * base + min(kk, extra), base + (1 if kk < extra else 0)


def band_order(row_positions: int, band: int) -> np.ndarray:
    """The bands of at most ``band`` window rows that split ``row_positions`` rows as evenly as
    possible, in the order their work items run: larger and smaller bands alternate, so that
    the contiguous ranges of items the threads take hold about as many window rows each (with
    bands in row order, a short last band would leave a thread idle)."""
    nbands = -(-row_positions // band)
    extra = row_positions % nbands
    big, small = list(range(extra)), list(range(extra, nbands))
    order = []
    while big or small:
        for group in (big, small):
            if group:
                order.append(group.pop(0))
    return np.array(order, dtype=np.int64)


@njit(cache=True, parallel=True, fastmath=_FM)
def _rows_batch(z, inv2s2, xf, nch, ph, pw, order):
    """``z [B,C,H,W]`` float64, ``inv2s2 [B] = 1 / (2 sigma^2)``, ``xf`` from :func:`to_lanes`
    (``nch`` chunks) -> ``[B,C,H,W]``: the sum over covering windows of the window posterior
    means. One work item per (noisy image, band of window rows); the ``len(order)`` bands split
    the window rows as evenly as possible (:func:`_band`), ``order`` the order of the bands in
    the (band-major) items."""
    L = LANES
    B, C, H, W = z.shape
    Lh, Lw = H - ph + 1, W - pw + 1
    nbands = order.shape[0]
    rows = -(-Lh // nbands) + ph - 1  # image rows an item writes at most
    zflat = z.reshape(B, C * H * W)
    part = np.zeros((B, nbands, C, rows, W))
    for item in prange(B * nbands):
        b, kk = item % B, order[item // B]  # band-major: see the module docstring
        l0, nr = _band(Lh, nbands, kk)
        k = inv2s2[b]
        zf = zflat[b]
        cols = _empty64(W * L, np.float64)
        ref = np.full((nr, Lw), np.inf)
        den = _zeros64(nr * Lw * L, np.float64).reshape((nr, Lw * L))
        den32 = _zeros64(nr * Lw * L, np.float32).reshape((nr, Lw * L))
        kept = _empty64(nch * nr * Lw * L, np.float32)
        ref_at = np.empty(nch * nr * Lw)
        for ch in range(nch):  # pass 1
            base = ch * C * H * W * L
            for r in range(nr):
                _columns(zf, xf, base, C, H, W, l0 + r, ph, r == 0, cols)
                a = (ch * nr + r) * Lw
                _row_lse(k, cols, W, pw, ref[r], den[r], den32[r], kept, a * L, ref_at, a)
            if (ch + 1) % FLUSH == 0 or ch == nch - 1:
                for r in range(nr):
                    _flush(den[r], den32[r])
        inv = np.empty((nr, Lw))
        for r in range(nr):
            for lj in range(Lw):
                inv[r, lj] = 1.0 / hsum(load(den[r], lj * L))
        seen = np.full((nr, Lw), np.nan)  # the reference of the cached factor
        factor = np.zeros((nr, Lw), dtype=np.float32)
        rowlive = np.zeros(nr, dtype=np.bool_)
        vcol = _zeros64(Lw * L, np.float32)
        acc32 = _zeros64(C * rows * W * L, np.float32)
        acc64 = _zeros64(C * rows * W * L, np.float64)
        for ch in range(nch):  # pass 2
            lo, hi = Lw, -1
            for r in range(nr):
                a = (ch * nr + r) * Lw
                lo, hi, rowlive[r] = _normalize_row(
                    k, kept, ref_at, a, Lw, ref[r], inv[r], seen[r], factor[r], lo, hi
                )
            if hi >= 0:
                _sweep(xf, kept, ch, C, H, W, l0, ph, pw, rows, rowlive, lo, hi, vcol, acc32)
            if (ch + 1) % FLUSH == 0 or ch == nch - 1:
                _flush(acc64, acc32)
        for c in range(C):
            for i in range(nr + ph - 1):
                for j in range(W):
                    part[b, kk, c, i, j] = hsum(load(acc64, ((c * rows + i) * W + j) * L))
    out = np.zeros((B, C, H, W))
    for b in range(B):
        for kk in range(nbands):
            l0, nr = _band(Lh, nbands, kk)
            for c in range(C):
                for i in range(nr + ph - 1):
                    for j in range(W):
                        out[b, c, l0 + i, j] += part[b, kk, c, i, j]
    return out


def auto_rows_per_item(
    batch: int, row_positions: int, threads: int, row_weights: int, keep_elements: int
) -> int:
    """Window rows per work item: at most :data:`ROWS_PER_ITEM`, at least ``4 x threads`` items
    (``batch x row_positions / rows``), and at most ``keep_elements`` kept weights per item
    (``row_weights`` per window row: padded N x windows in a row); never fewer than 1."""
    band = min(ROWS_PER_ITEM, batch * row_positions // (4 * threads), keep_elements // row_weights)
    return max(1, band)


def pspc_rows_sum(
    z: np.ndarray,
    inv2s2: np.ndarray,
    lanes: np.ndarray,
    ph: int,
    pw: int,
    threads: int = 1,
    keep_elements: int = 2**23,
    rows_per_item: int | None = None,
) -> np.ndarray:
    """:func:`_rows_batch` for ``z [B,C,H,W]`` float64 numpy and ``lanes`` from
    :func:`to_lanes` of images of the same ``C, H, W``; ``rows_per_item`` window rows per work
    item (default: :func:`auto_rows_per_item` for ``threads`` threads and ``keep_elements``)."""
    b, c, h, w = z.shape
    nch = lanes.shape[0] // (c * h * w * LANES)
    if nch * c * h * w * LANES != lanes.shape[0]:
        raise ValueError(
            f"lanes of {lanes.shape[0]} values do not hold images of shape {(c, h, w)}"
        )
    band = rows_per_item
    if band is None:
        band = auto_rows_per_item(b, h - ph + 1, threads, nch * LANES * (w - pw + 1), keep_elements)
    z, inv2s2 = np.ascontiguousarray(z), np.ascontiguousarray(inv2s2)
    return _rows_batch(z, inv2s2, lanes, nch, ph, pw, band_order(h - ph + 1, band))
