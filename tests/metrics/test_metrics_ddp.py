"""Every metric synced over 2 gloo processes on CPU equals the 1-process value on all the data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from tests.helpers import run_clean_together
from tests.metrics._ddp_worker import compute_all

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    grid = torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)
    # on-grid and off-grid sigmas; the last three all fall on rank 1's slice
    sigma = torch.tensor([0.05, 5.0, 0.5, 0.07, 0.4, 6.0, 0.05, 3.0, 0.6])
    train = torch.rand(6, 1, 3, 3, generator=gen) * 2 - 1
    near = train[[0, 3, 5, 3]] + 1e-3 * torch.randn(4, 1, 3, 3, generator=gen)  # memorized
    far = torch.rand(5, 1, 3, 3, generator=gen) * 2 - 1
    samples = torch.cat([near, far])[torch.randperm(9, generator=gen)]
    twin = torch.cat([samples[:4] + 0.05 * torch.randn(4, 1, 3, 3, generator=gen), far[:5]])
    return {
        "grid": grid,
        "sigma": sigma,
        "out_a": torch.randn(9, 2, 3, 3, generator=gen),
        "out_b": torch.randn(9, 2, 3, 3, generator=gen),
        "out_c": torch.randn(9, 2, 3, 3, generator=gen),
        "train": train,
        "samples": samples,
        "samples_twin": twin,
    }


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tmp_path: Path) -> None:
    data = _make_data()
    torch.save(data, tmp_path / "data.pt")
    port = _free_port()
    ranks = [
        [WORKER, rank, 2, port, tmp_path / "data.pt", tmp_path / f"out{rank}.pt"]
        for rank in range(2)
    ]
    procs = run_clean_together(ranks, timeout=120)
    assert all(p.returncode == 0 for p in procs), "\n".join(p.stdout for p in procs)

    expected = compute_all(data)
    assert 0 < expected["memorized"] < 1  # the data mixes memorized and novel samples
    assert 0 < expected["reproducibility"] < 1  # and reproduced and novel twin pairs
    assert not expected["distance"].isnan().any() and not expected["r2"].isnan().any()
    for rank in range(2):
        got = torch.load(tmp_path / f"out{rank}.pt")
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12, msg=key)
