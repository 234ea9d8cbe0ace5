"""One engine for the local family: Filtered Posterior Mean Collections (FPMC).

Niedoba, Zwartsenberg, Wood (arXiv 2605.24192; docs/reference.md section 2.4) show that PSPC, LS/ELS
and Wiener locality are one model class, set by a **query precision** ``q_k >= 0``, a **response
weight** ``r_k >= 0`` per element ``k`` and a source set (here the training set at the same
location):

    w_kn = softmax_n(-sum_f q_kf (z_f - x_nf)^2 / (2 s^2 T)),   m_k = sum_n w_kn x_n,
    D(z)_f = sum_k r_kf m_kf / sum_k r_kf     (features f no r_k reaches: the empirical value).

``f`` runs over pixels (``q``/``r`` with one channel: channels summed per pixel, the response
spans all channels) or over ``C*H*W`` dimensions (per-channel ``q``/``r``).

How it is computed (exact, float64 logits, any device, mixed sigmas in one batch):

* elements with the same query share their posterior mean, so they are merged and their
  responses summed (``tau = 1`` masks, covering windows, ``threshold = 0`` are one element);
* elements are processed in blocks of ``block_size``; a block only touches the union ``U`` of its
  queries' supports and the union ``V`` of its responses' supports, so the logits are one dense
  matrix product ``[B*G, 2|U|] @ [2|U|, n]`` of ``[q_k z_b / s_b^2, -q_k / 2 s_b^2]`` against
  ``[x_n, x_n^2]`` on ``U`` (``-||z||^2`` is constant over ``n`` and cancels; in float64 the
  expanded form loses nothing that matters: docs/reference.md section 2.8), and the numerators
  ``[B*G, n] @ [n, |V|]`` another one; a plain softmax when the training set fits one chunk, else
  streamed with an online softmax (:class:`.softmax.OnlineSoftmax`);
* members order their elements so that a block is spatially compact (:func:`tile_order`), which
  keeps ``|U|`` near the size of one mask: cost ~ ``2 B K N |U|`` multiply-adds against the
  floor ``2 B K N |mask|`` (logits and numerators over each element's own mask).

Memory is bounded by ``chunk_elements`` (float64 elements of the largest temporary).

On the CPU (``engine="auto"``) the posterior means are instead computed by a fused numba kernel
(:mod:`.kernels.fpmc_cpu`): per element, exact float64 distances over its own support only (no
union), the softmax and the numerators in one streamed sweep over the training set, so no
block's logits go through memory; ``chunk_elements`` does not apply to it (its buffers are
``B x 512`` per thread).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser, check_images
from .empirical import empirical_posterior_mean
from .softmax import OnlineSoftmax

#: Elements per block: larger blocks make bigger matrix products but wider support unions.
DEFAULT_BLOCK_SIZE = 16

#: ``"auto"``: the fused numba kernel (:mod:`.kernels.fpmc_cpu`) on the CPU, the torch engine
#: elsewhere.
ENGINES = ("auto", "torch", "fused")


def tile_order(height: int, width: int, tile: int = 4) -> Tensor:
    """Row-major pixel indices ``[H*W]`` reordered tile by tile (``tile x tile`` squares), so that
    consecutive elements of a per-pixel collection are spatial neighbours."""
    idx = torch.arange(height * width).view(height, width)
    out = [
        idx[r : r + tile, c : c + tile].reshape(-1)
        for r in range(0, height, tile)
        for c in range(0, width, tile)
    ]
    return torch.cat(out)


def _check_weights(name: str, t: Tensor, channels: int, hw: tuple[int, int]) -> Tensor:
    if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] not in (1, channels):
        raise ValueError(
            f"{name} must be a tensor [K, 1 or {channels}, {hw[0]}, {hw[1]}], got "
            f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}; "
            "use one channel for per-pixel weights (channels summed)"
        )
    if tuple(t.shape[2:]) != hw:
        raise ValueError(f"{name} must cover {hw[0]}x{hw[1]} pixels, got {tuple(t.shape)}")
    t = t.detach().to(torch.float64)
    if not (torch.isfinite(t).all() and (t >= 0).all()):
        raise ValueError(f"{name} must be finite and >= 0 (weights); got a negative or NaN entry")
    return t


@dataclass
class _Block:
    union_q: Tensor  # [U] feature indices (flattened C*H*W)
    q: Tensor  # [G, U] query precisions on the union
    union_r: Tensor  # [V]
    r: Tensor  # [G, V] response weights on the union


class FilteredPosteriorMeans:
    """A collection ``(q_k, r_k)`` prepared for :meth:`posterior_mean` (the FPMC engine).

    Args:
        query: ``[K, 1 or C, H, W]`` query precisions (>= 0).
        response: ``[K, 1 or C, H, W]`` response weights (>= 0), same ``K``.
        image_shape: ``(C, H, W)`` of the images.
        block_size: elements per block (see the module docstring).
    """

    def __init__(
        self,
        query: Tensor,
        response: Tensor,
        image_shape: tuple[int, int, int],
        block_size: int = DEFAULT_BLOCK_SIZE,
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.engine = engine
        channels, hw = int(image_shape[0]), (int(image_shape[1]), int(image_shape[2]))
        query = _check_weights("query", query, channels, hw)
        response = _check_weights("response", response, channels, hw)
        if query.shape[0] != response.shape[0] or query.shape[0] < 1:
            raise ValueError(
                f"query and response need the same number K >= 1 of elements, got "
                f"{query.shape[0]} and {response.shape[0]}"
            )
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        c, (h, w) = channels, hw
        self.shape = (c, h, w)
        q = query.expand(-1, c, h, w).reshape(query.shape[0], -1)  # [K, F]
        r = response.expand(-1, c, h, w).reshape(response.shape[0], -1)  # [K, F]
        q, r = self._merge_equal_queries(q, r)
        keep = r.sum(1) > 0  # an element that responds nowhere changes nothing
        q, r = q[keep], r[keep]
        self.num_elements = q.shape[0]
        self.denominator = r.sum(0)  # [F]
        self._fused = None  # CSR form for the CPU kernel, built on first use
        self._q, self._r = q, r
        self.blocks = [
            self._block(q[s : s + block_size], r[s : s + block_size])
            for s in range(0, q.shape[0], block_size)
        ]

    @staticmethod
    def _merge_equal_queries(q: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Elements with equal queries have equal posterior means: one element, responses summed.
        Keeps the order of first occurrence (the caller's spatial order)."""
        uniq, inverse = torch.unique(q, dim=0, return_inverse=True)
        if uniq.shape[0] == q.shape[0]:
            return q, r
        first = torch.full((uniq.shape[0],), q.shape[0], dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(q.shape[0]), reduce="amin")
        order = first.argsort()
        r_sum = torch.zeros(uniq.shape[0], r.shape[1], dtype=r.dtype).index_add_(0, inverse, r)
        return uniq[order], r_sum[order]

    @staticmethod
    def _block(q: Tensor, r: Tensor) -> _Block:
        uq = (q > 0).any(0).nonzero().squeeze(1)
        ur = (r > 0).any(0).nonzero().squeeze(1)
        return _Block(uq, q[:, uq].contiguous(), ur, r[:, ur].contiguous())

    def to(self, device: torch.device) -> FilteredPosteriorMeans:
        """Moves the prepared tensors to ``device`` (in place); returns self."""
        self.denominator = self.denominator.to(device)
        self.blocks = [_Block(*(t.to(device) for t in vars(b).values())) for b in self.blocks]
        return self

    def posterior_mean(
        self,
        z: Tensor,
        sigma: Tensor,
        images: Tensor,
        temperature: float = 1.0,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> Tensor:
        """``z [B,C,H,W]`` float64, ``sigma [B]`` float64, ``images [N,C,H,W]`` -> ``[B,C,H,W]``
        float64: the FPMC output, with the empirical posterior mean where no response reaches."""
        b = z.shape[0]
        zf = z.reshape(b, -1)  # [B, F]
        xf = images.reshape(images.shape[0], -1)  # [N, F]
        inv = 1.0 / (sigma.square() * temperature)  # [B]
        if self.engine == "fused" or (self.engine == "auto" and z.device.type == "cpu"):
            num = self._fused_numerator(zf, inv, images)
        else:
            num = torch.zeros_like(zf)  # sum_k r_kf m_kf
            for blk in self.blocks:
                self._accumulate(num, zf, inv, xf, blk, chunk_elements)
        den = self.denominator.to(z.device)
        covered = den > 0
        out = num / torch.where(covered, den, 1.0)
        if not bool(covered.all()):
            emp = empirical_posterior_mean(zf, sigma, xf, chunk_elements)
            out = torch.where(covered, out, emp)
        return out.view_as(z)

    def _fused_numerator(self, zf: Tensor, inv: Tensor, images: Tensor) -> Tensor:
        """``sum_k r_kf m_kf`` by the numba kernel (:mod:`.kernels.fpmc_cpu`), on the CPU."""
        from .kernels import FusedCollection, feature_major

        if self._fused is None:
            self._fused = FusedCollection(self._q, self._r)
        key = (images, images._version)  # holds the images: no stale reuse of their memory
        cached = getattr(self, "_xt_key", None)
        if cached is None or cached[0] is not images or cached[1] != key[1]:
            self._xt, self._xt_key = feature_major(images), key
        return self._fused.numerator(zf.cpu(), 0.5 * inv.cpu(), self._xt).to(zf.device)

    @staticmethod
    def _accumulate(
        num: Tensor, zf: Tensor, inv: Tensor, xf: Tensor, blk: _Block, budget: int
    ) -> None:
        g, nu, nv = blk.q.shape[0], blk.union_q.numel(), blk.union_r.numel()
        bsz, n_all = zf.shape[0], xf.shape[0]
        rows = max(1, min(bsz, budget // max(1, g * (2 * nu + nv))))
        one_chunk = None
        for b0 in range(0, bsz, rows):
            zb, ib = zf[b0 : b0 + rows, blk.union_q], inv[b0 : b0 + rows]  # [b, U], [b]
            nb = zb.shape[0]
            # logit = [q_k z_b / s_b^2, -q_k / 2 s_b^2] . [x_n, x_n^2] (+ a constant over n)
            lin = (zb.unsqueeze(1) * blk.q).mul_(ib.view(-1, 1, 1))  # [b, G, U]
            quad = blk.q.unsqueeze(0) * (-0.5 * ib).view(-1, 1, 1)  # [b, G, U]
            lhs = torch.cat([lin, quad], 2).view(nb * g, 2 * nu)  # [bG, 2U]
            step = max(1, budget // max(1, nb * g + 2 * nu + nv))
            if step >= n_all:  # the whole training set in one chunk: a plain softmax
                if one_chunk is None:
                    xu = xf[:, blk.union_q].to(torch.float64)  # gather, then convert
                    rhs = torch.cat([xu, xu.square()], 1).T  # [2U, N]
                    one_chunk = (rhs, xf[:, blk.union_r].to(torch.float64))
                w = torch.softmax(lhs @ one_chunk[0], dim=1)  # [bG, N]
                means = (w @ one_chunk[1]).view(nb, g, nv)  # m_k on V
            else:
                state = OnlineSoftmax.empty((nb * g,), nv, like=zf)
                for s in range(0, n_all, step):
                    xu = xf[s : s + step, blk.union_q].to(torch.float64)  # [n, U]
                    rhs = torch.cat([xu, xu.square()], 1).T  # [2U, n]
                    state.update(lhs @ rhs, xf[s : s + step, blk.union_r].to(torch.float64))
                means = state.result().view(nb, g, nv)
            num[b0 : b0 + nb, blk.union_r] += (means * blk.r).sum(1)


class FPMCDenoiser(ClosedFormDenoiser):
    """A member of the FPMC class defined by its own tensors (Niedoba, Zwartsenberg, Wood 2026).

    ``D(z, s)_f = sum_k r_kf m_kf / sum_k r_kf``, ``m_k`` the posterior mean under
    ``w_kn = softmax_n(-sum_f q_kf (z_f - x_nf)^2 / (2 s^2 T))`` (module docstring); features no
    response reaches take the empirical denoiser's value. One collection for every sigma.

    Args:
        images: training set ``[N, C, H, W]`` in [-1, 1].
        query: ``[K, 1 or C, H, W]`` query precisions (one channel: per pixel, channels summed).
        response: ``[K, 1 or C, H, W]`` response weights.
        temperature: ``T`` dividing the logits.
        block_size: elements per block of the engine.
    """

    def __init__(
        self,
        images: Tensor,
        query: Tensor,
        response: Tensor,
        temperature: float = 1.0,
        block_size: int = DEFAULT_BLOCK_SIZE,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        images = check_images(images)
        super().__init__(images, chunk_elements)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.collection = FilteredPosteriorMeans(query, response, self.image_shape, block_size)
        self.register_buffer("images", images.contiguous(), persistent=False)

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        coll = self.collection.to(z.device)
        return coll.posterior_mean(z, sigma, self.images, self.temperature, self.chunk_elements)
