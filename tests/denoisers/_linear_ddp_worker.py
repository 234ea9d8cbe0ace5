"""One rank of the 2-process gloo test of the linear distillation (not a test module).

Usage: ``python _linear_ddp_worker.py RANK 2 PORT OUT_PT``. Both ranks distill the same teacher
(:func:`teacher`) on :func:`images` with ``torch.distributed`` initialised, so each denoises its
share of the probes and the sums are merged across ranks, then refresh the ``linear_distilled`` reference of an
evaluation of their rank; the rank saves both maps and the number of probes its teachers saw to
``OUT_PT``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from lightning_pspc.denoisers import LinearDenoiser

SIGMAS = [0.1, 2.0]
NUM_PROBES = 600  # blocks of 256, 256, 88: rank 0 takes blocks 0 and 2, rank 1 block 1


def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 3, 3, generator=gen) * 2 - 1


class Teacher:
    """A nonlinear float64 denoiser that counts the probes it denoises."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.seen += z.shape[0]
        return torch.tanh(z) / (1 + sigma.view(-1, 1, 1, 1)) + 0.1 * z.square()


def linear_reference(teacher: Teacher, rank: int, world_size: int):
    """The ``linear_distilled`` reference of an evaluation of ``rank`` of ``world_size``,
    refreshed with ``teacher``."""
    from lightning_pspc.denoisers.network_fitted import ReferenceOptions
    from lightning_pspc.evaluation import EvalData, Evaluation

    x = images()
    options = ReferenceOptions(linear_probes=NUM_PROBES)
    ev = Evaluation(
        EvalData(x, x[:2], x),
        [],
        ["linear_distilled"],
        SIGMAS,
        0,
        100,
        "cpu",
        rank,
        world_size,
        reference_options=options,
    )
    ev.refresh_references(teacher)
    return ev.references["linear_distilled"]


def main() -> None:
    rank, world_size, port = (int(a) for a in sys.argv[1:4])
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    teacher = Teacher()
    lin = LinearDenoiser.distill(
        teacher, images(), SIGMAS, NUM_PROBES, batch_size=100, dtype=torch.float64
    )  # distributed by default: a process group is initialised
    shared = Teacher()
    reference = linear_reference(shared, rank, world_size)
    torch.save(
        {
            "weight": lin.weight,
            "bias": lin.bias,
            "seen": teacher.seen,
            "reference_weight": reference.denoiser.weight,
            "reference_seen": shared.seen,
        },
        sys.argv[4],
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
