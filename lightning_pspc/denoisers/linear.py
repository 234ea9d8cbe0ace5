"""Linear distillation: the affine denoiser that best imitates a teacher (docs/reference.md 3c).

Li, Dai and Qu (2024, sec. 3) fit, per noise level, ``D_lin(z, s) = W_s z + b_s`` to a trained
network over the forward process ``z = x + s eps`` (``x`` from the training set) with Adam. The
same objective has a closed-form minimizer (docs/reference.md section 3c.2), computed here in
float64 from centred sums of the probes ``z`` and the teacher's outputs ``y = D(z, s)``,
accumulated batch by batch and merged across processes with the pairwise update of Chan, Golub
and LeVeque (section 3c.3): :class:`LinearFitStats`. :func:`distillation_probes` draws the probes
(seeded by seed, sigma and block, so they do not depend on the batch size or the number of
processes) and :meth:`LinearDenoiser.distill` fits one map per sigma.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..diffusion.preconditioning import batch_sigma
from ..types import Denoiser
from .base import check_images

#: Forward probes per seeded block: the unit of the probe streams and of the DDP shares.
PROBE_BLOCK = 256
#: Default forward probes per sigma, as a multiple of ``D = C*H*W`` (docs/reference.md 3c.4).
PROBES_PER_DIMENSION = 4
#: Relative tolerance within which a sigma counts as a grid sigma of a :class:`LinearDenoiser`.
SIGMA_RTOL = 1e-6


def default_num_probes(dim: int) -> int:
    """Forward probes per sigma when none is given: ``PROBES_PER_DIMENSION * D``."""
    return PROBES_PER_DIMENSION * dim


@dataclass
class LinearFitStats:
    """Centred float64 sums of pairs ``(z_j, y_j)``, ``z, y [D]`` (docs/reference.md 3c.3).

    ``count``: number of pairs; ``mean_z``, ``mean_y [D]``; ``czz = sum z~ z~^T`` and
    ``cyz = sum y~ z~^T [D, D]`` with ``z~ = z - mean_z``, ``y~ = y - mean_y``.
    """

    count: int
    mean_z: Tensor
    mean_y: Tensor
    czz: Tensor
    cyz: Tensor

    @classmethod
    def empty(cls, dim: int, device: torch.device | str = "cpu") -> LinearFitStats:
        """No pairs yet, for vectors of ``dim`` entries."""
        zeros = torch.zeros(dim, dtype=torch.float64, device=device)
        square = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        return cls(0, zeros, zeros.clone(), square, square.clone())

    @classmethod
    def of(cls, z: Tensor, y: Tensor) -> LinearFitStats:
        """The sums of one batch ``z, y [B, D]`` (any float dtype; summed in float64)."""
        if z.ndim != 2 or z.shape != y.shape:
            raise ValueError(f"z and y must both be [B, D], got {tuple(z.shape)}, {tuple(y.shape)}")
        z, y = z.detach().double(), y.detach().double()
        mean_z, mean_y = z.mean(0), y.mean(0)  # [D]
        zc, yc = z - mean_z, y - mean_y  # [B, D]
        return cls(z.shape[0], mean_z, mean_y, zc.T @ zc, yc.T @ zc)

    @property
    def dim(self) -> int:
        return self.mean_z.numel()

    def update(self, z: Tensor, y: Tensor) -> LinearFitStats:
        """Add the pairs of a batch ``z, y [B, D]``; returns ``self``."""
        merged = self.merge(LinearFitStats.of(z, y))
        self.count, self.mean_z, self.mean_y = merged.count, merged.mean_z, merged.mean_y
        self.czz, self.cyz = merged.czz, merged.cyz
        return self

    def merge(self, other: LinearFitStats) -> LinearFitStats:
        """The sums of both parts (Chan, Golub & LeVeque's pairwise update, on co-moments)."""
        n_a, n_b = self.count, other.count
        if n_b == 0:
            return LinearFitStats(n_a, self.mean_z, self.mean_y, self.czz, self.cyz)
        if n_a == 0:
            return LinearFitStats(n_b, other.mean_z, other.mean_y, other.czz, other.cyz)
        n = n_a + n_b
        dz, dy = other.mean_z - self.mean_z, other.mean_y - self.mean_y  # [D]
        w = n_a * n_b / n
        return LinearFitStats(
            n,
            self.mean_z + dz * (n_b / n),
            self.mean_y + dy * (n_b / n),
            self.czz + other.czz + w * torch.outer(dz, dz),
            self.cyz + other.cyz + w * torch.outer(dy, dz),
        )

    def solve(self, ridge: float = 0.0) -> tuple[Tensor, Tensor]:
        """``(W [D, D], b [D])`` minimizing ``mean_j ||W z_j + b - y_j||^2 + ridge ||W||_F^2``:
        ``W = cyz (czz + count * ridge * I)^-1``, ``b = mean_y - W mean_z`` (a Cholesky solve).

        Raises ``ValueError`` when ``czz + count * ridge * I`` is not positive definite (fewer
        pairs than ``D + 1`` without a ridge)."""
        if ridge < 0:
            raise ValueError(f"ridge={ridge} must be >= 0")
        a = self.czz + self.count * ridge * torch.eye(
            self.dim, dtype=torch.float64, device=self.czz.device
        )
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) != 0 or self.count == 0:
            raise ValueError(
                f"the linear fit is singular with {self.count} probes for D = {self.dim} and "
                f"ridge={ridge}: use more than D + 1 probes (num_probes) or a positive ridge"
            )
        weight = torch.cholesky_solve(self.cyz.T, chol).T  # a W^T = cyz^T, a symmetric
        return weight, self.mean_y - weight @ self.mean_z

    def flatten(self) -> Tensor:
        """One float64 vector ``[1 + 2D + 2D^2]`` (count first) to gather across processes."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.czz.device)
        parts = [count, self.mean_z, self.mean_y, self.czz.flatten(), self.cyz.flatten()]
        return torch.cat(parts)

    @classmethod
    def unflatten(cls, flat: Tensor, dim: int) -> LinearFitStats:
        """Inverse of :meth:`flatten`."""
        d2 = dim * dim
        mean_z, mean_y = flat[1 : 1 + dim], flat[1 + dim : 1 + 2 * dim]
        czz = flat[1 + 2 * dim : 1 + 2 * dim + d2].view(dim, dim)
        cyz = flat[1 + 2 * dim + d2 :].view(dim, dim)
        return cls(int(flat[0].item()), mean_z, mean_y, czz, cyz)


def gather_stats(stats: LinearFitStats) -> LinearFitStats:
    """Every process's sums merged in rank order (the same on every process); ``stats`` itself
    without an initialised process group. Works with gloo (CPU) and NCCL (CUDA) backends."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stats
    flat = stats.flatten()
    if "nccl" in str(dist.get_backend()):  # NCCL gathers CUDA tensors only
        flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat)
    device = stats.czz.device
    merged = reduce(LinearFitStats.merge, (LinearFitStats.unflatten(p, stats.dim) for p in parts))
    return LinearFitStats(
        merged.count,
        *(t.to(device) for t in (merged.mean_z, merged.mean_y, merged.czz, merged.cyz)),
    )


def _generator(seed: int, sigma: float, stream: int) -> torch.Generator:
    """A CPU generator of seed ``seed``, noise level ``sigma`` (its float64 bits) and ``stream``."""
    bits = struct.unpack("<Q", struct.pack("<d", float(sigma)))[0]
    state = np.random.SeedSequence([int(seed), bits, int(stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def distillation_probes(
    images: Tensor,
    sigma: float,
    num_probes: int,
    seed: int = 0,
    blocks: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Forward probes ``z = x + sigma * eps`` ``[M, C, H, W]`` of :meth:`LinearDenoiser.distill`.

    Probe ``j`` uses image ``order[j % N]`` of ``images [N, C, H, W]`` (``order`` a permutation
    seeded by ``seed`` and ``sigma``: every image is used ``floor(M / N)`` or ``ceil(M / N)``
    times) and fresh unit noise from the generator of its block of :data:`PROBE_BLOCK` probes
    (seeded by ``seed``, ``sigma`` and the block index). ``blocks`` selects blocks (default
    all ``ceil(M / PROBE_BLOCK)``), so shares of the probes are regenerated exactly. Computed in
    float64 on the images' device, returned as ``dtype``.
    """
    if num_probes < 1:
        raise ValueError(f"num_probes={num_probes} must be >= 1")
    n = images.shape[0]
    order = torch.randperm(n, generator=_generator(seed, sigma, 0)).to(images.device)
    num_blocks = -(-num_probes // PROBE_BLOCK)
    out = []
    for block in range(num_blocks) if blocks is None else blocks:
        start, stop = block * PROBE_BLOCK, min((block + 1) * PROBE_BLOCK, num_probes)
        x = images[order[torch.arange(start, stop, device=images.device) % n]].double()
        gen = _generator(seed, sigma, block + 1)
        eps = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(images.device)
        out.append((x + float(sigma) * eps).to(dtype))  # [stop - start, C, H, W]
    return torch.cat(out) if out else images.new_zeros((0, *images.shape[1:]), dtype=dtype)


class LinearDenoiser(nn.Module):
    """``D(z, s) = W_s z + b_s`` on a grid of noise levels (Li et al. 2024, sec. 3).

    Buffers (float64): ``sigmas [S]``, ``weight [S, D, D]``, ``bias [S, D]``, ``D = C*H*W`` of
    ``image_shape``. The call ``D(z [B,C,H,W], sigma [B] or scalar)`` applies to each element the
    map of its grid sigma (equal within :data:`SIGMA_RTOL` relative; any other sigma is a
    ``ValueError``), in float64 with autocast off, and returns ``z``'s dtype.
    """

    def __init__(
        self, sigmas: Tensor, weight: Tensor, bias: Tensor, image_shape: Sequence[int]
    ) -> None:
        super().__init__()
        self.image_shape = tuple(int(v) for v in image_shape)
        dim = int(np.prod(self.image_shape))
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        s = sigmas.numel()
        if weight.shape != (s, dim, dim) or bias.shape != (s, dim):
            raise ValueError(
                f"weight {tuple(weight.shape)} and bias {tuple(bias.shape)} must be [S, D, D] and "
                f"[S, D] for S = {s} sigmas and D = {dim} (image shape {self.image_shape})"
            )
        if s == 0 or not bool((sigmas > 0).all() and torch.isfinite(sigmas).all()):
            raise ValueError(
                f"sigmas must be a non-empty list of positive noise levels, got {sigmas.tolist()}"
            )
        self.register_buffer("sigmas", sigmas.to(weight.device))
        self.register_buffer("weight", weight.double())
        self.register_buffer("bias", bias.double())

    def grid_index(self, sigma: Tensor) -> Tensor:
        """Index ``[B]`` of the grid sigma of each ``sigma [B]``, ``-1`` where none matches."""
        sigma = sigma.to(self.sigmas.device, torch.float64).reshape(-1, 1)  # [B, 1]
        close = (sigma - self.sigmas).abs() <= SIGMA_RTOL * self.sigmas  # [B, S]
        idx = close.double().argmax(1)
        return torch.where(close.any(1), idx, torch.full_like(idx, -1))

    def has_sigma(self, sigma: float) -> bool:
        """Whether ``sigma`` is one of the grid sigmas (within :data:`SIGMA_RTOL`)."""
        return int(self.grid_index(torch.tensor([float(sigma)]))[0]) >= 0

    def forward(self, z: Tensor, sigma: Tensor | float) -> Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.image_shape:
            raise ValueError(
                f"LinearDenoiser expects z of shape [B, {', '.join(map(str, self.image_shape))}], "
                f"got {tuple(z.shape)}"
            )
        sigma = batch_sigma(sigma, z.shape[0], z.device)
        idx = self.grid_index(sigma)
        if (idx < 0).any():
            bad = float(sigma.flatten()[(idx < 0).nonzero()[0, 0]])
            raise ValueError(
                f"sigma={bad:.7g} is not on this linear denoiser's grid {self.sigmas.tolist()} "
                f"(within {SIGMA_RTOL:g} relative); distill it at that sigma too"
            )
        with torch.autocast(z.device.type, enabled=False):
            x = z.detach().flatten(1).to(self.weight.device, torch.float64)  # [B, D]
            out = torch.empty_like(x)
            for i in idx.unique().tolist():
                sel = idx == i
                out[sel] = x[sel] @ self.weight[i].T + self.bias[i]  # [b, D]
        return out.view(z.shape).to(device=z.device, dtype=z.dtype)

    @classmethod
    def concat(cls, parts: Sequence[LinearDenoiser]) -> LinearDenoiser:
        """One denoiser on the grids of all ``parts`` (same image shape, disjoint grids)."""
        shapes = {p.image_shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"cannot join linear denoisers of image shapes {sorted(shapes)}")
        return cls(
            torch.cat([p.sigmas for p in parts]),
            torch.cat([p.weight for p in parts]),
            torch.cat([p.bias for p in parts]),
            shapes.pop(),
        )

    @classmethod
    @torch.no_grad()
    def distill(
        cls,
        teacher: Denoiser,
        images: Tensor,
        sigmas: Sequence[float] | Tensor,
        num_probes: int | None = None,
        ridge: float = 0.0,
        seed: int = 0,
        batch_size: int = 256,
        dtype: torch.dtype = torch.float32,
        distributed: bool | None = None,
    ) -> LinearDenoiser:
        """The closed-form least-squares affine imitation of ``teacher`` at each of ``sigmas``.

        Per sigma, ``num_probes`` (default ``4 * D``) forward probes of ``images [N, C, H, W]``
        (:func:`distillation_probes` with ``seed``, in ``dtype``, on the images' device) are
        denoised by ``teacher`` in batches of at most ``batch_size``; their centred float64 sums
        (:class:`LinearFitStats`) give ``W_s, b_s`` with ``ridge`` (per probe, section 3c.2).
        ``distributed`` (default: whether a process group is initialised) splits the blocks of
        probes round-robin over the processes, each denoising its share, and merges the sums in
        rank order: every process gets the same map, and every process must call this.
        """
        images = check_images(images)
        dim = int(np.prod(images.shape[1:]))
        num_probes = default_num_probes(dim) if num_probes is None else int(num_probes)
        if num_probes <= dim and ridge <= 0:
            raise ValueError(
                f"num_probes={num_probes} must exceed D = C*H*W = {dim} for a unique fit without "
                "a ridge; use more probes or ridge > 0"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        grid = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
        if grid.numel() == 0 or not bool((grid > 0).all() and torch.isfinite(grid).all()):
            raise ValueError(
                f"sigmas must be a non-empty list of positive noise levels, got {sigmas}"
            )
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        blocks = list(range(-(-num_probes // PROBE_BLOCK)))[rank::world]
        weights, biases = [], []
        for s in grid.tolist():
            stats = teacher_stats(teacher, images, s, num_probes, seed, blocks, batch_size, dtype)
            stats = gather_stats(stats) if distributed else stats
            with torch.autocast(images.device.type, enabled=False):
                weight, bias = stats.solve(ridge)
            weights.append(weight)
            biases.append(bias)
        return cls(grid, torch.stack(weights), torch.stack(biases), images.shape[1:])


@torch.no_grad()
def teacher_stats(
    teacher: Denoiser,
    images: Tensor,
    sigma: float,
    num_probes: int,
    seed: int,
    blocks: Sequence[int],
    batch_size: int,
    dtype: torch.dtype,
) -> LinearFitStats:
    """The sums of the probes ``z`` of ``blocks`` (:func:`distillation_probes`) and the
    teacher's outputs ``y = teacher(z, sigma)``, denoised in batches of at most ``batch_size``
    (the teacher runs as the caller set it up; the sums are float64 with autocast off)."""
    stats = LinearFitStats.empty(int(np.prod(images.shape[1:])), images.device)
    for block in blocks:
        z = distillation_probes(images, sigma, num_probes, seed, [block], dtype)
        for part in z.split(batch_size):
            sig = torch.full((part.shape[0],), sigma, dtype=part.dtype, device=part.device)
            y = teacher(part, sig)  # [b, C, H, W]
            with torch.autocast(part.device.type, enabled=False):
                stats.update(part.flatten(1), y.flatten(1))
    return stats
