"""Kamb & Ganguli's local score machines: LS (local) and ELS (equivariant local),
docs/reference.md section 2.6 (Kamb & Ganguli 2024, ICML 2025). FPMC members with one element
per output pixel: query = the ``k x k`` window centred on it, response = that pixel (all
channels).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.schedule import NEAREST_RULES, nearest_grid_index
from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser, check_images
from .fpmc import DEFAULT_BLOCK_SIZE, FilteredPosteriorMeans, tile_order
from .softmax import OnlineSoftmax

Padding = Literal["circular", "zeros"]

#: ELS works in blocks of this many float64 logits, small enough to stay in cache.
ELS_BLOCK_ELEMENTS = 2**17

#: Query windows per ELS step.
ELS_QUERY_ROWS = 128

#: Float64 elements (2 GiB) of prepared ELS patch sets one denoiser keeps between calls; past it
#: the cache is emptied. The boundary-broken patch sets of one side ``k`` hold up to
#: ``N H W C k^2`` elements (Fashion-MNIST, N = 1,024, k = 17: 1.9 GB before merging).
ELS_CACHE_ELEMENTS = 2**28

#: ``engine="auto"`` on the CPU uses the fused kernel for windows of at most this many features
#: (C k^2, so ``k = 3`` on one channel); wider windows use the matrix-product engine, whose
#: blocked float64 GEMM beats the kernel's per-feature difference sweeps there.
ELS_FUSED_MAX_FEATURES = 9

#: Query windows per ELS step of the torch engine on an accelerator (CUDA without Triton, or
#: ``engine="torch"``), whose steps are bounded by ``chunk_elements`` logits instead of the
#: cache: cache-sized steps of :data:`ELS_QUERY_ROWS` rows would make tens of thousands of small
#: kernels per batch, bound by their launches.
ELS_DEVICE_QUERY_ROWS = 4096

#: ``engine="auto"`` on CUDA uses the fused Triton kernel when Triton is installed (it ships with
#: torch's Linux CUDA wheels); it keeps no logit in memory (:mod:`.kernels.els_triton`).
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def resolve_odd_schedule(
    patch_size: int | None,
    sigmas: Sequence[float] | Tensor | None,
    patch_sizes: Sequence[int] | None,
) -> tuple[Tensor, tuple[int, ...]]:
    """``(grid sigmas [S], sizes)`` from ``patch_size=k`` or ``sigmas=[...], patch_sizes=[...]``;
    every size must be a positive odd integer (a window centred on its pixel)."""
    if patch_size is not None:
        if sigmas is not None or patch_sizes is not None:
            raise ValueError(
                "give either patch_size=k or sigmas=[...] with patch_sizes=[...], not both"
            )
        grid, sizes = torch.ones(1, dtype=torch.float64), (patch_size,)
    else:
        if sigmas is None or patch_sizes is None:
            raise ValueError(
                "give patch_size=k (odd) or a schedule sigmas=[...] with patch_sizes=[...]"
            )
        grid = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        sizes = tuple(patch_sizes)
        if grid.numel() != len(sizes) or not sizes:
            raise ValueError(
                f"sigmas and patch_sizes must have the same non-zero length, got {grid.numel()} "
                f"and {len(sizes)}"
            )
        if not bool((grid > 0).all()):
            raise ValueError(f"grid sigmas must be > 0, got {grid.tolist()}")
    bad = [k for k in sizes if int(k) != k or k < 1 or k % 2 == 0]
    if bad:
        raise ValueError(
            f"patch sizes must be positive odd integers (a window centred on its pixel), got "
            f"{bad}; use e.g. {[max(1, int(k) | 1) for k in bad]}"
        )
    return grid, tuple(int(k) for k in sizes)


class _ScheduledLocal(ClosedFormDenoiser):
    """Shared schedule handling: a window side per grid sigma, nearest grid sigma wins."""

    def __init__(self, images, patch_size, sigmas, patch_sizes, chunk_elements, nearest) -> None:
        images = check_images(images)
        super().__init__(images, chunk_elements)
        if nearest not in NEAREST_RULES:
            raise ValueError(f"nearest={nearest!r}: use one of {NEAREST_RULES}")
        self.nearest = nearest
        grid, self.patch_sizes = resolve_odd_schedule(patch_size, sigmas, patch_sizes)
        self.register_buffer("images", images.contiguous(), persistent=False)
        self.register_buffer("grid_sigmas", grid, persistent=False)

    def patch_size_for(self, sigma: Tensor) -> Tensor:
        """Window side ``[B]`` (long) for noise levels ``sigma [B]``: nearest grid sigma
        (:func:`~lightning_pspc.denoisers.schedules.nearest_grid_index` by ``nearest``)."""
        nearest = nearest_grid_index(sigma, self.grid_sigmas, self.nearest)
        return torch.tensor(self.patch_sizes, device=nearest.device)[nearest]

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        sizes = self.patch_size_for(sigma)
        out = torch.empty_like(z)
        for k in sizes.unique().tolist():
            sel = (sizes == k).nonzero().squeeze(1)
            out[sel] = self._denoise_size(z[sel], sigma[sel], int(k))
        return out

    def _denoise_size(self, z: Tensor, sigma: Tensor, k: int) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"N={self.num_images}, image_shape={self.image_shape}, patch_sizes={self.patch_sizes}"
        )


def local_windows(height: int, width: int, k: int) -> Tensor:
    """Indicators ``[H*W, 1, H, W]`` of the ``k x k`` windows centred on each pixel (row-major),
    truncated at the image border."""
    r = torch.arange(height)
    c = torch.arange(width)
    rows = (r.view(-1, 1) - r.view(1, -1)).abs() <= k // 2  # [H, H]
    cols = (c.view(-1, 1) - c.view(1, -1)).abs() <= k // 2  # [W, W]
    win = rows.view(height, 1, height, 1) & cols.view(1, width, 1, width)  # [H, W, H, W]
    return win.reshape(height * width, 1, height, width).to(torch.float64)


class LocalDenoiser(_ScheduledLocal):
    """LS, Kamb & Ganguli's local score machine: output pixel ``p`` is the centre pixel (all
    channels) of the posterior mean over the training images' crops at the same location, with
    the ``k x k`` window centred at ``p`` truncated at the image border.

    ``k >= 2 max(H, W) - 1`` (every window the whole image) is the empirical denoiser. Give
    ``patch_size=k`` (odd) or ``sigmas=[...], patch_sizes=[...]`` (nearest grid sigma by
    ``nearest``, ``"absolute"`` or ``"log"``). Computed by the FPMC engine (:mod:`.fpmc`;
    windows merged when equal, blocks of neighbours).
    """

    def __init__(
        self,
        images: Tensor,
        patch_size: int | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        patch_sizes: Sequence[int] | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        nearest: str = "absolute",
    ) -> None:
        super().__init__(images, patch_size, sigmas, patch_sizes, chunk_elements, nearest)
        self.block_size = int(block_size)
        self._collections: dict[int, FilteredPosteriorMeans] = {}

    def collection(self, k: int) -> FilteredPosteriorMeans:
        """The prepared FPMC collection for window side ``k`` (cached)."""
        if k not in self._collections:
            _, h, w = self.image_shape
            order = tile_order(h, w)
            q = local_windows(h, w, k)[order]
            r = torch.eye(h * w, dtype=torch.float64)[order].view(h * w, 1, h, w)
            self._collections[k] = FilteredPosteriorMeans(q, r, self.image_shape, self.block_size)
        return self._collections[k].to(self.images.device)

    def _denoise_size(self, z: Tensor, sigma: Tensor, k: int) -> Tensor:
        return self.collection(k).posterior_mean(z, sigma, self.images, 1.0, self.chunk_elements)


def _unfold_windows(x: Tensor, k: int, padding: Padding) -> Tensor:
    """The ``k x k`` window centred on every pixel: ``x [B,C,H,W]`` -> ``[B, H*W, C*k*k]``."""
    h = k // 2
    if padding == "circular":
        reps_h, reps_w = -(-h // x.shape[2]), -(-h // x.shape[3])  # windows wider than the image
        tiled = x.repeat(1, 1, 2 * reps_h + 1, 2 * reps_w + 1)
        r0, c0 = reps_h * x.shape[2] - h, reps_w * x.shape[3] - h
        x = tiled[:, :, r0 : r0 + x.shape[2] + 2 * h, c0 : c0 + x.shape[3] + 2 * h]
        return F.unfold(x, k).transpose(1, 2)
    return F.unfold(x, k, padding=h).transpose(1, 2)


def _windows_at(padded: Tensor, k: int, pix: Tensor) -> Tensor:
    """The ``k x k`` windows of ``padded [B, C, H + 2h, W + 2h]`` (zero-padded by ``h = k // 2``)
    centred on the flat pixel indices ``pix [P]`` of the ``H x W`` image -> ``[B, P, C*k*k]``
    (features ordered as :func:`torch.nn.functional.unfold`'s: channel, row, col)."""
    b, c, _, w = padded.shape
    w -= 2 * (k // 2)  # the image's width
    offsets = torch.arange(k, device=padded.device)
    pix = pix.to(padded.device)
    rows = (pix // w).view(-1, 1, 1) + offsets.view(1, -1, 1)  # [P, k, 1] padded top rows
    cols = (pix % w).view(-1, 1, 1) + offsets.view(1, 1, -1)  # [P, 1, k]
    windows = padded[:, :, rows, cols]  # [B, C, P, k, k]
    return windows.permute(0, 2, 1, 3, 4).reshape(b, pix.numel(), c * k * k)


def _axis_classes(n: int, k: int) -> Tensor:
    """Boundary-broken class of each row (column) index: its own index on the border
    (``i < k//2`` or ``i >= n - k//2``), ``-1`` for every interior index."""
    i = torch.arange(n)
    border = (i < k // 2) | (i >= n - k // 2)
    return torch.where(border, i, torch.full_like(i, -1))


def _elements(prepared: tuple) -> int:
    """Elements held by the tensors of a prepared patch set."""
    return sum(t.numel() for t in prepared if isinstance(t, Tensor))


def prepare_patch_set(patches: Tensor, centre: Tensor) -> tuple[Tensor, Tensor]:
    """Merges equal patches (exact: equal patches get equal weights, so one patch with its
    multiplicity ``c`` in the logit, ``+ log c``, stands for all; Fashion-MNIST's black background
    makes many patches equal). ``patches [M, K]``, ``centre [C]`` indices into K ->
    ``(rhs [M', K+2] = [x, ||x||^2, log c], centres [M', C])``."""
    uniq, counts = torch.unique(patches, dim=0, return_counts=True)
    rhs = torch.cat(
        [uniq, uniq.square().sum(1, keepdim=True), counts.to(uniq.dtype).log().unsqueeze(1)], 1
    )
    return rhs.contiguous(), uniq[:, centre].contiguous()


def els_posterior_centres(
    queries: Tensor,
    rhs: Tensor,
    centres: Tensor,
    inv_s2: Tensor,
    block: int,
    query_rows: int = ELS_QUERY_ROWS,
) -> Tensor:
    """Posterior mean of the patch centres for each query window.

    ``queries [B, P, K]`` (window of noisy image b at pixel p), the source set prepared by
    :func:`prepare_patch_set` (``rhs [M, K+2]``, ``centres [M, C]``), ``inv_s2 [B]`` ->
    ``[B, P, C]``. Logits ``(2 z.x - ||x||^2) / 2 s^2 + log c`` in float64 (the ``||z||^2`` term
    cancels), streamed over the patch set with an online softmax in blocks of about ``block``
    logits so every step stays in cache (the exponential stays float64: casts to float32 would
    cost more than they save).
    """
    b, p, k = queries.shape
    s2 = inv_s2.view(b, 1, 1)
    ones = queries.new_ones(b, p, 1)
    lhs = torch.cat([queries * s2, -0.5 * s2 * ones, ones], 2).reshape(b * p, k + 2)
    out = torch.empty(b * p, centres.shape[1], dtype=queries.dtype, device=queries.device)
    # query_rows x (block / query_rows) logits per step stay in cache; row slices of the
    # [M, K+2] layout feed the product without a copy.
    rows = max(1, min(b * p, query_rows))
    step = max(256, block // rows)
    for r0 in range(0, b * p, rows):
        q = lhs[r0 : r0 + rows]
        state = OnlineSoftmax.empty((q.shape[0],), centres.shape[1], like=q)
        for s in range(0, rhs.shape[0], step):
            state.update(q @ rhs[s : s + step].T, centres[s : s + step])
        out[r0 : r0 + rows] = state.result()
    return out.view(b, p, -1)


class EquivariantLocalDenoiser(_ScheduledLocal):
    """ELS, Kamb & Ganguli's equivariant local score machine: output pixel ``p`` is the centre
    (all channels) of the posterior mean, given ``z``'s ``k x k`` window at ``p``, over a set of
    ``k x k`` patches from every position of every training image (docs/reference.md section 2.6):

    * ``padding="circular"`` (their ELS): ``z``'s window wraps around; the patch set is every
      valid (fully inside) patch of every training image. Commutes with circular shifts.
    * ``padding="zeros"`` (their boundary-broken ELS): ``z``'s window is zero-padded; pixel
      ``(r, c)`` matches the zero-padded windows of every training image centred at pixels of the
      same class on each axis (a border row ``r < k//2`` or ``r >= H - k//2`` only itself, the
      interior rows each other; columns alike). ``k >= H, W`` is LS.

    Give ``patch_size=k`` (odd) or ``sigmas=[...], patch_sizes=[...]`` (nearest grid sigma).
    All windows of all pixels are one matrix product against the patch set per class of pixels, in
    cache-sized blocks with a float64 online softmax (:func:`els_posterior_centres`); on the CPU a
    fused numba kernel (:func:`.kernels.fpmc_cpu.els_centres_cpu`), on CUDA a fused Triton kernel
    (:func:`.kernels.els_triton.els_centres_triton`; attribute ``engine``).
    """

    def __init__(
        self,
        images: Tensor,
        patch_size: int | None = None,
        padding: Padding = "circular",
        sigmas: Sequence[float] | Tensor | None = None,
        patch_sizes: Sequence[int] | None = None,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        nearest: str = "absolute",
    ) -> None:
        if padding not in ("circular", "zeros"):
            raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
        super().__init__(images, patch_size, sigmas, patch_sizes, chunk_elements, nearest)
        self.padding: Padding = padding
        #: ``"auto"``: the fused numba kernel (:func:`.kernels.fpmc_cpu.els_centres_cpu`) on the CPU
        #: for windows of at most ``ELS_FUSED_MAX_FEATURES`` features, the fused Triton kernel
        #: (:func:`.kernels.els_triton.els_centres_triton`) on CUDA, else
        #: :func:`els_posterior_centres` (torch); ``"torch"``, ``"fused"`` or ``"triton"`` force one
        #: (``"triton"`` on the CPU needs ``TRITON_INTERPRET=1``, for tests).
        self.engine = "auto"
        self._patch_sets: dict[tuple, tuple] = {}
        self._same_location: dict[tuple, LocalDenoiser] = {}
        c, h, w = self.image_shape
        if padding == "circular" and max(self.patch_sizes) > min(h, w):
            raise ValueError(
                f"circular ELS needs patch sizes <= the image side {min(h, w)} (its patch set is "
                f"the valid patches), got {max(self.patch_sizes)}; use padding='zeros'"
            )

    def _patch_set(
        self,
        k: int,
        pix: Tensor | None,
        centre: Tensor,
        padded: Callable[[], Tensor] | None = None,
        triton: bool = False,
    ) -> tuple:
        """Prepared source set (:func:`prepare_patch_set`) of side ``k``: every valid patch
        (``pix=None``), or the windows centred at pixels ``pix`` of ``padded()`` (the images
        zero-padded by ``k // 2``, made once per call and side, not per class); with ``triton`` in
        the Triton kernel's layout (:func:`.kernels.els_triton.triton_patch_set`) instead. Cached
        (up to :data:`ELS_CACHE_ELEMENTS`)."""
        key = (k, None if pix is None else tuple(pix.tolist()), self.images.device, triton)
        if key not in self._patch_sets:
            c = self.image_shape[0]
            if pix is None:
                x = self.images.to(torch.float64)
                patches = F.unfold(x, k).transpose(1, 2).reshape(-1, c * k * k)  # [N L, C k^2]
            else:  # only the windows at pix, not all H*W windows again for every class
                patches = _windows_at(padded(), k, pix).reshape(-1, c * k * k)
            prepared = prepare_patch_set(patches, centre)  # [N |pix|, C k^2] merged
            if triton:
                from .kernels import triton_patch_set

                prepared = triton_patch_set(*prepared)
            held = sum(map(_elements, self._patch_sets.values()))
            if held + _elements(prepared) > ELS_CACHE_ELEMENTS:
                self._patch_sets.clear()
            self._patch_sets[key] = prepared
        return self._patch_sets[key]

    def _denoise_size(self, z: Tensor, sigma: Tensor, k: int) -> Tensor:
        b, c, h, w = z.shape
        inv_s2 = 1.0 / sigma.square()
        if self.padding == "zeros" and k > h and k > w:
            # every row and column is a border one: each pixel matches only its own location,
            # and zero padding adds 0 to every distance, so this is LS (the FPMC engine, no
            # N H W C k^2 patch set, which grows with k^2)
            key = (k, self.images.device)
            if key not in self._same_location:
                self._same_location[key] = LocalDenoiser(
                    self.images, patch_size=k, chunk_elements=self.chunk_elements
                )
            return self._same_location[key]._denoise_size(z, sigma, k)
        queries = _unfold_windows(z, k, self.padding)  # [B, HW, C k^2]
        centre = (torch.arange(c) * k * k + (k // 2) * k + k // 2).to(z.device)  # in C k^2
        block = min(ELS_BLOCK_ELEMENTS, self.chunk_elements)
        small = c * k * k <= ELS_FUSED_MAX_FEATURES
        triton = self.engine == "triton" or (
            self.engine == "auto" and z.device.type == "cuda" and _HAS_TRITON
        )
        if self.engine == "fused" or (self.engine == "auto" and z.device.type == "cpu" and small):
            from .kernels import els_centres_cpu

            def centres_of(q, patch_set, inv_s2):
                return els_centres_cpu(q, *patch_set, inv_s2)
        elif triton:
            from .kernels import els_centres_triton

            centres_of = els_centres_triton
        elif z.device.type == "cpu":

            def centres_of(q, patch_set, inv_s2):
                return els_posterior_centres(q, *patch_set, inv_s2, block)
        else:  # big steps: few kernels (see ELS_DEVICE_QUERY_ROWS)

            def centres_of(q, patch_set, inv_s2):
                return els_posterior_centres(
                    q, *patch_set, inv_s2, self.chunk_elements, ELS_DEVICE_QUERY_ROWS
                )

        if self.padding == "circular":
            out = centres_of(queries, self._patch_set(k, None, centre, triton=triton), inv_s2)
            return out.transpose(1, 2).reshape(b, c, h, w)
        rc, cc = _axis_classes(h, k), _axis_classes(w, k)
        cls = (rc.view(-1, 1) * (w + 1) + cc.view(1, -1)).reshape(-1)  # [HW] class id
        out = torch.empty(b, h * w, c, dtype=z.dtype, device=z.device)
        padded = functools.cache(lambda: F.pad(self.images.to(torch.float64), (k // 2,) * 4))
        for label in cls.unique().tolist():
            pix = (cls == label).nonzero().squeeze(1).to(z.device)
            patch_set = self._patch_set(k, pix, centre, padded, triton)
            out[:, pix] = centres_of(queries[:, pix], patch_set, inv_s2)
        return out.transpose(1, 2).reshape(b, c, h, w)
