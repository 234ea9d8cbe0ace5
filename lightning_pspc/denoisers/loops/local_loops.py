"""Straightforward loops of the local family's definitions, for verification and benchmarks only.

The ``*_loop`` functions follow docs/reference.md sections 2.4-2.7 literally, one element (output
pixel) at a time in float64 with exact differences; :func:`pspc_flex_published` and
:func:`els_cdist_loop` have the structure of the published code (a Python loop over anchors or
pixels, float32 ``cdist``), as speed baselines. Slow by design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _softmax_mean(d2: Tensor, sigma: Tensor, values: Tensor, temperature: float = 1.0) -> Tensor:
    """``d2 [B, M]`` squared distances, ``values [M, ...]`` -> posterior means ``[B, ...]``."""
    w = torch.softmax(-d2 / (2 * sigma.view(-1, 1) ** 2 * temperature), dim=1)
    return (w @ values.flatten(1)).view(-1, *values.shape[1:])


def empirical_loop(z: Tensor, sigma: Tensor, images: Tensor) -> Tensor:
    """Empirical posterior mean, float64: ``z [B,C,H,W]`` -> ``[B,C,H,W]``."""
    d2 = (z.flatten(1)[:, None] - images.flatten(1)[None]).square().sum(-1)
    return _softmax_mean(d2, sigma, images)


def fpmc_loop(
    z: Tensor, sigma: Tensor, images: Tensor, query: Tensor, response: Tensor, temperature=1.0
) -> Tensor:
    """FPMC by its definition, element by element: ``query``/``response [K, 1 or C, H, W]``."""
    z, sigma, images = z.double(), sigma.double(), images.double()
    num, den = torch.zeros_like(z), torch.zeros_like(z[0])
    for q, r in zip(query.double(), response.double()):
        d2 = (q * (z[:, None] - images[None]).square()).flatten(2).sum(-1)  # [B, N]
        m = _softmax_mean(d2, sigma, images, temperature)
        num += r * m
        den += r.expand_as(den)
    emp = empirical_loop(z, sigma, images)
    return torch.where(den > 0, num / den.clamp_min(1e-300), emp)


def pspc_flex_loop(z: Tensor, sigma: Tensor, images: Tensor, masks: Tensor) -> Tensor:
    """PSPC-Flex composite of ``masks [H, W, H, W]`` (bool): per anchor the masked crop's
    posterior mean, added onto the mask, divided by the coverage; uncovered pixels empirical."""
    z, sigma, images = z.double(), sigma.double(), images.double()
    comp, count = torch.zeros_like(z), torch.zeros_like(z[0, 0])
    for mask in masks.reshape(-1, *masks.shape[2:]):
        zc, xc = z[:, :, mask].flatten(1), images[:, :, mask].flatten(1)
        d2 = (zc[:, None] - xc[None]).square().sum(-1)
        comp[:, :, mask] += _softmax_mean(d2, sigma, xc).view(z.shape[0], z.shape[1], -1)
        count[mask] += 1
    return torch.where(count > 0, comp / count.clamp_min(1), empirical_loop(z, sigma, images))


def ls_loop(z: Tensor, sigma: Tensor, images: Tensor, k: int) -> Tensor:
    """LS: per pixel, the centre of the posterior mean over same-location crops of the
    truncated ``k x k`` window."""
    z, sigma, images = z.double(), sigma.double(), images.double()
    out = torch.empty_like(z)
    h, w = z.shape[2:]
    for r in range(h):
        for c in range(w):
            rs, cs = (
                slice(max(0, r - k // 2), r + k // 2 + 1),
                slice(max(0, c - k // 2), c + k // 2 + 1),
            )
            zc, xc = z[:, :, rs, cs].flatten(1), images[:, :, rs, cs].flatten(1)
            d2 = (zc[:, None] - xc[None]).square().sum(-1)
            out[:, :, r, c] = _softmax_mean(d2, sigma, images[:, :, r, c])
    return out


def _window(x: Tensor, r: int, c: int, k: int, circular: bool) -> Tensor:
    """``x [..., H, W]``'s ``k x k`` window centred at ``(r, c)``: wrapped or zero-padded."""
    h, w = x.shape[-2:]
    rows = torch.arange(r - k // 2, r + k // 2 + 1)
    cols = torch.arange(c - k // 2, c + k // 2 + 1)
    if circular:
        return x[..., rows % h, :][..., cols % w]
    inside = ((rows >= 0) & (rows < h)).view(-1, 1) & ((cols >= 0) & (cols < w)).view(1, -1)
    win = x[..., rows.clamp(0, h - 1), :][..., cols.clamp(0, w - 1)]
    return win * inside


def els_loop(z: Tensor, sigma: Tensor, images: Tensor, k: int, padding: str) -> Tensor:
    """ELS by its definition (docs/reference.md section 2.6), pixel by pixel, float64."""
    z, sigma, images = z.double(), sigma.double(), images.double()
    b, ch, h, w = z.shape
    hk = k // 2

    def cls(i: int, n: int) -> list[int]:  # indices of the same boundary-broken class
        if i < hk or i >= n - hk:
            return [i]
        return [j for j in range(n) if hk <= j < n - hk]

    circ = padding == "circular"
    # the window of every training image centred at every pixel: [H, W, N, C, k, k]
    windows = [[_window(images, i, j, k, circ) for j in range(w)] for i in range(h)]
    if circ:  # every valid patch of every training image
        centres = [(i, j) for i in range(hk, h - hk) for j in range(hk, w - hk)]
    out = torch.empty_like(z)
    for r in range(h):
        for c in range(w):
            if not circ:
                centres = [(i, j) for i in cls(r, h) for j in cls(c, w)]
            patches = torch.cat([windows[i][j] for i, j in centres])  # [M, C, k, k]
            mids = patches[:, :, hk, hk]  # [M, C]
            zc = _window(z, r, c, k, circ).flatten(1)
            d2 = (zc[:, None] - patches.flatten(1)[None]).square().sum(-1)
            out[:, :, r, c] = _softmax_mean(d2, sigma, mids)
    return out


def _pmean_published(z: Tensor, sigma: Tensor, x_all: Tensor, chunk: int = 100) -> Tensor:
    """Posterior mean streamed ``chunk`` images at a time with float32 ``cdist`` (published)."""
    m = den = num = None
    for s in range(0, x_all.shape[0], chunk):
        x = x_all[s : s + chunk]
        logits = torch.cdist(z, x).square() / (-2 * sigma.view(-1, 1) ** 2)
        top = logits.amax(1, keepdim=True)
        m_new = top if m is None else torch.maximum(m, top)
        p = (logits - m_new).exp()
        if m is None:
            den, num = p.sum(1, keepdim=True), p @ x
        else:
            a = (m - m_new).exp()
            den, num = den * a + p.sum(1, keepdim=True), num * a + p @ x
        m = m_new
    return num / den


def pspc_flex_published(z: Tensor, sigma: Tensor, images: Tensor, masks: Tensor) -> Tensor:
    """PSPC-Flex with the published code's structure: a Python loop over anchors, each a masked
    crop of the data and a posterior mean over 100 images at a time (float32 ``cdist``)."""
    z, images, sigma = z.float(), images.float(), sigma.float()
    comp, norm = torch.zeros_like(z), torch.zeros_like(z)
    b, c = z.shape[:2]
    for mask in masks.reshape(-1, *masks.shape[2:]):
        pm = _pmean_published(z[:, :, mask].reshape(b, -1), sigma, images[:, :, mask].flatten(1))
        comp[:, :, mask] += pm.view(b, c, -1)
        norm[:, :, mask] += 1
    return comp / norm


def els_cdist_loop(
    z: Tensor, sigma: Tensor, images: Tensor, k: int, rows: int | None = None
) -> Tensor:
    """Circular ELS as a per-pixel loop, each pixel a float32 ``cdist`` of its wrapped window
    against the whole patch set (every valid patch of every training image). ``rows``: only the
    first ``rows`` image rows (the rest of the output is left as ``z``; every row costs the same,
    so benchmarks time a few and scale)."""
    z, images, sigma = z.float(), images.float(), sigma.float()
    b, ch, h, w = z.shape
    patches = F.unfold(images, k).transpose(1, 2).reshape(-1, ch * k * k)  # [N L, C k^2]
    centre = torch.arange(ch) * k * k + (k // 2) * k + k // 2
    mids = patches[:, centre]
    zp = F.pad(z, (k // 2,) * 4, mode="circular")
    out = z.clone()
    for r in range(h if rows is None else min(rows, h)):
        for c in range(w):
            zc = zp[:, :, r : r + k, c : c + k].reshape(b, -1)
            logits = torch.cdist(zc, patches).square() / (-2 * sigma.view(-1, 1) ** 2)
            out[:, :, r, c] = torch.softmax(logits, 1) @ mids
    return out
