"""ELS posterior means of patch centres as one fused Triton kernel (the CUDA form of
:func:`.fpmc_cpu.els_centres_cpu`; docs/reference.md section 2.6).

The torch engine (:func:`~lightning_pspc.denoisers.local.els_posterior_centres`) writes every
float64 logit to memory and reads it back five times (maximum, shift, exponential, sum, product): on
a GPU that is memory traffic, not arithmetic. Here each program holds a tile of ``BQ`` query windows
and streams a share of the patch set through registers, ``BM`` patches at a time:

* logits ``log c_m + (2 z.x_m - ||x_m||^2) / 2 s^2`` (the ``||z||^2`` term cancels), with ``z.x``
  a float64 matrix product on the tensor cores (features zero-padded to a power of 2, in tiles
  of at most ``FEATURE_BLOCK``). Float64 keeps the expansion exact enough at small sigma (in
  float32 it would cancel catastrophically, docs/reference.md section 2.8), and the product
  runs on the tensor cores, where exact differences feature by feature could not;
* an online softmax per query row (running maximum in float64, weights ``exp`` in float32 of the
  float64 logit minus the maximum, so in ``[0, 1]`` with relative error ~1e-7), sums in float64;
* the patch set is split across ``S`` programs per query tile so that small batches still fill the
  GPU; the ``S`` partial states ``(max, sum, weighted centres)`` are merged in torch.

Nothing of size ``rows x patches`` is ever stored. The patch set's padded float64 layout
(:class:`TritonPatchSet`, ``KP x M`` values: 450 MB at k = 7, N = 2,000) is made once per patch
set and cached by the ELS denoiser within its ``ELS_CACHE_ELEMENTS`` budget, not rebuilt per
call. Set ``TRITON_INTERPRET=1`` before ``triton`` is first imported to run it on the CPU (tests
do). Timings: ``benchmarks/locality.py``, docs/benchmarks.md.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Query windows per program and patches per step.
BLOCK_QUERIES = 64
BLOCK_PATCHES = 64

#: Features per matrix-product tile: windows of up to 64 features (k <= 7 on one channel) keep
#: the query tile in registers; wider ones loop over tiles of 64.
FEATURE_BLOCK = 64

#: Programs to aim for when splitting the patch set (a few per SM of a large GPU).
TARGET_PROGRAMS = 1024


@triton.jit
def _els_partial_kernel(
    q_ptr,  # [R, KP] float64 query windows (features zero-padded to KP)
    half_ptr,  # [R] float64, 1 / 2 s^2 of each row
    x_ptr,  # [KP, M] float64 patch set, feature-major (zero-padded to KP)
    sqx_ptr,  # [M] float64 ||x||^2
    logc_ptr,  # [M] float64 log multiplicities
    ct_ptr,  # [M, CP] float64 patch centres (channels padded to CP with zeros)
    m_out,  # [S, R] float64 running maximum per split
    den_out,  # [S, R] float64 sum of weights per split
    acc_out,  # [S, R, CP] float64 weighted centres per split
    n_rows,
    n_patches,
    patches_per_split,
    KP: tl.constexpr,
    KB: tl.constexpr,
    CP: tl.constexpr,
    BQ: tl.constexpr,
    BM: tl.constexpr,
):
    tile = tl.program_id(0)
    split = tl.program_id(1)
    rows = tile * BQ + tl.arange(0, BQ)
    rmask = rows < n_rows
    feats = tl.arange(0, KB)
    chans = tl.arange(0, CP)
    if KP == KB:  # every feature in one tile: the query tile stays in registers
        qt = tl.load(q_ptr + rows[:, None] * KP + feats[None, :], mask=rmask[:, None], other=0.0)
    half = tl.load(half_ptr + rows, mask=rmask, other=0.0)
    top = tl.full([BQ], float("-inf"), tl.float64)
    den = tl.zeros([BQ], tl.float64)
    acc = tl.zeros([BQ, CP], tl.float64)
    start = split * patches_per_split
    stop = tl.minimum(start + patches_per_split, n_patches)
    for s in range(start, stop, BM):
        cols = s + tl.arange(0, BM)
        cmask = cols < stop
        if KP == KB:
            xt = tl.load(
                x_ptr + feats[:, None] * n_patches + cols[None, :], mask=cmask[None, :], other=0.0
            )
            dot = tl.dot(qt, xt)  # [BQ, BM] float64
        else:  # wide windows: KB features at a time (tiles of KP features would not fit)
            dot = tl.zeros([BQ, BM], tl.float64)
            for f0 in range(0, KP, KB):
                fq = tl.load(
                    q_ptr + rows[:, None] * KP + (f0 + feats)[None, :],
                    mask=rmask[:, None],
                    other=0.0,
                )
                fx = tl.load(
                    x_ptr + (f0 + feats)[:, None] * n_patches + cols[None, :],
                    mask=cmask[None, :],
                    other=0.0,
                )
                dot += tl.dot(fq, fx)
        sqx = tl.load(sqx_ptr + cols, mask=cmask, other=0.0)
        logc = tl.load(logc_ptr + cols, mask=cmask, other=float("-inf"))
        logits = logc[None, :] + (2.0 * dot - sqx[None, :]) * half[:, None]  # -inf if masked
        new_top = tl.maximum(top, tl.max(logits, 1))
        rescale = tl.exp((top - new_top).to(tl.float32)).to(tl.float64)  # 0 on the first step
        w = tl.exp((logits - new_top[:, None]).to(tl.float32)).to(tl.float64)
        ct = tl.load(ct_ptr + cols[:, None] * CP + chans[None, :], mask=cmask[:, None], other=0.0)
        den = den * rescale + tl.sum(w, 1)
        acc = acc * rescale[:, None] + tl.sum(w[:, :, None] * ct[None, :, :], 1)
        top = new_top
    out = split * n_rows + rows
    tl.store(m_out + out, top, mask=rmask)
    tl.store(den_out + out, den, mask=rmask)
    tl.store(acc_out + out[:, None] * CP + chans[None, :], acc, mask=rmask[:, None])


class TritonPatchSet(NamedTuple):
    """A prepared patch set (:func:`~lightning_pspc.denoisers.local.prepare_patch_set`) in the
    kernel's layout, made once per patch set by :func:`triton_patch_set` (the ELS denoiser caches it
    in place of the ``(rhs, centres)`` pair)."""

    x: Tensor  # [KP, M] float64, feature-major, features zero-padded to a power of 2 (>= 16)
    sqx: Tensor  # [M] float64 ||x||^2
    logc: Tensor  # [M] float64 log multiplicities
    ct: Tensor  # [M, CP] float64 centres, channels zero-padded to a power of 2
    features: int  # K
    channels: int  # C


def triton_patch_set(rhs: Tensor, centres: Tensor) -> TritonPatchSet:
    """``rhs [M, K+2] = [x, ||x||^2, log c]`` and ``centres [M, C]`` -> :class:`TritonPatchSet`
    on the same device."""
    n_patches, k = rhs.shape[0], rhs.shape[1] - 2
    c, f64 = centres.shape[1], torch.float64
    x = rhs.new_zeros(max(16, triton.next_power_of_2(k)), n_patches, dtype=f64)
    x[:k] = rhs[:, :k].T
    ct = rhs.new_zeros(n_patches, triton.next_power_of_2(c), dtype=f64)
    ct[:, :c] = centres
    sqx, logc = (rhs[:, k + i].to(f64).contiguous() for i in range(2))
    return TritonPatchSet(x, sqx, logc, ct, k, c)


def els_centres_triton(
    queries: Tensor,
    patch_set: TritonPatchSet,
    inv_s2: Tensor,
    block_queries: int = BLOCK_QUERIES,
    block_patches: int = BLOCK_PATCHES,
    splits: int | None = None,
    num_warps: int = 4,
) -> Tensor:
    """The fused form of :func:`~lightning_pspc.denoisers.local.els_posterior_centres`:
    ``queries [B, P, K]``, a patch set from :func:`triton_patch_set`, ``inv_s2 [B]`` ->
    ``[B, P, C]`` in float64. ``splits`` (default: enough programs to fill a large GPU) divides the
    patch set; block sizes must be powers of 2, at least 16 (the matrix product's smallest tile)."""
    b, p, k = queries.shape
    if k != patch_set.features:
        raise ValueError(f"queries of {k} features against a patch set of {patch_set.features}")
    kp, n_patches = patch_set.x.shape
    n_rows, c, cp = b * p, patch_set.channels, patch_set.ct.shape[1]
    dev, f64 = queries.device, torch.float64
    q = torch.zeros(n_rows, kp, dtype=f64, device=dev)
    q[:, :k] = queries.reshape(n_rows, k)
    half = (0.5 * inv_s2.to(device=dev, dtype=f64)).repeat_interleave(p).contiguous()
    tiles = triton.cdiv(n_rows, block_queries)
    if splits is None:
        splits = max(1, min(TARGET_PROGRAMS // tiles, triton.cdiv(n_patches, 8 * block_patches)))
    per_split = triton.cdiv(triton.cdiv(n_patches, splits), block_patches) * block_patches
    splits = triton.cdiv(n_patches, per_split)
    top = torch.empty(splits, n_rows, dtype=f64, device=dev)
    den = torch.empty(splits, n_rows, dtype=f64, device=dev)
    acc = torch.empty(splits, n_rows, cp, dtype=f64, device=dev)
    _els_partial_kernel[(tiles, splits)](
        q, half, patch_set.x, patch_set.sqx, patch_set.logc, patch_set.ct, top, den, acc,
        n_rows, n_patches, per_split,
        KP=kp, KB=min(kp, FEATURE_BLOCK), CP=cp, BQ=block_queries, BM=block_patches,
        num_warps=num_warps,
    )  # fmt: skip
    scale = (top - top.amax(0, keepdim=True)).exp()  # [S, R]: merge the splits' softmaxes
    total = (den * scale).sum(0)
    out = (acc[..., :c] * scale.unsqueeze(-1)).sum(0) / total.unsqueeze(-1)
    return out.view(b, p, c)
