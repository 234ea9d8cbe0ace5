"""Fixed probe sets for comparing denoisers (Niedoba et al. 2025, figs. 2 and 7).

A probe is a noisy image ``z`` at a noise level ``sigma``. Forward-process probes are
``z = x + sigma * eps`` with ``x`` from the training or held-out images; reverse-process probes
are the states ``z_i`` of a sampler's own trajectory at each ``sigma_i`` (docs/reference.md section
3.1).
Every random choice comes from a ``torch.Generator`` seeded by the caller, never from the global
RNG, so the same seed gives the same probes in every epoch, process and run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion import edm_sigmas, heun_sample
from ..diffusion.schedule import SIGMA_MAX, SIGMA_MIN
from ..types import Denoiser


@dataclass(frozen=True)
class ProbeSet:
    """``P`` noisy images ``z [P, C, H, W]`` (float32) at noise levels ``sigma [P]`` (float64).

    ``source [P]`` (long) names the clean image (forward probes: its index in the image set) or
    the seed (reverse probes: the index of the starting noise) each probe comes from.
    """

    z: Tensor
    sigma: Tensor
    source: Tensor

    def __len__(self) -> int:
        return self.z.shape[0]

    def shard(self, rank: int, world_size: int) -> ProbeSet:
        """This rank's probes: every ``world_size``-th probe from ``rank`` (balanced over sigma)."""
        check_rank(rank, world_size)
        return ProbeSet(
            self.z[rank::world_size], self.sigma[rank::world_size], self.source[rank::world_size]
        )

    def to(self, device: torch.device | str) -> ProbeSet:
        """The same probes on ``device``."""
        return ProbeSet(self.z.to(device), self.sigma.to(device), self.source.to(device))


def check_rank(rank: int, world_size: int) -> None:
    """Raise a clear error unless ``0 <= rank < world_size``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


#: Sigma bands ``[lo, hi)`` of the transition chart: networks depart most from the empirical
#: denoiser for sigma in about [0.3, 10] (Niedoba et al. 2025, fig. 2; docs/reference.md section 3.1).
#: The lower edge 0.25 puts the EDM grid's 0.296 in the middle band.
SIGMA_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 0.25),
    "mid": (0.25, 10.0),
    "high": (10.0, math.inf),
}

PROBE_KINDS = ("train", "heldout", "reverse")


def band_means(sigmas: Tensor, mse: Tensor) -> dict[str, float]:
    """Mean of ``mse [S]`` over the grid sigmas ``sigmas [S]`` in each of :data:`SIGMA_BANDS`.

    NaN entries are ignored; a band with no finite value is NaN.
    """
    out = {}
    for band, (lo, hi) in SIGMA_BANDS.items():
        inside = (sigmas >= lo) & (sigmas < hi) & torch.isfinite(mse.to(sigmas.device))
        out[band] = float(mse[inside.to(mse.device)].mean()) if inside.any() else math.nan
    return out


def probe_sigmas(sigmas: Sequence[float] | Tensor | None = None) -> Tensor:
    """The noise-level grid ``[S]`` (float64, decreasing): default the 18 EDM sigmas (EDM eq. 5)."""
    grid = edm_sigmas(18) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
    grid = grid.flatten()
    if grid.numel() == 0 or not bool(torch.isfinite(grid).all()) or bool((grid <= 0).any()):
        raise ValueError(
            f"sigmas must be a non-empty list of positive finite noise levels, got {sigmas}; "
            "leave it empty (null) for the 18 EDM sigmas"
        )
    return grid.sort(descending=True).values


def clip_sigmas(
    sigmas: Sequence[float] | Tensor, sigma_range: tuple[float, float] | None
) -> Tensor:
    """``sigmas`` clamped into ``sigma_range = (lo, hi)`` (a model's accepted noise levels),
    duplicates merged: ``[S']`` float64, decreasing. Levels inside the range are kept exactly;
    ``None`` clips nothing."""
    grid = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigma_range is not None:
        grid = grid.clamp(float(sigma_range[0]), float(sigma_range[1]))
    return grid.unique().sort(descending=True).values


def sampler_sigmas(num_steps: int, sigma_range: tuple[float, float] | None = None) -> Tensor:
    """The Heun sampler's schedule ``[num_steps]`` (EDM eq. 5, no final 0): from 80 to 0.002, the
    ends clipped into ``sigma_range`` (a range outside [0.002, 80] is used as it is)."""
    if sigma_range is None:
        return edm_sigmas(num_steps)
    lo, hi = float(sigma_range[0]), float(sigma_range[1])
    s_min, s_max = max(SIGMA_MIN, lo), min(SIGMA_MAX, hi)
    if s_min > s_max:
        s_min, s_max = lo, hi
    schedule = edm_sigmas(num_steps, s_min, s_max)
    # a clipped end exactly at the range's end: (s^(1/rho))^rho is not always s
    if s_max < SIGMA_MAX:
        schedule[0] = s_max
    if s_min > SIGMA_MIN:
        schedule[-1] = s_min
    return schedule


def forward_probes(images: Tensor, sigmas: Tensor, num_images: int, seed: int) -> ProbeSet:
    """``z = x + sigma * eps`` for ``num_images`` images of ``images [N, C, H, W]`` at every sigma.

    The images are the first ``num_images`` of a random permutation and ``eps`` is unit Gaussian
    noise, both from a generator seeded with ``seed``. Probes are image-major: probe
    ``i * S + j`` is image ``i`` at ``sigmas[j]`` (``S = len(sigmas)``), so ``P = num_images * S``.
    ``num_images`` larger than ``N`` is clipped to ``N``.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    gen = torch.Generator().manual_seed(seed)
    n = min(num_images, images.shape[0])
    idx = torch.randperm(images.shape[0], generator=gen)[:n]  # [n]
    return noisy_images(images, idx, sigmas, gen)


def noisy_images(
    images: Tensor, idx: Tensor, sigmas: Tensor, generator: torch.Generator
) -> ProbeSet:
    """``z = x + sigma * eps`` for the images ``images[idx]`` at every one of ``sigmas [S]``,
    ``eps`` drawn from ``generator``; image-major probes (``P = len(idx) * S``)."""
    x = images[idx].detach().float().cpu()  # [n, C, H, W]
    s = sigmas.detach().cpu().to(torch.float64)  # [S]
    eps = torch.randn((idx.numel(), s.numel(), *x.shape[1:]), generator=generator)
    z = x.unsqueeze(1) + s.float().view(1, -1, 1, 1, 1) * eps  # [n, S, C, H, W]
    return ProbeSet(
        z.flatten(0, 1).contiguous(),  # [n*S, C, H, W]
        s.repeat(idx.numel()),  # [n*S]
        idx.repeat_interleave(s.numel()),  # [n*S]
    )


def fixed_noise(num: int, shape: Sequence[int], seed: int) -> Tensor:
    """Unit Gaussian noise ``[num, *shape]`` (float32, CPU) from a generator seeded with ``seed``."""
    if num < 0:
        raise ValueError(f"the number of seeds must be >= 0, got {num}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((num, *shape), generator=gen)


class _Recorder:
    """Wraps a denoiser and keeps the output of every call, in order."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser, self.outputs = denoiser, []

    def __call__(self, z: Tensor, sigma: Tensor) -> Tensor:
        out = self.denoiser(z, sigma)
        self.outputs.append(out.float())
        return out


@torch.no_grad()
def reverse_probes(
    denoiser: Denoiser, noise: Tensor, sigmas: Tensor, source: Tensor | None = None
) -> tuple[ProbeSet, Tensor, Tensor]:
    """States of the denoiser's own Heun trajectories (EDM algorithm 1) from ``noise [R, C, H, W]``.

    The trajectories run on the decreasing grid ``sigmas [S]`` (then to 0), so state ``z_j`` lies
    exactly at ``sigmas[j]``. Heun's first evaluation at each step is ``D(z_j, sigma_j)``, so the
    denoiser's outputs on the probes come for free (35 calls for 18 steps, not 53).

    Returns ``(probes, outputs [R*S, C, H, W], samples [R, C, H, W])``, seed-major (probe
    ``r * S + j`` is seed ``r`` at ``sigmas[j]``); ``source`` (default ``arange(R)``) labels seeds.
    """
    r, s = noise.shape[0], sigmas.numel()
    source = torch.arange(r) if source is None else source
    sig = sigmas.to(device=noise.device, dtype=torch.float64)
    if r == 0:
        empty = noise.new_zeros((0, *noise.shape[1:]))
        probes = ProbeSet(empty, sig.new_zeros(0), source.to(noise.device)[:0])
        return probes, empty, empty
    recorder = _Recorder(denoiser)
    samples, states = heun_sample(recorder, noise, sigmas=sig, return_trajectory=True)
    # Calls alternate D(z_j, s_j), D(euler z_{j+1}, s_{j+1}); the last step has only the first.
    outputs = torch.stack(recorder.outputs[0::2], dim=1)  # [R, S, C, H, W]
    z = torch.stack(states, dim=1)  # [R, S, C, H, W]
    probes = ProbeSet(
        z.flatten(0, 1).contiguous(),
        sig.repeat(r),
        source.to(noise.device).repeat_interleave(s),
    )
    return probes, outputs.flatten(0, 1), samples
