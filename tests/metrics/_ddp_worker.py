"""One rank of the 2-process gloo test in ``test_metrics_ddp.py`` (not a test module).

Usage: ``python _ddp_worker.py RANK 2 PORT DATA_PT OUT_PT``. Each rank updates every metric with
its own uneven slice of the data (in two batches), then saves the synced ``compute()`` values to
``OUT_PT``. :func:`compute_all` with ``rank=None`` is the 1-process reference.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from lightning_pspc.metrics import (
    DenoiserDistance,
    LinearityScore,
    MemorizedFraction,
    NearestNeighbourStats,
    NormalizedMSE,
    RSquared,
    SampleAgreement,
    TwinSimilarity,
)


def rank_indices(n: int, rank: int) -> torch.Tensor:
    """Uneven split over 2 ranks: rank 0 takes the first ``n // 2 + 1`` items, rank 1 the rest."""
    return torch.arange(n).tensor_split([n // 2 + 1])[rank]


def compute_all(data: dict[str, torch.Tensor], rank: int | None = None) -> dict[str, torch.Tensor]:
    """Every metric on ``data``: all of it (``rank=None``) or ``rank``'s slice in two batches."""
    train, samples, twin = data["train"], data["samples"], data["samples_twin"]
    per_sigma = {
        "distance": DenoiserDistance(data["grid"]),
        "linearity": LinearityScore(data["grid"]),
        "nmse": NormalizedMSE(data["grid"]),
        "r2": RSquared(data["grid"]),
    }
    memorized = MemorizedFraction(train, chunk_size=2)
    stats = NearestNeighbourStats(train, chunk_size=2)
    agreement = SampleAgreement()
    twins = TwinSimilarity(train[:3], train[3:], threshold=0.5, chunk_size=2)

    def batches(n: int) -> tuple[torch.Tensor, ...]:
        return (torch.arange(n),) if rank is None else rank_indices(n, rank).tensor_split(2)

    for idx in batches(data["out_a"].shape[0]):
        out_a, out_b, out_c, sigma = (data[k][idx] for k in ("out_a", "out_b", "out_c", "sigma"))
        per_sigma["distance"].update(out_a, out_b, sigma)
        per_sigma["linearity"].update(out_c, out_a, out_b, sigma)
        per_sigma["nmse"].update(out_a, out_b, sigma)
        per_sigma["r2"].update(out_a, out_b, sigma)
    for idx in batches(samples.shape[0]):
        memorized.update(samples[idx])
        stats.update(samples[idx])
        agreement.update(samples[idx], twin[idx])
        twins.update(samples[idx], twin[idx])

    result = {name: metric.compute() for name, metric in per_sigma.items()}
    result["memorized"] = memorized.compute()
    result.update(stats.compute())
    result.update(agreement.compute())
    result.update(twins.compute())
    return result


def main() -> None:
    rank, world_size, port = (int(a) for a in sys.argv[1:4])
    assert world_size == 2, "the test splits the data over exactly 2 ranks"
    data_path, out_path = sys.argv[4], sys.argv[5]
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    data = torch.load(data_path)
    result = compute_all(data, rank)
    torch.save(result, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
