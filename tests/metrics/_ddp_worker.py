"""One rank of the 2-process gloo test in ``test_metrics_ddp.py`` (not a test module).

Usage: ``python _ddp_worker.py RANK 2 PORT DATA_PT OUT_PT``. Each rank updates every metric with
its own uneven slice of the data (in two batches), then saves the synced ``compute()`` values to
``OUT_PT``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from lightning_pspc.metrics import DenoiserDistance, MemorizedFraction, NearestNeighbourStats


def rank_indices(n: int, rank: int) -> torch.Tensor:
    """Uneven split over 2 ranks: rank 0 takes the first ``n // 2 + 1`` items, rank 1 the rest."""
    return torch.arange(n).tensor_split([n // 2 + 1])[rank]


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
    distance = DenoiserDistance(data["grid"])
    memorized = MemorizedFraction(data["train"], chunk_size=2)
    stats = NearestNeighbourStats(data["train"], chunk_size=2)

    for half in rank_indices(data["out_a"].shape[0], rank).tensor_split(2):
        distance.update(data["out_a"][half], data["out_b"][half], data["sigma"][half])
    for half in rank_indices(data["samples"].shape[0], rank).tensor_split(2):
        memorized.update(data["samples"][half])
        stats.update(data["samples"][half])

    result = {"distance": distance.compute(), "memorized": memorized.compute(), **stats.compute()}
    torch.save(result, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
