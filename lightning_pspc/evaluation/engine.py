"""Evaluation logic shared by the callbacks and ``eval.py``: denoiser distances and memorization.

Everything here is plain functions of denoisers, probes and images; the callers decide when to
run it, where to log it and which slice of the probes this process owns. Reductions go through
the ``torchmetrics`` metrics of :mod:`lightning_pspc.metrics`, so under DDP every process must
call the same functions in the same order (each with its own slice) and all get the global result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..denoisers import EmpiricalDenoiser, GaussianDenoiser, PSPCSquareDenoiser
from ..diffusion import heun_sample
from ..metrics import DenoiserDistance, MemorizedFraction, NearestNeighbourStats, nearest_neighbours
from ..types import Denoiser
from .local_references import LOCAL_REFERENCES
from .probes import ProbeSet, check_rank, forward_probes, reverse_probes

#: Closed-form reference denoisers by the name used in configs, metric keys and files.
REFERENCE_DENOISERS: dict[str, Callable[[Tensor], nn.Module]] = {
    "empirical": EmpiricalDenoiser,
    "pspc": PSPCSquareDenoiser,
    "gaussian": GaussianDenoiser,
    **LOCAL_REFERENCES,  # pspc_flex, pspc_flex_soft, ls, els, wiener_locality
}

#: Sigma bands ``[lo, hi)`` of the transition chart: networks depart most from the empirical
#: denoiser for sigma in about [0.3, 10] (Niedoba et al. 2025, fig. 2; REFERENCE.md section 3).
#: The lower edge 0.25 puts the EDM grid's 0.296 in the middle band.
SIGMA_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 0.25),
    "mid": (0.25, 10.0),
    "high": (10.0, math.inf),
}

PROBE_KINDS = ("train", "heldout", "reverse")


def check_reference_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate reference denoiser names (:data:`REFERENCE_DENOISERS`); no duplicates."""
    names = tuple(names)
    unknown = [n for n in names if n not in REFERENCE_DENOISERS]
    if unknown or len(set(names)) != len(names) or not names:
        what = f"unknown reference(s) {unknown}; " if unknown else ""
        raise ValueError(
            f"references={list(names)}: {what}use a non-empty list without duplicates of "
            f"{sorted(REFERENCE_DENOISERS)}"
        )
    return names


def build_references(
    names: Sequence[str], images: Tensor, device: torch.device | str = "cpu"
) -> dict[str, nn.Module]:
    """The named closed-form denoisers of the training set ``images [N, C, H, W]``, on ``device``.

    Pass the training set as the network sees it (``ImageDataModule.reference_images()``).
    PSPC uses the default patch-size schedule for the image size.
    """
    images = images.to(device)
    return {n: REFERENCE_DENOISERS[n](images).to(device) for n in check_reference_names(names)}


def band_means(sigmas: Tensor, mse: Tensor) -> dict[str, float]:
    """Mean of ``mse [S]`` over the grid sigmas ``sigmas [S]`` in each of :data:`SIGMA_BANDS`.

    NaN entries are ignored; a band with no finite value is NaN.
    """
    out = {}
    for band, (lo, hi) in SIGMA_BANDS.items():
        inside = (sigmas >= lo) & (sigmas < hi) & torch.isfinite(mse.to(sigmas.device))
        out[band] = float(mse[inside.to(mse.device)].mean()) if inside.any() else math.nan
    return out


@torch.no_grad()
def denoise_batched(
    denoiser: Denoiser, z: Tensor, sigma: Tensor, batch_size: int, bar: tqdm | None = None
) -> Tensor:
    """``D(z, sigma)`` for ``z [P, C, H, W]``, ``sigma [P]`` in batches -> ``[P, C, H, W]`` float32."""
    outs = [z.new_zeros((0, *z.shape[1:]))]
    for start in range(0, z.shape[0], batch_size):
        zb, sb = z[start : start + batch_size], sigma[start : start + batch_size]
        outs.append(denoiser(zb, sb.to(zb.dtype)).float())
        if bar is not None:
            bar.update(zb.shape[0])
    return torch.cat(outs)


@torch.no_grad()
def sample_batched(
    denoiser: Denoiser, noise: Tensor, num_steps: int, batch_size: int, bar: tqdm | None = None
) -> Tensor:
    """Heun PF-ODE samples (EDM algorithm 1) from ``noise [M, C, H, W]`` -> ``[M, C, H, W]``."""
    outs = [noise.new_zeros((0, *noise.shape[1:]))]
    for start in range(0, noise.shape[0], batch_size):
        chunk = noise[start : start + batch_size]
        outs.append(heun_sample(denoiser, chunk, num_steps=num_steps).float())
        if bar is not None:
            bar.update(chunk.shape[0])
    return torch.cat(outs)


def distance_table(
    outputs: Tensor, reference_outputs: Mapping[str, Tensor], sigma: Tensor, grid: Tensor
) -> dict[str, Tensor]:
    """Per reference, the mean ``MSE(outputs, reference)`` per grid sigma, ``[S]`` float64 on CPU.

    ``outputs`` and every reference output are ``[P, C, H, W]`` on the same probes at noise levels
    ``sigma [P]``. Synced over DDP processes (every process must call it, even with ``P = 0``).
    """
    table = {}
    for name, ref in reference_outputs.items():
        metric = DenoiserDistance(grid).to(outputs.device)
        metric.update(outputs, ref, sigma)
        table[name] = metric.compute().cpu()  # [S], also for a one-sigma grid
    return table


@dataclass
class ComparisonResult:
    """Output of :meth:`DenoiserComparer.evaluate`.

    ``mse[kind][reference]`` is ``[S]`` float64 (NaN where no probe fell) over ``sigmas [S]``;
    ``samples`` are this process's reverse-trajectory end points ``[R_local, C, H, W]``.
    """

    sigmas: Tensor
    mse: dict[str, dict[str, Tensor]]
    samples: Tensor = field(repr=False)

    def table(self) -> dict[str, dict[str, list[float]]]:
        """``{kind: {reference: [S] floats}}``: the record kept per evaluation for charts."""
        return {k: {r: v.tolist() for r, v in t.items()} for k, t in self.mse.items()}

    def scalars(self, prefix: str = "compare") -> dict[str, float]:
        """Flat ``{prefix}/{reference}/{kind}/sigma_{s:.3g}`` and ``.../{band}`` values (finite only)."""
        out = {}
        for kind, table in self.mse.items():
            for ref, values in table.items():
                for s, v in zip(self.sigmas.tolist(), values.tolist()):
                    if math.isfinite(v):
                        out[f"{prefix}/{ref}/{kind}/sigma_{s:.3g}"] = v
                for band, v in band_means(self.sigmas, values).items():
                    if math.isfinite(v):
                        out[f"{prefix}/{ref}/{kind}/{band}"] = v
        return out

    def to_json(self) -> dict:
        """``{"sigmas": [...], "mse": {ref: {kind: [...]}}, "bands": {ref: {kind: {band: v}}}}``."""
        refs = list(dict.fromkeys(r for table in self.mse.values() for r in table))
        mse = {r: {k: t[r].tolist() for k, t in self.mse.items() if r in t} for r in refs}
        bands = {
            r: {k: band_means(self.sigmas, t[r]) for k, t in self.mse.items() if r in t}
            for r in refs
        }
        return {"sigmas": self.sigmas.tolist(), "mse": mse, "bands": bands}


class DenoiserComparer:
    """MSE of a network to closed-form denoisers per sigma, on fixed forward and reverse probes.

    Forward probes (``z = x + sigma eps`` from training and held-out images) are fixed, so the
    reference denoisers' outputs on them are computed once and cached; reverse probes are the
    states of the network's own Heun trajectories from fixed seeds, recomputed at every call.
    Under DDP each process evaluates every ``world_size``-th probe and seed from ``rank``.

    Args:
        references: ``{name: D}`` closed-form denoisers (:func:`build_references`).
        sigmas: decreasing grid ``[S]`` (:func:`~lightning_pspc.evaluation.probes.probe_sigmas`).
        train_images, heldout_images: ``[N, C, H, W]`` pools for the forward probes.
        num_train_probes, num_heldout_probes: images drawn from each pool, each probed at every
            sigma (``num * S`` probes).
        reverse_noise: ``[R, C, H, W]`` starting noise of the reverse trajectories (``R * S``
            probes); ``R = 0`` skips them.
        seeds: ``(train, held-out)`` seeds of the choice of images and the forward noise
            (:class:`~lightning_pspc.evaluation.pipeline.EvalSeeds`).
        batch_size: probes per denoiser call.
    """

    def __init__(
        self,
        references: Mapping[str, nn.Module],
        sigmas: Tensor,
        train_images: Tensor,
        heldout_images: Tensor,
        num_train_probes: int,
        num_heldout_probes: int,
        reverse_noise: Tensor,
        seeds: tuple[int, int] = (0, 1),
        batch_size: int = 64,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        check_rank(rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.references, self.sigmas = dict(references), sigmas.double().cpu()
        self.batch_size, self.device = batch_size, torch.device(device)
        pools = {
            "train": (train_images, num_train_probes, seeds[0]),
            "heldout": (heldout_images, num_heldout_probes, seeds[1]),
        }
        self.forward: dict[str, ProbeSet] = {}
        for kind, (images, num, seed) in pools.items():
            probes = forward_probes(images, self.sigmas, num, seed)
            if len(probes):  # same decision on every rank: it depends on global counts only
                self.forward[kind] = probes.shard(rank, world_size).to(self.device)
        self.has_reverse = reverse_noise.shape[0] > 0
        self.reverse_noise = reverse_noise[rank::world_size].to(self.device)
        self.reverse_source = torch.arange(reverse_noise.shape[0])[rank::world_size]
        self._cache: dict[str, dict[str, Tensor]] = {}
        self.reference_probe_evaluations = 0  # probes the references denoised (forward + reverse)
        self.reference_seconds: dict[str, float] = {}  # wall time of each reference so far

    def work(self) -> int:
        """Denoiser evaluations of this process in the next :meth:`evaluate` (for progress bars)."""
        fwd = sum(len(p) for p in self.forward.values())
        ref_fwd = sum(
            len(p) * sum(n not in self._cache.get(k, {}) for n in self.references)
            for k, p in self.forward.items()
        )
        r = self.reverse_noise.shape[0] * self.sigmas.numel()
        return fwd + ref_fwd + r * (1 + len(self.references))

    def reference_outputs(self, kind: str, bar: tqdm | None = None) -> dict[str, Tensor]:
        """``{reference: outputs [P, C, H, W]}`` on the forward probes ``kind`` (computed once,
        until :meth:`forget`)."""
        cached = self._cache.setdefault(kind, {})
        missing = [n for n in self.references if n not in cached]
        if missing:
            cached.update(self._reference_outputs(self.forward[kind], bar, missing))
        return {n: cached[n] for n in self.references}

    def forget(self, names: Sequence[str]) -> None:
        """Drop the cached outputs of the references ``names`` (they changed)."""
        for cached in self._cache.values():
            for name in names:
                cached.pop(name, None)

    def _reference_outputs(
        self, probes: ProbeSet, bar: tqdm | None, names: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        names = list(self.references) if names is None else list(names)
        self.reference_probe_evaluations += len(probes) * len(names)
        outs = {}
        for name in names:
            ref = self.references[name]
            t0 = time.perf_counter()
            outs[name] = denoise_batched(ref, probes.z, probes.sigma, self.batch_size, bar)
            self.reference_seconds[name] = self.reference_seconds.get(name, 0.0) + (
                time.perf_counter() - t0
            )
        return outs

    @torch.no_grad()
    def evaluate(self, network: Denoiser, bar: tqdm | None = None) -> ComparisonResult:
        """MSE of ``network`` to each reference per sigma and probe kind (synced over DDP)."""
        mse = {}
        for kind, probes in self.forward.items():
            refs = self.reference_outputs(kind, bar)
            out = denoise_batched(network, probes.z, probes.sigma, self.batch_size, bar)
            mse[kind] = distance_table(out, refs, probes.sigma, self.sigmas)
        samples = self.reverse_noise.new_zeros((0, *self.reverse_noise.shape[1:]))
        if self.has_reverse:
            states, outs, samples = [], [], [samples]
            for start in range(0, max(self.reverse_noise.shape[0], 1), self.batch_size):
                noise = self.reverse_noise[start : start + self.batch_size]
                source = self.reverse_source[start : start + self.batch_size]
                probes, out, end = reverse_probes(network, noise, self.sigmas, source)
                states.append(probes)
                outs.append(out)
                samples.append(end)
                if bar is not None:
                    bar.update(len(probes))
            probes = ProbeSet(
                torch.cat([p.z for p in states]),
                torch.cat([p.sigma for p in states]),
                torch.cat([p.source for p in states]),
            )
            refs = self._reference_outputs(probes, bar)
            mse["reverse"] = distance_table(torch.cat(outs), refs, probes.sigma, self.sigmas)
            samples = torch.cat(samples)
        return ComparisonResult(self.sigmas, mse, samples)


@dataclass
class DenoiserPanel:
    """One clean image at a few sigmas, denoised by the network and each reference (PSPC fig. 1).

    ``panel(network)`` returns ``{"noisy": [K,C,H,W], "network": ..., <reference>: ...}``; the
    references' outputs are computed on the first call and cached.
    """

    references: Mapping[str, nn.Module]
    probes: ProbeSet
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        references: Mapping[str, nn.Module],
        image: Tensor,
        sigmas: Tensor,
        num_sigmas: int = 6,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> DenoiserPanel:
        """Panel of ``image [C, H, W]`` at ``num_sigmas`` grid sigmas spread over ``sigmas [S]``."""
        pick = torch.linspace(0, sigmas.numel() - 1, min(num_sigmas, sigmas.numel())).round().long()
        probes = forward_probes(image.unsqueeze(0), sigmas[pick.unique()], 1, seed)
        return cls(references, probes.to(device))

    @torch.no_grad()
    def __call__(self, network: Denoiser) -> dict[str, Tensor]:
        z, sigma = self.probes.z, self.probes.sigma
        if not self._cache:
            self._cache = {n: r(z, sigma.to(z.dtype)).float() for n, r in self.references.items()}
        return {"noisy": z, "network": network(z, sigma.to(z.dtype)).float(), **self._cache}


def memorization_stats(
    samples: Tensor, train_images: Tensor, threshold: float = 1 / 3
) -> dict[str, float]:
    """Memorized fraction (Gu et al. 2023) and nearest-neighbour stats of ``samples [M, C, H, W]``.

    Synced over DDP processes (each passes its own samples). Keys: ``memorized_fraction``,
    ``nn_dist_mean``, ``nn_dist_median``, ``max_cos_mean``, ``max_cos_median``.
    """
    train = train_images.to(samples.device)
    memorized = MemorizedFraction(train, threshold=threshold).to(samples.device)
    stats = NearestNeighbourStats(train).to(samples.device)
    memorized.update(samples)
    stats.update(samples)
    out = {"memorized_fraction": float(memorized.compute())}
    out.update({k: float(v) for k, v in stats.compute().items()})
    return out


def nearest_training_images(samples: Tensor, train_images: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest training image ``[M, C, H, W]`` of each sample and the ratio ``d1 / d2`` ``[M]``.

    ``d1, d2``: pixel L2 distances to the nearest and second-nearest training images (Gu et al.
    2023; a ratio below 1/3 counts as memorized). Needs at least two training images.
    """
    train = train_images.to(samples.device)
    dist, idx = nearest_neighbours(samples, train, k=2)
    ratio = torch.where(dist[:, 1] > 0, dist[:, 0] / dist[:, 1].clamp_min(1e-300), 0.0)
    return train[idx[:, 0]], ratio
