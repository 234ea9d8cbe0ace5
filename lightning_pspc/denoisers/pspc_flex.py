"""PSPC-Flex: patch-set posterior composites with masks cut from sensitivity heatmaps
(Niedoba et al. 2024, sec. 5; docs/reference.md section 2.5), a member of the FPMC class
(:mod:`.fpmc`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..diffusion.schedule import edm_sigmas
from .base import DEFAULT_CHUNK_ELEMENTS, ClosedFormDenoiser, check_images
from .fpmc import DEFAULT_BLOCK_SIZE, FilteredPosteriorMeans, tile_order
from .schedules import CIFAR10_TAUS


def check_heatmaps(heatmaps: Tensor, height: int, width: int, lead: int) -> Tensor:
    """Validates heatmaps ``[*lead, H, W, H, W]`` (finite, >= 0, no all-zero row); float64."""
    want = (height, width, height, width)
    if (
        not isinstance(heatmaps, Tensor)
        or heatmaps.ndim != lead + 4
        or heatmaps.shape[lead:] != want
    ):
        got = tuple(heatmaps.shape) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__
        layout = "[S, H, W, H, W] with sigmas=[S]" if lead else "[H, W, H, W]"
        raise ValueError(
            f"heatmaps must have shape {layout} = [{'S, ' if lead else ''}{height}, {width}, "
            f"{height}, {width}] (heatmaps[..., r, c, :, :] is output pixel (r, c)'s sensitivity), "
            f"got {got}; compute them with lightning_pspc.locality.sensitivity_heatmaps"
        )
    h = heatmaps.detach().to(torch.float64)
    if not torch.isfinite(h).all() or (h < 0).any():
        raise ValueError(
            f"heatmaps must be finite and >= 0, got min {h.min().item():.3g}; pass absolute "
            "sensitivities (sensitivity_heatmaps sums |Jacobian| entries)"
        )
    zero = h.flatten(-2).sum(-1) == 0  # [*lead, H, W]
    if zero.any():
        first = [int(i) for i in zero.nonzero()[0].tolist()]
        raise ValueError(
            f"heatmaps has an all-zero row at index {first} (an output pixel sensitive to "
            "nothing); no mask can be cut from it: recompute with more probes or add a small "
            "positive floor"
        )
    return h


def masks_from_heatmaps(heatmaps: Tensor, tau: float) -> Tensor:
    """The published mask rule for every pixel: ``heatmaps [H, W, H, W]`` -> bool ``[H, W, H, W]``.

    Per output pixel: normalise its heatmap to sum 1, sort ascending (stable), cumulative sum
    ``c``, keep the pixels with ``c >= 1 - tau`` (the fewest highest-sensitivity pixels holding at
    least ``tau`` of the mass); ``tau = 1`` keeps every pixel. Computed in float64; the pixel
    with the largest sensitivity is always kept (guards ``c`` rounding below ``1 - tau``).
    """
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1] (the mass fraction a mask holds), got {tau}")
    h, w = heatmaps.shape[:2]
    flat = heatmaps.reshape(h * w, h * w).to(torch.float64)
    flat = flat / flat.sum(1, keepdim=True)
    vals, idx = flat.sort(dim=1, stable=True)
    keep = vals.cumsum(1) >= 1 - tau
    keep[:, -1] = True
    masks = torch.zeros_like(keep).scatter_(1, idx, keep)
    return masks.view(h, w, h, w)


def _shape(heatmaps: object) -> str:
    """``heatmaps``' shape for an error message (its type when it is no tensor)."""
    return str(tuple(heatmaps.shape)) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__


def _resolve(
    heatmaps: Tensor, tau: float | None, taus, sigmas, soft: bool, hw: tuple[int, int]
) -> tuple[Tensor, Tensor, tuple[float, ...]]:
    """``(grid sigmas [S], heatmaps [S, H, W, H, W], taus)`` from either form of the arguments.

    Every error names the layout expected and the shape received."""
    h, w = hw
    got = f"got heatmaps of shape {_shape(heatmaps)}"
    if isinstance(heatmaps, Tensor) and heatmaps.ndim == 4:
        if taus is not None or sigmas is not None:
            raise ValueError(
                f"taus=[...] and sigmas=[...] go with a schedule of heatmaps [S, H, W, H, W] = "
                f"[S, {h}, {w}, {h}, {w}], {got}; with one heatmap [H, W, H, W] give tau=..."
            )
        if tau is None and not soft:
            raise ValueError(
                f"give tau=... in (0, 1] (the mass fraction of each mask) with one heatmap "
                f"[H, W, H, W] = [{h}, {w}, {h}, {w}]; {got} and no tau"
            )
        hm = check_heatmaps(heatmaps, *hw, lead=0).unsqueeze(0)
        return torch.ones(1, dtype=torch.float64), hm, (1.0 if tau is None else float(tau),)
    if tau is not None:
        raise ValueError(
            f"a schedule of heatmaps [S, H, W, H, W] = [S, {h}, {w}, {h}, {w}] takes taus=[S], "
            f"not tau; {got} with tau={tau} (one heatmap [H, W, H, W] takes tau)"
        )
    hm = check_heatmaps(heatmaps, *hw, lead=1)
    s = hm.shape[0]
    grid = edm_sigmas(s) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
    if taus is None:
        if soft:
            taus = (1.0,) * s
        elif s == len(CIFAR10_TAUS):
            taus = CIFAR10_TAUS
        else:
            raise ValueError(
                f"give taus=[...] with one tau per heatmap (S = {s}: {got}); the built-in "
                f"CIFAR-10 schedule has {len(CIFAR10_TAUS)}"
            )
    taus = tuple(float(t) for t in taus)
    if not grid.ndim == 1 or not grid.numel() == len(taus) == s:
        raise ValueError(
            f"heatmaps, taus and sigmas must have the same length S, got {s}, {len(taus)} and "
            f"{grid.numel()} ({got} [S, H, W, H, W], taus {list(taus)}, sigmas "
            f"{grid.reshape(-1).tolist()})"
        )
    if not bool((grid > 0).all()):
        raise ValueError(f"grid sigmas must be > 0, got {grid.tolist()}")
    bad = [t for t in taus if not 0 < t <= 1]
    if bad:
        raise ValueError(f"every tau must be in (0, 1] (a mass fraction), got {bad}")
    return grid, hm, taus


class PSPCFlexDenoiser(ClosedFormDenoiser):
    """PSPC-Flex (Niedoba et al. 2024, sec. 5): one patch-set posterior mean per output pixel,
    over the mask cut from that pixel's sensitivity heatmap, composited by averaging.

    Pixel ``(r, c)``'s mask is :func:`masks_from_heatmaps` of ``heatmaps[r, c]`` at ``tau``; its
    masked crop's posterior mean (all channels) is added onto every pixel of the mask and each
    pixel is divided by the number of masks covering it; pixels no mask covers take the empirical
    denoiser's value. ``tau = 1`` is the empirical denoiser. FPMC member: ``q_k = r_k =`` mask k.

    Forms:

    * ``PSPCFlexDenoiser(images, heatmaps [H, W, H, W], tau)``: one mask set for every sigma;
    * ``PSPCFlexDenoiser(images, heatmaps=[S, H, W, H, W], taus=[S], sigmas=[S])``: an input
      sigma takes the heatmap and tau of the nearest grid sigma (absolute difference);
      ``sigmas`` defaults to the ``S`` EDM sigmas and, for ``S = 18``, ``taus`` to the CIFAR-10
      schedule (:data:`~lightning_pspc.denoisers.schedules.CIFAR10_TAUS`).

    ``soft=True`` is the soft relaxation: each pixel's heatmap divided by its maximum (the most
    sensitive pixel gets precision 1, as a mask pixel does) is its query precision and response
    weight; ``tau`` is then unused.

    Args:
        images: training set ``[N, C, H, W]`` in [-1, 1].
        block_size: elements per block of the FPMC engine.
    """

    def __init__(
        self,
        images: Tensor,
        heatmaps: Tensor,
        tau: float | None = None,
        taus: Sequence[float] | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        soft: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        images = check_images(images)
        super().__init__(images, chunk_elements)
        hw = (images.shape[2], images.shape[3])
        if tau is not None and not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1] (the mass fraction a mask holds), got {tau}")
        grid, hm, self.taus = _resolve(heatmaps, tau, taus, sigmas, soft, hw)
        self.soft, self.block_size = bool(soft), int(block_size)
        self.register_buffer("images", images.contiguous(), persistent=False)
        self.register_buffer("grid_sigmas", grid, persistent=False)
        self.register_buffer("heatmaps", hm, persistent=False)
        self._collections: dict[int, FilteredPosteriorMeans] = {}

    def grid_index(self, sigma: Tensor) -> Tensor:
        """Index ``[B]`` of the nearest grid sigma for noise levels ``sigma [B]``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=self.grid_sigmas.device)
        return (sigma.reshape(-1, 1) - self.grid_sigmas).abs().argmin(1)

    def query(self, index: int) -> Tensor:
        """Query precisions (= response weights) ``[H*W, 1, H, W]`` of grid entry ``index``, one
        element per output pixel in row-major order."""
        h, w = self.image_shape[1:]
        hm = self.heatmaps[index]
        if self.soft:
            flat = hm.reshape(h * w, h * w)
            q = flat / flat.amax(1, keepdim=True)
        else:
            q = masks_from_heatmaps(hm, self.taus[index]).reshape(h * w, h * w).to(torch.float64)
        return q.view(h * w, 1, h, w)

    def collection(self, index: int) -> FilteredPosteriorMeans:
        """The prepared FPMC collection of grid entry ``index`` (built once, then cached)."""
        if index not in self._collections:
            h, w = self.image_shape[1:]
            q = self.query(index).cpu()[tile_order(h, w)]
            coll = FilteredPosteriorMeans(q, q, self.image_shape, self.block_size)
            self._collections[index] = coll
        return self._collections[index].to(self.images.device)

    def _denoise(self, z: Tensor, sigma: Tensor) -> Tensor:
        idx = self.grid_index(sigma)
        out = torch.empty_like(z)
        for i in idx.unique().tolist():
            sel = (idx == i).nonzero().squeeze(1)
            out[sel] = self.collection(int(i)).posterior_mean(
                z[sel], sigma[sel], self.images, 1.0, self.chunk_elements
            )
        return out

    def extra_repr(self) -> str:
        return f"N={self.num_images}, image_shape={self.image_shape}, taus={self.taus}, soft={self.soft}"
