"""PSPC-Square: Patch Set Posterior Composites with square patches (Niedoba et al. 2024,
sec. 5).

Semantics are exactly those of the published implementation (docs/reference.md section 2.3): every
``P x P`` window fully inside the image (stride 1, no padding) gets the empirical posterior mean
over the crops of all training images at the SAME position; each output pixel is the mean of
the windows that cover it. ``P >= H, W`` is the empirical denoiser.

Instead of a Python loop over positions, two exact strategies compute all windows at once, in
float64 (logits of ~1e5 at sigma = 0.002 need it), streaming over the training set in chunks:

* ``"gemm"`` (window space): the logits of all windows are one batched matrix product of
  unfolded crops, ``[L, B, K+1] @ [L, K+1, n]``, folded into an online softmax whose numerator
  is another batched product with the crops. One pass over the data; cost ~ ``L * K`` per
  (noisy, training) pair, ``L`` windows of ``K = C P^2`` values. Best for small patches.
* ``"pixel"`` (pixel space): window distances are box sums of per-pixel squared errors, and
  since ``out[p] = 1/cnt[p] sum_i x_i[p] sum_{windows W containing p} w_i(W)``, the weights are
  box-summed back onto pixels. Cost ~ ``C H W`` per pair whatever ``P`` is; two passes (a
  log-sum-exp pass, then the weighted sum) when the training set does not fit in one chunk.

* ``"fused"`` (CPU only): the pixel-space computation as compiled kernels
  (:func:`.kernels.pspc_fused_sum`), streaming the training set with an online log-sum-exp,
  float64 distances and float32 weights, without the torch strategies' round trips of every
  logit through memory, which bound them on a CPU. For ``P = 1`` it uses
  :func:`.kernels.pspc_values_posterior_mean` instead: per pixel, the posterior mean over the
  DISTINCT training values there, weighted by their counts (8-bit images have at most 256 per
  pixel and channel).

``method="auto"`` uses ``"fused"`` on CPU; on other devices it picks ``"gemm"`` or ``"pixel"`` by a
cost model (:func:`device_method`, :data:`GEMM_COST_RATIO`). Timings of every strategy:
``benchmarks/denoisers.py``, docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.schedule import NEAREST_RULES, nearest_grid_index
from . import kernels
from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser, check_images
from .empirical import empirical_posterior_mean
from .schedules import default_patch_schedule
from .softmax import OnlineSoftmax, streaming_logsumexp

Method = Literal["auto", "fused", "gemm", "pixel"]
METHODS = ("auto", "fused", "gemm", "pixel")

#: "auto" off the CPU uses the GEMM strategy when ``L * K <= GEMM_COST_RATIO * B * C * H * W``
#: (:func:`device_method`). "gemm" costs about ``N L K`` per call whatever ``B`` (it unfolds the
#: training windows on every call), "pixel" about ``N B C H W``, so the rule compares the two
#: costs, a term of the batched product weighing about half a term of the pixel strategy's
#: elementwise passes. The factor was set by timing both strategies forced on a GPU at batches
#: of 16 and more (``benchmarks/denoisers.py --method gemm|pixel``, docs/benchmarks.md).
GEMM_COST_RATIO = 2.0


def box_sum(x: Tensor, ph: int, pw: int) -> Tensor:
    """Sums over every ``ph x pw`` window fully inside ``x [..., H, W]``
    -> ``[..., H-ph+1, W-pw+1]``.

    Separable running sums; use float64 (float32 prefix sums lose the small distances that
    matter at small sigma).
    """
    c = x.cumsum(-1)
    rows = torch.cat([c[..., pw - 1 : pw], c[..., pw:] - c[..., :-pw]], dim=-1)
    c = rows.cumsum(-2)
    return torch.cat([c[..., ph - 1 : ph, :], c[..., ph:, :] - c[..., :-ph, :]], dim=-2)


def box_sum_transposed(w: Tensor, ph: int, pw: int) -> Tensor:
    """Adjoint of :func:`box_sum`: spreads window values ``[..., Lh, Lw]`` onto the pixels they
    cover, ``[..., Lh+ph-1, Lw+pw-1]`` (each pixel sums the windows containing it)."""
    return box_sum(F.pad(w, (pw - 1, pw - 1, ph - 1, ph - 1)), ph, pw)


def _pspc_gemm(z: Tensor, sigma: Tensor, images: Tensor, ph: int, pw: int, budget: int) -> Tensor:
    b, c, h, w = z.shape
    k = c * ph * pw
    inv_s2 = (1.0 / sigma.square()).view(1, b, 1)  # [1, B, 1]
    zu = F.unfold(z, (ph, pw)).permute(2, 0, 1)  # [L, B, K]
    lhs = torch.cat([zu * inv_s2, (-0.5 * inv_s2).expand(zu.shape[0], b, 1)], dim=-1)  # [L,B,K+1]
    state = OnlineSoftmax.empty((zu.shape[0], b), k, like=z)
    step = max(1, budget // (zu.shape[0] * max(b, k + 1)))
    for start in range(0, images.shape[0], step):
        xu = F.unfold(images[start : start + step].to(torch.float64), (ph, pw))  # [n, K, L]
        xu = xu.permute(2, 0, 1)  # [L, n, K]
        rhs = torch.cat([xu, xu.square().sum(-1, keepdim=True)], dim=-1)  # [L, n, K+1]
        # Logits up to a per-(window, element) constant: (2 z.x - ||x||^2) / (2 s^2).
        state.update(torch.bmm(lhs, rhs.transpose(1, 2)), xu)  # [L, B, n]
    means = state.result().permute(1, 2, 0)  # [B, K, L] posterior mean of every window
    total = F.fold(means, (h, w), (ph, pw))  # [B, C, H, W] sum over covering windows
    count = F.fold(torch.ones_like(means[:1]), (h, w), (ph, pw))  # [1, C, H, W]
    return total / count


def _window_logits(z: Tensor, x: Tensor, ph: int, pw: int, neg_half_inv_s2: Tensor) -> Tensor:
    """``-||crop(z_b) - crop(x_n)||^2 / (2 s_b^2)`` for all windows: ``[b, n, Lh, Lw]`` float64."""
    e = (z.unsqueeze(1) - x.unsqueeze(0)).square_().sum(2)  # [b, n, H, W] exact differences
    return box_sum(e, ph, pw).mul_(neg_half_inv_s2.view(-1, 1, 1, 1))


def _pspc_pixel(z: Tensor, sigma: Tensor, images: Tensor, ph: int, pw: int, budget: int) -> Tensor:
    b, c, h, w = z.shape
    n = images.shape[0]
    pairs = max(1, budget // (c * h * w))  # (noisy, training) pairs per block
    rows = min(b, max(1, pairs // n))
    step = min(n, pairs)
    neg_half_inv_s2 = -0.5 / sigma.square()
    out = torch.zeros_like(z)

    def accumulate(dst: Tensor, weights: Tensor, x: Tensor) -> None:
        spread = box_sum_transposed(weights, ph, pw)  # [b, n, H, W]
        dst += (spread.unsqueeze(2) * x.unsqueeze(0)).sum(1)  # [b, C, H, W]

    chunks = (
        [images[s : s + step].to(torch.float64) for s in range(0, n, step)] if step >= n else None
    )
    for r0 in range(0, b, rows):
        zr, sr = z[r0 : r0 + rows], neg_half_inv_s2[r0 : r0 + rows]
        if chunks is not None:  # the whole training set fits in one block: one pass
            logits = _window_logits(zr, chunks[0], ph, pw, sr)
            accumulate(out[r0 : r0 + rows], torch.softmax(logits, dim=1), chunks[0])
            continue
        lse = None
        for s in range(0, n, step):
            x = images[s : s + step].to(torch.float64)
            lse = streaming_logsumexp(lse, _window_logits(zr, x, ph, pw, sr), dim=1)
        for s in range(0, n, step):
            x = images[s : s + step].to(torch.float64)
            weights = _window_logits(zr, x, ph, pw, sr).sub_(lse.unsqueeze(1)).exp_()
            accumulate(out[r0 : r0 + rows], weights, x)
    count = box_sum_transposed(z.new_ones(h - ph + 1, w - pw + 1), ph, pw)  # [H, W]
    return out / count


def device_method(b: int, c: int, h: int, w: int, ph: int, pw: int) -> Literal["gemm", "pixel"]:
    """The strategy ``"auto"`` takes off the CPU for ``b`` images ``c x h x w`` and ``ph x pw``
    windows (:data:`GEMM_COST_RATIO`)."""
    windows, k = (h - ph + 1) * (w - pw + 1), c * ph * pw
    return "gemm" if windows * k <= GEMM_COST_RATIO * b * c * h * w else "pixel"


def pspc_square_posterior_mean(
    z: Tensor,
    sigma: Tensor,
    images: Tensor,
    patch_size: int,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    method: Method = "auto",
    layout: kernels.TrainingLayout | None = None,
    values: kernels.ValueTable | None = None,
) -> Tensor:
    """PSPC-Square composite for one patch size: ``z [B,C,H,W]`` float64, ``sigma [B]`` float64
    (may differ per element), ``images [N,C,H,W]`` -> ``[B,C,H,W]`` float64.

    ``patch_size >= H and >= W`` returns the empirical posterior mean; a patch larger than one
    side spans that side. ``chunk_elements`` bounds the largest temporary (float64 elements; the
    fused kernels keep at most twice as many float32 weights per thread). ``layout`` is
    ``kernels.TrainingLayout(images)`` and ``values`` ``kernels.value_table(images)`` when the
    caller caches them (the fused method uses the value table when the patch is 1 x 1).
    """
    b, c, h, w = z.shape
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    ph, pw = min(patch_size, h), min(patch_size, w)
    if ph == h and pw == w:
        flat = empirical_posterior_mean(z.flatten(1), sigma, images.flatten(1), chunk_elements)
        return flat.view_as(z)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto" and z.device.type == "cpu":
        method = "fused"
    elif method == "auto":
        method = device_method(b, c, h, w, ph, pw)
    if method == "fused":
        if z.device.type != "cpu":
            raise ValueError(
                f"method='fused' is a CPU kernel but z is on {z.device}; use method='auto', "
                "'gemm' or 'pixel' on this device"
            )
        if ph == 1 and pw == 1:  # per-pixel posterior means over the distinct values
            if values is None:
                values = kernels.value_table(images)
            return kernels.pspc_values_posterior_mean(z, sigma, values)
        if layout is None:
            layout = kernels.TrainingLayout(images)
        total = kernels.pspc_fused_sum(z, sigma, layout, ph, pw, keep_elements=2 * chunk_elements)
        return total / box_sum_transposed(z.new_ones(h - ph + 1, w - pw + 1), ph, pw)
    if method == "gemm":
        return _pspc_gemm(z, sigma, images, ph, pw, chunk_elements)
    if method == "pixel":
        return _pspc_pixel(z, sigma, images, ph, pw, chunk_elements)
    raise AssertionError(method)


class PSPCSquareDenoiser(ClosedFormDenoiser):
    """PSPC-Square denoiser (Niedoba et al. 2024, sec. 5): local patch-set posterior means with
    square ``P x P`` windows, composited by averaging over covering windows.

    Choose the patch side with exactly one of:

    * ``patch_size=P``: one side for every sigma;
    * ``sigmas=[...], patch_sizes=[...]``: a schedule; an input sigma takes the size of the
      nearest grid sigma (``nearest="absolute"``, as in the published code, or ``"log"``);
    * nothing: the default schedule for the image size (the paper's CIFAR-10 schedule on the
      18 EDM sigmas for 32x32; :func:`~lightning_pspc.denoisers.schedules.scale_patch_sizes`
      for other sizes, e.g. ``28 x7, 21, 13, 9, 7, 5, 3 x6`` for 28x28).

    Sigma may differ within a batch (elements are grouped by patch size). Exact in float64 to the
    definition; memory is bounded by ``chunk_elements``, not by N x B x positions.

    Args:
        images: training set ``[N, C, H, W]`` in [-1, 1] (``ImageDataModule.reference_images()``).
        method: ``"auto"``, ``"fused"`` (CPU), ``"gemm"`` or ``"pixel"`` (see the module
            docstring); all agree to float64 rounding.
        nearest: how a sigma off the schedule's grid picks its grid sigma
            (:func:`~lightning_pspc.denoisers.schedules.nearest_grid_index`).
    """

    def __init__(
        self,
        images: Tensor,
        patch_size: int | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        patch_sizes: Sequence[int] | None = None,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        method: Method = "auto",
        nearest: str = "absolute",
    ) -> None:
        images = check_images(images)
        super().__init__(images, chunk_elements)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if nearest not in NEAREST_RULES:
            raise ValueError(f"nearest={nearest!r}: use one of {NEAREST_RULES}")
        self.method, self.nearest = method, nearest
        self._layouts: dict[str, tuple] = {}  # CPU kernel layouts of images, built lazily
        grid, sizes = self._resolve_schedule(images.shape[-2:], patch_size, sigmas, patch_sizes)
        self.register_buffer("images", images.contiguous(), persistent=False)
        self.register_buffer("grid_sigmas", grid, persistent=False)
        self.patch_sizes: tuple[int, ...] = sizes

    @staticmethod
    def _resolve_schedule(
        hw: torch.Size,
        patch_size: int | None,
        sigmas: Sequence[float] | Tensor | None,
        patch_sizes: Sequence[int] | None,
    ) -> tuple[Tensor, tuple[int, ...]]:
        if patch_size is not None:
            if sigmas is not None or patch_sizes is not None:
                raise ValueError(
                    "give either patch_size=P or sigmas=[...] with patch_sizes=[...], not both"
                )
            if int(patch_size) < 1:
                raise ValueError(f"patch_size must be >= 1, got {patch_size}")
            return torch.ones(1, dtype=torch.float64), (int(patch_size),)
        if sigmas is None and patch_sizes is None:
            return default_patch_schedule(int(hw[0]), int(hw[1]))
        if sigmas is None or patch_sizes is None:
            raise ValueError("a patch-size schedule needs both sigmas=[...] and patch_sizes=[...]")
        grid = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        sizes = tuple(int(p) for p in patch_sizes)
        if grid.numel() != len(sizes) or not sizes:
            raise ValueError(
                f"sigmas and patch_sizes must have the same non-zero length, got {grid.numel()} and {len(sizes)}"
            )
        if min(sizes) < 1 or not bool((grid > 0).all()):
            raise ValueError(
                f"patch sizes must be >= 1 and sigmas > 0, got {sizes} and {grid.tolist()}"
            )
        return grid, sizes

    def patch_size_for(self, sigma: Tensor) -> Tensor:
        """Patch side ``[B]`` (long) for noise levels ``sigma [B]``: nearest grid sigma."""
        nearest = nearest_grid_index(sigma, self.grid_sigmas, self.nearest)  # [B]
        return torch.tensor(self.patch_sizes, device=nearest.device)[nearest]

    def _cpu_layout(self, kind: Literal["kernel", "values"]) -> object | None:
        """The training set in a CPU kernel's layout (``"kernel"``: a
        :class:`.kernels.TrainingLayout`, ``"values"``: :func:`.kernels.value_table`), built on
        first use and rebuilt if ``images`` changed; None where the fused kernel is not used."""
        if self.images.device.type != "cpu" or self.method not in ("auto", "fused"):
            return None
        key = (self.images.data_ptr(), self.images._version, tuple(self.images.shape))
        cached = self._layouts.get(kind)
        if cached is None or cached[0] != key:
            build = kernels.TrainingLayout if kind == "kernel" else kernels.value_table
            cached = self._layouts[kind] = (key, build(self.images))
        return cached[1]

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        sizes = self.patch_size_for(sigma)
        out = torch.empty_like(z)
        for p in sizes.unique().tolist():
            idx = (sizes == p).nonzero().squeeze(1)
            one = min(p, z.shape[2]) == 1 and min(p, z.shape[3]) == 1  # 1 x 1 windows
            whole = p >= z.shape[2] and p >= z.shape[3]  # the empirical denoiser: no layout
            layout = None if whole else self._cpu_layout("values" if one else "kernel")
            out[idx] = pspc_square_posterior_mean(
                z[idx],
                sigma[idx],
                self.images,
                int(p),
                self.chunk_elements,
                self.method,
                layout=None if one else layout,
                values=layout if one else None,
            )
        return out

    def extra_repr(self) -> str:
        return f"N={self.num_images}, image_shape={self.image_shape}, patch_sizes={self.patch_sizes}, method={self.method!r}"
