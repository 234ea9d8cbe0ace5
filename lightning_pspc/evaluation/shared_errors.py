"""Shared approximation errors across networks trained on the same data (Niedoba et al. 2025,
sec. 3, fig. 2; docs/reference.md section 3c).

Networks of different architectures trained on the same data depart from the empirical denoiser
by similar amounts at the same sigmas and in similar directions. :class:`SharedErrors` measures
it on probes every network sees: the forward probes of the evaluation (training and held-out
images noised at every grid sigma, the same images and noise as the comparison's) and the states
of each network's own reverse trajectories (from the evaluation's reverse seeds), each fed to
every network. Per pair ``(a, b)`` and per sigma: ``MSE(D_a, D_b)``, each network's
``MSE(D, D_emp)`` and the cosine similarity of the errors ``e = D - D_emp`` (mean over probes of
the per-probe cosine, and pooled: ``sum <e_a, e_b> / sqrt(sum |e_a|^2 sum |e_b|^2)``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..denoisers import EmpiricalDenoiser
from ..metrics import DenoiserDistance
from ..metrics.functional import nearest_sigma_index, paired_cosine_similarity
from ..types import Denoiser
from .batching import denoise_batched
from .pipeline import EvalData, EvalSeeds
from .probes import ProbeSet, fixed_noise, forward_probes, probe_sigmas, reverse_probes

#: Probe kinds of the pairwise section: forward (training and held-out images pooled) and the
#: reverse-trajectory states of every network of the group pooled.
KINDS = ("forward", "reverse")


def data_fingerprint(data: EvalData) -> str:
    """SHA-256 of the training set as the networks see it and of the held-out images: runs with
    equal fingerprints were trained on the same data (and share the evaluation's probes)."""
    digest = hashlib.sha256()
    for images in (data.reference, data.train, data.heldout):
        t = images.detach().float().cpu().contiguous()
        digest.update(str(list(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _per_sigma(values: Tensor, sigma: Tensor, grid: Tensor) -> list[float]:
    """Mean of ``values [P]`` per grid sigma (nearest in log sigma; NaN values and empty sigmas
    give NaN)."""
    index = nearest_sigma_index(sigma.double().cpu(), grid)
    out = []
    for j in range(grid.numel()):
        v = values[(index == j) & torch.isfinite(values)]
        out.append(float(v.mean()) if v.numel() else math.nan)
    return out


class SharedErrors:
    """Pairwise error similarity of networks trained on ``data`` (see the module docstring).

    Args:
        data: the common training and held-out images.
        sigmas: the grid (default: the 18 EDM sigmas).
        seed: the evaluation seed (:class:`~lightning_pspc.evaluation.EvalSeeds`): the probes
            are those of an evaluation with this seed.
        num_train_probes, num_heldout_probes: images of each pool noised at every sigma.
        num_reverse_probes: reverse trajectories per network.
        batch_size, device: as for the evaluation.
    """

    def __init__(
        self,
        data: EvalData,
        sigmas: Sequence[float] | Tensor | None = None,
        seed: int = 0,
        num_train_probes: int = 32,
        num_heldout_probes: int = 32,
        num_reverse_probes: int = 8,
        batch_size: int = 128,
        device: torch.device | str = "cpu",
    ) -> None:
        self.sigmas, self.batch_size = probe_sigmas(sigmas), batch_size
        self.device = torch.device(device)
        seeds = EvalSeeds.derive(seed)
        parts = [
            forward_probes(data.train, self.sigmas, num_train_probes, seeds.train_probes),
            forward_probes(data.heldout, self.sigmas, num_heldout_probes, seeds.heldout_probes),
        ]
        self.forward = ProbeSet(
            torch.cat([p.z for p in parts]),
            torch.cat([p.sigma for p in parts]),
            torch.cat([p.source for p in parts]),
        ).to(self.device)
        self.reverse_noise = fixed_noise(
            num_reverse_probes, data.image_shape, seeds.reverse_noise
        ).to(self.device)
        self.empirical = EmpiricalDenoiser(data.reference.to(self.device)).to(self.device)

    def _outputs(self, denoiser: Denoiser, probes: ProbeSet) -> Tensor:
        return denoise_batched(denoiser, probes.z, probes.sigma, self.batch_size)

    @torch.no_grad()
    def evaluate(self, networks: Mapping[str, Denoiser]) -> list[dict[str, Any]]:
        """One record per pair of ``networks`` (``{label: D}``, two or more), in label order of
        the mapping: ``{"runs": [a, b], "sigmas", "num_probes": {kind: P},
        "mse_between": {kind: [S]}, "mse_to_empirical": {a: {kind: [S]}, b: ...},
        "error_cosine": {kind: [S]}, "error_cosine_pooled": {kind: [S]}}``."""
        labels = list(networks)
        if len(labels) < 2:
            raise ValueError(f"shared errors need two or more networks, got {labels}")
        states = []
        for label in labels:  # every network's own trajectories, from the same seeds
            probes, _, _ = reverse_probes(networks[label], self.reverse_noise, self.sigmas)
            states.append(probes)
        reverse = ProbeSet(
            torch.cat([p.z for p in states]),
            torch.cat([p.sigma for p in states]),
            torch.cat([p.source for p in states]),
        )
        probes = {"forward": self.forward, "reverse": reverse}
        errors = {}  # kind -> label -> D - D_emp [P, C, H, W]
        for kind, p in probes.items():
            emp = self._outputs(self.empirical, p)
            errors[kind] = {label: self._outputs(networks[label], p) - emp for label in labels}
        return [self._pair(a, b, errors, probes) for a, b in itertools.combinations(labels, 2)]

    def _pair(
        self, a: str, b: str, errors: dict[str, dict[str, Tensor]], probes: dict[str, ProbeSet]
    ) -> dict[str, Any]:
        grid = self.sigmas
        record: dict[str, Any] = {
            "runs": [a, b],
            "sigmas": grid.tolist(),
            "num_probes": {kind: len(p) for kind, p in probes.items()},
            "mse_between": {},
            "mse_to_empirical": {a: {}, b: {}},
            "error_cosine": {},
            "error_cosine_pooled": {},
        }
        for kind, p in probes.items():
            ea, eb = errors[kind][a], errors[kind][b]
            between = DenoiserDistance(grid).to(ea.device)
            between.update(ea, eb, p.sigma)  # (D_a - D_emp) - (D_b - D_emp) = D_a - D_b
            record["mse_between"][kind] = between.compute().tolist()
            for label, e in ((a, ea), (b, eb)):
                to_emp = DenoiserDistance(grid).to(e.device)
                to_emp.update(e, torch.zeros_like(e), p.sigma)
                record["mse_to_empirical"][label][kind] = to_emp.compute().tolist()
            fa, fb = ea.flatten(1).double(), eb.flatten(1).double()
            norms = fa.norm(dim=1) * fb.norm(dim=1)
            cosine = paired_cosine_similarity(ea, eb).cpu()
            cosine[norms.cpu() == 0] = math.nan  # no error on a probe: no direction
            record["error_cosine"][kind] = _per_sigma(cosine, p.sigma, grid)
            dots = _per_sigma((fa * fb).sum(1).cpu(), p.sigma, grid)
            sq_a = _per_sigma(fa.pow(2).sum(1).cpu(), p.sigma, grid)
            sq_b = _per_sigma(fb.pow(2).sum(1).cpu(), p.sigma, grid)
            record["error_cosine_pooled"][kind] = [
                d / math.sqrt(x * y) if x > 0 and y > 0 else math.nan
                for d, x, y in zip(dots, sq_a, sq_b)
            ]
        return record
