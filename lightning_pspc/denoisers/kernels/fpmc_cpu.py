"""Fused CPU kernels of the local family (numba): the FPMC engine per element, and ELS.

The torch engine (:mod:`lightning_pspc.denoisers.fpmc`) computes the logits of a block of elements
as one float64 matrix product over the union of their supports, then softmaxes ``B * G * N`` float64
logits in separate passes: on a CPU the passes over memory, and union supports wider than one mask,
cost more than the arithmetic. These kernels follow :mod:`.pspc_cpu`: per element (or query window)
the training set is streamed in chunks laid out feature-major (``xt [F, N]``: each feature's values
over the chunk are one contiguous vector), and in one sweep per chunk

1. distances ``d2[b, n] = sum_f q_f (z_bf - x_nf)^2`` in float64 from exact differences, only
   over the element's own support;
2. weights ``exp(-(d2 - min) / 2 s^2 T)`` with an online minimum (rescaling the running sums
   when it drops); the exponential is :func:`.pspc_cpu.exp32` (float32 of a float64 argument,
   0 below ``exp(-64)``), stored as float64;
3. the numerators ``sum_n w_n x_nf`` over the element's response support, float64.

Exactness: as :mod:`.pspc_cpu`, the only float32 step is the exponential of weights in
``[0, 1]`` (< 3e-8 absolute on a normalised weight); the tests compare with the float64
definition at every EDM sigma (tolerance 1e-5).

Threads: ``torch.get_num_threads()`` (elements, or query rows, are split over threads).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .numba_target import torch_threads  # (first: before any kernel compiles)
from .pspc_cpu import F32, add_sqdiff, dot, exp32

#: Training images per chunk: a ``[B, CHUNK]`` float64 distance buffer (16 x 512 x 8 = 64 KiB
#: at B = 16) and one feature's chunk (4 KiB) stay in L2/L1 while every feature streams by.
CHUNK = 512

#: Query windows per ELS task (their distances to a patch chunk stay in cache).
ELS_ROWS = 16

_FM = {"contract", "reassoc", "nsz", "arcp"}


@njit(cache=True, fastmath=_FM)
def _add_wsqdiff(dst, zf, xr, qv):
    for i in range(dst.shape[0]):
        d = zf - xr[i]
        dst[i] += qv * (d * d)


@njit(cache=True, fastmath=_FM)
def _rowmin(a):
    m = np.inf
    for i in range(a.shape[0]):
        m = min(m, a[i])
    return m


@njit(cache=True, fastmath=_FM)
def _weights(dst, d2, shift, scale):
    """``dst[i] = exp(-scale (d2[i] - shift))`` (float32 exponential, stored float64); sum."""
    t = 0.0
    for i in range(d2.shape[0]):
        w = np.float64(exp32(F32(-scale * (d2[i] - shift))))
        dst[i] = w
        t += w
    return t


@njit(cache=True, fastmath=_FM, parallel=True)
def _fpmc_means(z, half_inv, xt, q_ptr, q_idx, q_val, r_ptr, r_idx, out):
    """Posterior means of every element on its response support.

    ``z [B, F]``, ``half_inv [B] = 1 / (2 s^2 T)``, ``xt [F, N]`` (float64, contiguous);
    element ``k``'s query is ``q_val[q_ptr[k]:q_ptr[k+1]]`` on features ``q_idx[...]`` and its
    response support ``r_idx[r_ptr[k]:r_ptr[k+1]]``; writes ``out[b, r_ptr[k] + j]`` = the
    mean of feature ``r_idx[r_ptr[k] + j]`` under element ``k``'s weights for noisy image ``b``.
    """
    nb, n_all = z.shape[0], xt.shape[1]
    for k in prange(q_ptr.shape[0] - 1):
        q0, q1, r0, r1 = q_ptr[k], q_ptr[k + 1], r_ptr[k], r_ptr[k + 1]
        d2 = np.empty((nb, CHUNK))
        w = np.empty((nb, CHUNK))
        acc = np.zeros((nb, r1 - r0))
        low = np.full(nb, np.inf)
        tot = np.zeros(nb)
        for s in range(0, n_all, CHUNK):
            n = min(n_all, s + CHUNK) - s
            d2[:, :n] = 0.0
            for t in range(q0, q1):
                f = q_idx[t]
                xr = xt[f, s : s + n]
                for b in range(nb):
                    _add_wsqdiff(d2[b, :n], z[b, f], xr, q_val[t])
            for b in range(nb):
                m = min(low[b], _rowmin(d2[b, :n]))
                if m < low[b]:
                    if tot[b] > 0:  # a new minimum: rescale the running sums
                        a = math.exp(-(low[b] - m) * half_inv[b])
                        tot[b] *= a
                        for j in range(r1 - r0):
                            acc[b, j] *= a
                    low[b] = m
                tot[b] += _weights(w[b, :n], d2[b, :n], m, half_inv[b])
            for j in range(r1 - r0):
                xr = xt[r_idx[r0 + j], s : s + n]
                for b in range(nb):
                    acc[b, j] += dot(w[b, :n], xr)
        for b in range(nb):
            for j in range(r1 - r0):
                out[b, r0 + j] = acc[b, j] / tot[b]


def _csr(t: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``t [K, F]`` (>= 0) as ``(ptr [K+1], idx, val)`` of their non-zero entries."""
    nz = t > 0
    ptr = torch.zeros(t.shape[0] + 1, dtype=torch.int64)
    ptr[1:] = nz.sum(1).cumsum(0)
    idx = nz.nonzero()[:, 1]
    return ptr.numpy(), idx.numpy().copy(), t[nz].numpy().astype(np.float64)


class FusedCollection:
    """CSR form of an FPMC collection for the fused engine, :meth:`numerator` (built once per
    collection)."""

    def __init__(self, q: Tensor, r: Tensor) -> None:
        self.q_ptr, self.q_idx, self.q_val = _csr(q.cpu())
        self.r_ptr, self.r_idx, self.r_val = _csr(r.cpu())
        self.r_idx_t = torch.from_numpy(self.r_idx)
        self.r_val_t = torch.from_numpy(self.r_val)

    def numerator(self, zf: Tensor, half_inv: Tensor, xt: np.ndarray) -> Tensor:
        """``sum_k r_kf m_kf`` ``[B, F]`` float64 for ``zf [B, F]``, ``half_inv [B]``."""
        z = np.ascontiguousarray(zf.detach().cpu().numpy(), dtype=np.float64)
        h = np.ascontiguousarray(half_inv.detach().cpu().numpy(), dtype=np.float64)
        out = np.empty((z.shape[0], self.r_idx.shape[0]))
        with torch_threads():
            _fpmc_means(z, h, xt, self.q_ptr, self.q_idx, self.q_val, self.r_ptr, self.r_idx, out)
        num = torch.zeros(z.shape[0], z.shape[1], dtype=torch.float64)
        num.index_add_(1, self.r_idx_t, torch.from_numpy(out) * self.r_val_t)
        return num


def feature_major(images: Tensor) -> np.ndarray:
    """``images [N, ...]`` -> ``[F, N]`` float64 contiguous (each feature one vector)."""
    x = images.detach().reshape(images.shape[0], -1).to(torch.float64).T.contiguous()
    return x.cpu().numpy()


@njit(cache=True, fastmath=_FM)
def _add_sqdiff3(dst, a0, x0, a1, x1, a2, x2):
    """``dst += (a0 - x0)^2 + (a1 - x1)^2 + (a2 - x2)^2`` (three features in one sweep)."""
    for i in range(dst.shape[0]):
        d0 = a0 - x0[i]
        d1 = a1 - x1[i]
        d2 = a2 - x2[i]
        dst[i] += d0 * d0 + d1 * d1 + d2 * d2


@njit(cache=True, fastmath=_FM)
def _logits(dst, logc, scale):
    """``dst[i] = logc[i] - scale * dst[i]`` (distances to logits, in place); the maximum."""
    m = -np.inf
    for i in range(dst.shape[0]):
        v = logc[i] - scale * dst[i]
        dst[i] = v
        m = max(m, v)
    return m


@njit(cache=True, fastmath=_FM)
def _exp_weights(dst, lg, shift):
    """``dst[i] = exp(lg[i] - shift)`` (float32 exponential, stored float64); the sum."""
    t = 0.0
    for i in range(lg.shape[0]):
        w = np.float64(exp32(F32(lg[i] - shift)))
        dst[i] = w
        t += w
    return t


@njit(cache=True, fastmath=_FM, parallel=True)
def _els_centres(qz, half_inv, pt, logc, ct, out):
    """ELS posterior means of the patch centres, query window by query window.

    ``qz [R, K]`` query windows, ``half_inv [R] = 1 / 2 s^2`` of each, ``pt [K, M]`` the patch
    set feature-major, ``logc [M]`` log multiplicities, ``ct [C, M]`` the centres; writes
    ``out [R, C]``. Logits ``log c_m - ||z_r - x_m||^2 / 2 s^2`` in float64 from exact
    differences, online maximum per row.
    """
    n_rows, kf, m_all, nc = qz.shape[0], pt.shape[0], pt.shape[1], ct.shape[0]
    for task in prange((n_rows + ELS_ROWS - 1) // ELS_ROWS):
        r0 = task * ELS_ROWS
        nr = min(n_rows, r0 + ELS_ROWS) - r0
        lg = np.empty((nr, CHUNK))
        w = np.empty((nr, CHUNK))
        acc = np.zeros((nr, nc))
        top = np.full(nr, -np.inf)
        tot = np.zeros(nr)
        for s in range(0, m_all, CHUNK):
            n = min(m_all, s + CHUNK) - s
            lg[:, :n] = 0.0
            tri = kf - kf % 3  # three features per sweep of the distance row: 1/3 the traffic
            for f in range(0, tri, 3):
                x0, x1, x2 = pt[f, s : s + n], pt[f + 1, s : s + n], pt[f + 2, s : s + n]
                for r in range(nr):
                    q = qz[r0 + r]
                    _add_sqdiff3(lg[r, :n], q[f], x0, q[f + 1], x1, q[f + 2], x2)
            for f in range(tri, kf):
                xr = pt[f, s : s + n]
                for r in range(nr):
                    add_sqdiff(lg[r, :n], qz[r0 + r, f], xr)
            for r in range(nr):
                m = max(top[r], _logits(lg[r, :n], logc[s : s + n], half_inv[r0 + r]))
                if m > top[r]:
                    if tot[r] > 0:  # a new maximum: rescale the running sums
                        a = math.exp(top[r] - m)
                        tot[r] *= a
                        for c in range(nc):
                            acc[r, c] *= a
                    top[r] = m
                tot[r] += _exp_weights(w[r, :n], lg[r, :n], m)
            for c in range(nc):
                cr = ct[c, s : s + n]
                for r in range(nr):
                    acc[r, c] += dot(w[r, :n], cr)
        for r in range(nr):
            for c in range(nc):
                out[r0 + r, c] = acc[r, c] / tot[r]


def els_centres_cpu(queries: Tensor, rhs: Tensor, centres: Tensor, inv_s2: Tensor) -> Tensor:
    """The fused form of :func:`~lightning_pspc.denoisers.local.els_posterior_centres`:
    ``queries [B, P, K]``, ``rhs [M, K+2] = [x, ||x||^2, log c]``, ``centres [M, C]``,
    ``inv_s2 [B]`` -> ``[B, P, C]``."""
    b, p, k = queries.shape
    qz = np.ascontiguousarray(queries.reshape(b * p, k).to(torch.float64).cpu().numpy())
    h = (0.5 * inv_s2.to(torch.float64).cpu()).repeat_interleave(p).numpy()
    pt = np.ascontiguousarray(rhs[:, :k].T.to(torch.float64).cpu().numpy())
    logc = np.ascontiguousarray(rhs[:, k + 1].to(torch.float64).cpu().numpy())
    ct = np.ascontiguousarray(centres.T.to(torch.float64).cpu().numpy())
    out = np.empty((b * p, ct.shape[0]))
    with torch_threads():
        _els_centres(qz, h, pt, logc, ct, out)
    return torch.from_numpy(out).view(b, p, -1).to(queries.device)
