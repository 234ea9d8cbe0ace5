"""Sensitivity heatmaps of a denoiser and the patch sizes they imply (docs/reference.md section 3b).

``G[r, c, i, j] = mean_z sum_{c_out, c_in} |dD(z, s)[c_out, r, c] / dz[c_in, i, j]|``: row ``(r, c)``
is where output pixel ``(r, c)`` looks. Niedoba et al. (2024, sec. 5) cut PSPC-Flex's masks
from these heatmaps; the published code ships them as a download, here they are computed from
the network with batched vector-Jacobian products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]


class ProbeLike(Protocol):
    """Probes ``z [M, C, H, W]`` at ``sigma [M]`` (a ``ProbeSet``)."""

    z: Tensor
    sigma: Tensor


#: Default bound on cotangents x probes per batched VJP (memory ~ this many backward passes).
DEFAULT_VJP_BATCH = 256


def strided_pixels(height: int, width: int, stride: int) -> Tensor:
    """Output pixels ``[P, 2]`` (row, col) of a grid with step ``stride``, centred in the image."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    r = torch.arange((height - 1) % stride // 2, height, stride)
    c = torch.arange((width - 1) % stride // 2, width, stride)
    return torch.cartesian_prod(r, c)


def _resolve_pixels(
    height: int, width: int, pixels: Tensor | None, stride: int | None
) -> Tensor | None:
    if pixels is not None and stride is not None:
        raise ValueError("give pixels=[P, 2] or stride=s, not both")
    if stride is not None:
        return strided_pixels(height, width, stride)
    if pixels is None:
        return None
    pixels = torch.as_tensor(pixels, dtype=torch.long).reshape(-1, 2)
    bad = (
        (pixels[:, 0] < 0) | (pixels[:, 0] >= height) | (pixels[:, 1] < 0) | (pixels[:, 1] >= width)
    )
    if bad.any():
        raise ValueError(
            f"pixels must be (row, col) inside the {height}x{width} image, got "
            f"{pixels[bad][0].tolist()}"
        )
    return pixels


def sensitivity_heatmaps(
    denoiser: Denoiser,
    z: Tensor,
    sigma: float,
    pixels: Tensor | None = None,
    stride: int | None = None,
    vjp_batch: int = DEFAULT_VJP_BATCH,
) -> Tensor:
    """Mean absolute Jacobian of ``denoiser`` over the probes ``z [M, C, H, W]`` at ``sigma``.

    Returns ``[H, W, H, W]`` (all output pixels), or ``[P, H, W]`` for the output pixels
    ``pixels [P, 2]`` / the grid ``stride`` (:func:`strided_pixels`). Entry ``[.., i, j]`` sums
    ``|dD[c_out, r, c] / dz[c_in, i, j]|`` over both channel axes (each output channel is its own
    VJP: the sum of absolute values is not the absolute value of a sum) and averages over probes.

    The denoiser runs once per call; its VJP is batched over output pixels with
    ``torch.func.vmap``, ``vjp_batch // M`` cotangents at a time (memory bound). A full heatmap
    costs ``C * H * W`` VJPs per probe. Networks must be per-sample (eval mode: no batch-norm
    statistics, no dropout) so that one VJP over the probe batch gives every probe's row.

    A denoiser whose output does not depend on ``z`` through autograd (the closed forms, whose
    numba and Triton kernels run without gradients) is refused with a ``ValueError``: its
    heatmaps would be all zeros.
    """
    if z.ndim != 4:
        raise ValueError(f"z must be probes [M, C, H, W], got shape {tuple(z.shape)}")
    m, c, h, w = z.shape
    pix = _resolve_pixels(h, w, pixels, stride)
    s = torch.full((m,), float(sigma), dtype=z.dtype, device=z.device)
    check_differentiable(denoiser, z[:1], s[:1])
    flat = (
        torch.arange(h * w, device=z.device)
        if pix is None
        else (pix[:, 0] * w + pix[:, 1]).to(z.device)
    )
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(lambda x: denoiser(x, s), z.detach())
    out = torch.zeros(flat.numel(), h, w, dtype=z.dtype, device=z.device)
    group = max(1, vjp_batch // m)
    batched = torch.func.vmap(vjp_fn)
    for c_out in range(c):
        for start in range(0, flat.numel(), group):
            idx = flat[start : start + group]
            # one-hot cotangent at (c_out, pixel) in every probe: [G, M, C, H*W]
            cot = torch.zeros(idx.numel(), m, c, h * w, dtype=z.dtype, device=z.device)
            cot[torch.arange(idx.numel(), device=z.device), :, c_out, idx] = 1
            (grads,) = batched(cot.view(idx.numel(), m, c, h, w))  # [G, M, C, H, W]
            out[start : start + idx.numel()] += grads.detach().abs().sum(2).mean(1)
    return out.view(h, w, h, w) if pix is None else out


def check_differentiable(denoiser: Denoiser, z: Tensor, sigma: Tensor) -> None:
    """Raise ``ValueError`` unless ``denoiser(z [B, C, H, W], sigma [B])`` has a gradient in ``z``
    (one forward and backward pass of the given probes)."""
    x = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = denoiser(x, sigma)
        grad = None
        if out.requires_grad:
            (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    if grad is None:
        name = getattr(denoiser, "__name__", None) or type(denoiser).__name__
        raise ValueError(
            f"sensitivity heatmaps need a denoiser differentiable in z, but {name}'s output does "
            "not depend on z through autograd (closed-form denoisers run without gradients), so "
            "every heatmap would be all zeros. Fix: pass a network denoiser (e.g. "
            "DiffusionModule.denoiser); a closed form's locality is its patch size or masks"
        )


def heatmaps_at_sigmas(
    denoiser: Denoiser,
    probes: ProbeLike,
    sigmas: Sequence[float] | Tensor,
    pixels: Tensor | None = None,
    stride: int | None = None,
    vjp_batch: int = DEFAULT_VJP_BATCH,
) -> Tensor:
    """:func:`sensitivity_heatmaps` at each of ``sigmas [S]`` from the fixed probes of that sigma:
    ``[S, H, W, H, W]`` (or ``[S, P, H, W]`` with ``pixels``/``stride``).

    ``probes`` is a :class:`~lightning_pspc.evaluation.probes.ProbeSet` (``z [M, C, H, W]``,
    ``sigma [M]``), normally the evaluation's held-out forward probes
    (:func:`lightning_pspc.evaluation.forward_probes` seeded by ``EvalSeeds.heldout_probes``), so
    every caller uses one probe source. Each sigma must have at least one probe. The input of
    :class:`~lightning_pspc.denoisers.PSPCFlexDenoiser`'s schedule form.
    """
    sig = [float(s) for s in torch.as_tensor(sigmas).reshape(-1).tolist()]
    ps = torch.as_tensor(probes.sigma, dtype=torch.float64).cpu()
    out = []
    for s in sig:
        sel = ((ps - s).abs() <= 1e-9 * max(abs(s), 1.0)).nonzero().squeeze(1)
        if not sel.numel():
            raise ValueError(
                f"no probe at sigma={s:.4g} (probes are at {sorted(set(ps.tolist()))}); build "
                "the probes on the same sigma grid"
            )
        z = probes.z[sel.to(probes.z.device)]
        out.append(sensitivity_heatmaps(denoiser, z, s, pixels, stride, vjp_batch))
    return torch.stack(out)


def sensitivity_patch_size(
    heatmaps: Tensor, fraction: float, pixels: Tensor | None = None
) -> float:
    """Mean over output pixels of the side of the smallest centred odd square holding at least
    ``fraction`` of the pixel's heatmap mass (docs/reference.md section 3b; Niedoba et al. report about
    13 at sigma = 30 down to 3 at sigma = 0.03 on CIFAR-10, ``fraction = 0.5``).

    ``heatmaps [H, W, H, W]``, or ``[P, H, W]`` with the rows' ``pixels [P, 2]``. The square is
    clipped to the image when its mass is summed, and the side reported is at most the image's
    larger side (a square that must cover the whole image counts as the image). A row with
    NaN or inf values, or without mass (all zeros), is a ``ValueError`` naming its pixel.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if heatmaps.ndim == 4:
        h, w = heatmaps.shape[:2]
        if tuple(heatmaps.shape[2:]) != (h, w):
            raise ValueError(f"heatmaps must be [H, W, H, W], got {tuple(heatmaps.shape)}")
        rows = heatmaps.reshape(h * w, h, w)
        pix = strided_pixels(h, w, 1)
    elif heatmaps.ndim == 3 and pixels is not None:
        rows, (h, w) = heatmaps, heatmaps.shape[1:]
        pix = _resolve_pixels(h, w, pixels, None)
        if pix.shape[0] != rows.shape[0]:
            raise ValueError(f"{rows.shape[0]} heatmap rows but {pix.shape[0]} pixels")
    else:
        raise ValueError(
            f"heatmaps must be [H, W, H, W], or [P, H, W] with pixels=[P, 2]; got "
            f"{tuple(heatmaps.shape)}"
        )
    check_rows(rows, pix)
    rows = rows.to(torch.float64).abs()
    cum = torch.nn.functional.pad(rows.cumsum(1).cumsum(2), (1, 0, 1, 0))  # [P, H+1, W+1]
    radius = torch.arange(max(h, w), device=rows.device)  # half-sides t: side 2t+1
    r, c = pix[:, :1].to(rows.device), pix[:, 1:].to(rows.device)  # [P, 1]
    r0, r1 = (r - radius).clamp(0, h), (r + radius + 1).clamp(0, h)  # [P, T]
    c0, c1 = (c - radius).clamp(0, w), (c + radius + 1).clamp(0, w)
    p = torch.arange(rows.shape[0], device=rows.device).view(-1, 1)
    mass = cum[p, r1, c1] - cum[p, r0, c1] - cum[p, r1, c0] + cum[p, r0, c0]  # [P, T]
    total = cum[:, -1, -1].unsqueeze(1)
    enough = mass >= fraction * total * (1 - 1e-12)
    first = enough.float().argmax(1)  # smallest radius holding the fraction
    side = (2 * first + 1).clamp(max=max(h, w)).to(torch.float64)
    return float(side.mean())


def check_rows(rows: Tensor, pixels: Tensor) -> None:
    """Heatmap rows ``[P, H, W]`` of output ``pixels [P, 2]`` must be finite and hold mass."""
    finite = torch.isfinite(rows).flatten(1).all(1)  # [P]
    empty = finite & (rows.abs().flatten(1).sum(1) == 0)
    for bad, what, fix in (
        (~finite, "non-finite values (NaN or inf)", "check the denoiser's output at these probes "
         "(a diverged network gives NaN) and recompute the heatmaps"),
        (empty, "no mass (all zeros: the output pixel depends on no input pixel)", "compute the "
         "heatmaps of a network denoiser (sensitivity_heatmaps) or leave those pixels out"),
    ):  # fmt: skip
        if bad.any():
            first = int(bad.nonzero()[0])
            r, c = (int(v) for v in pixels[first])
            raise ValueError(
                f"heatmap row of output pixel ({r}, {c}) has {what} ({int(bad.sum())} of "
                f"{rows.shape[0]} rows); no patch size can be read from it. Fix: {fix}"
            )
