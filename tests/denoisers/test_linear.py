"""Linear distillation (docs/reference.md section 3c): exact on affine teachers, equal to an
independent least-squares fit on a network, merged sums equal to one pass, the grid contract."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import Tensor, nn

from lightning_pspc.denoisers import (
    GaussianDenoiser,
    LinearDenoiser,
    LinearFitStats,
    distillation_probes,
)
from lightning_pspc.denoisers.linear import PROBE_BLOCK
from lightning_pspc.diffusion import EDMPrecond
from tests.helpers import TinyNet

SIGMAS = [0.002, 0.5, 20.0]


def _images(n: int = 20, side: int = 3, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=gen) * 2 - 1


class Affine(nn.Module):
    """``A z + c`` in float64, with a different ``A`` per call sigma (``A_s = A / (1 + s)``)."""

    def __init__(self, dim: int, seed: int = 1) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        self.c = torch.randn(dim, generator=gen, dtype=torch.float64)

    def matrix(self, sigma: float) -> Tensor:
        return self.a / (1 + sigma)

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        s = float(sigma[0])
        assert torch.all(sigma == sigma[0])
        return (z.flatten(1).double() @ self.matrix(s).T + self.c).view(z.shape)


@pytest.mark.parametrize("n", [20, 4])  # more and fewer training images than D = 9
def test_affine_teacher_is_recovered_to_round_off(n):
    images, teacher = _images(n), Affine(9)
    lin = LinearDenoiser.distill(teacher, images, SIGMAS, num_probes=12, dtype=torch.float64)
    for i, s in enumerate(SIGMAS):
        torch.testing.assert_close(lin.weight[i], teacher.matrix(s), rtol=0, atol=1e-9)
        torch.testing.assert_close(lin.bias[i], teacher.c, rtol=0, atol=1e-9)


def test_gaussian_teacher_is_recovered_to_round_off():
    images = _images(30, side=4)  # D = 16
    gauss = GaussianDenoiser(images)
    lin = LinearDenoiser.distill(gauss, images, SIGMAS, dtype=torch.float64)  # 4 D probes
    mu, lam, u = gauss.mean, gauss.eigenvalues, gauss.eigenvectors
    for i, s in enumerate(SIGMAS):
        w = u @ torch.diag(lam / (lam + s**2)) @ u.T  # Li et al. eq. 6
        torch.testing.assert_close(lin.weight[i], w, rtol=0, atol=1e-10)
        torch.testing.assert_close(lin.bias[i], mu - w @ mu, rtol=0, atol=1e-10)
    z = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor(SIGMAS * 2, dtype=torch.float64)  # mixed sigmas in one batch
    torch.testing.assert_close(lin(z, sigma), gauss(z, sigma), rtol=0, atol=1e-10)


def test_network_distillation_equals_an_independent_least_squares_fit():
    torch.manual_seed(0)
    net = EDMPrecond(TinyNet(channels=1, width=8)).eval()
    images = _images(10, side=4)  # D = 16
    m = PROBE_BLOCK + 44  # two blocks, the last one partial
    lin = LinearDenoiser.distill(net, images, [0.3, 3.0], num_probes=m, seed=5, batch_size=64)
    for i, s in enumerate([0.3, 3.0]):
        z = distillation_probes(images, s, m, seed=5)
        with torch.no_grad():
            y = torch.cat([net(part, torch.full((len(part),), s)) for part in z.split(64)])
        x = torch.cat([z.flatten(1).double(), torch.ones(m, 1, dtype=torch.float64)], 1)
        sol = torch.linalg.lstsq(x, y.flatten(1).double(), driver="gelsd").solution  # [D+1, D]
        torch.testing.assert_close(lin.weight[i], sol[:-1].T, rtol=0, atol=1e-9)
        torch.testing.assert_close(lin.bias[i], sol[-1], rtol=0, atol=1e-9)
    # the network is not affine: the fit leaves a residual, and outputs stay float32
    z = distillation_probes(images, 0.3, 8, seed=9)
    out = lin(z, torch.full((8,), 0.3))
    assert out.dtype == torch.float32 and (out - net(z, torch.full((8,), 0.3))).abs().max() > 1e-4


def test_merged_batch_sums_equal_one_pass_sums():
    gen = torch.Generator().manual_seed(0)
    z = 1e3 + torch.randn(57, 6, generator=gen, dtype=torch.float64)  # far from 0: cancellation
    y = z @ torch.randn(6, 6, generator=gen, dtype=torch.float64) + torch.randn(
        57, 6, generator=gen, dtype=torch.float64
    )
    one = LinearFitStats.of(z, y)
    stats = LinearFitStats.empty(6)
    for part in torch.arange(57).split([1, 20, 3, 33]):
        stats.update(z[part], y[part])
    halves = LinearFitStats.of(z[:30], y[:30]).merge(LinearFitStats.of(z[30:], y[30:]))
    for got in (stats, halves):
        assert got.count == 57
        for name in ("mean_z", "mean_y", "czz", "cyz"):
            torch.testing.assert_close(
                getattr(got, name), getattr(one, name), rtol=1e-12, atol=1e-9
            )
    zc, yc = z - z.mean(0), y - y.mean(0)  # the definition
    torch.testing.assert_close(one.czz, zc.T @ zc, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(one.cyz, yc.T @ zc, rtol=1e-12, atol=1e-9)
    flat = LinearFitStats.unflatten(stats.flatten(), 6)
    assert (
        flat.count == 57 and torch.equal(flat.czz, stats.czz) and torch.equal(flat.cyz, stats.cyz)
    )


def test_ridge_solves_the_penalised_least_squares():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    ridge = 0.3
    w, b = LinearFitStats.of(z, y).solve(ridge)
    # mean ||W z + b - y||^2 + ridge ||W||^2 = least squares with sqrt(M ridge) I rows added
    zc, yc = z - z.mean(0), y - y.mean(0)
    x = torch.cat([zc, (40 * ridge) ** 0.5 * torch.eye(5, dtype=torch.float64)])
    t = torch.cat([yc, torch.zeros(5, 5, dtype=torch.float64)])
    ref = torch.linalg.lstsq(x, t).solution.T
    torch.testing.assert_close(w, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(b, y.mean(0) - ref @ z.mean(0), rtol=0, atol=1e-12)
    assert LinearFitStats.of(z, y).solve(1e9)[0].abs().max() < 1e-8  # shrinks to 0


def test_probes_do_not_depend_on_batch_size_or_blocks():
    images = _images(7)
    z = distillation_probes(images, 0.5, 600, seed=3)
    parts = [distillation_probes(images, 0.5, 600, seed=3, blocks=[b]) for b in (2, 0, 1)]
    assert torch.equal(torch.cat([parts[1], parts[2], parts[0]]), z) and z.shape[0] == 600
    assert not torch.equal(distillation_probes(images, 0.5001, 600, seed=3), z)

    def tanh(z: Tensor, sigma: Tensor) -> Tensor:  # nonlinear, exact whatever the batch
        return torch.tanh(z)

    a, b = (
        LinearDenoiser.distill(tanh, images, [0.5], 300, batch_size=k, dtype=torch.float64)
        for k in (7, 256)
    )
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-12)
    # each image is used equally often: with sigma -> 0 the probes are the images themselves
    z0 = distillation_probes(images, 1e-12, 70, seed=0, dtype=torch.float64)
    counts = (z0.flatten(1)[:, None] - images.flatten(1)[None].double()).abs().amax(-1) < 1e-9
    assert counts.sum(0).tolist() == [10] * 7


def test_grid_contract_and_clear_errors():
    images, teacher = _images(), Affine(9)
    lin = LinearDenoiser.distill(teacher, images, SIGMAS, num_probes=12, dtype=torch.float64)
    z = torch.randn(2, 1, 3, 3)
    near = lin(z, torch.tensor([0.5 * (1 + 5e-7), 20.0]))  # within 1e-6 relative: the grid map
    torch.testing.assert_close(near, lin(z, torch.tensor([0.5, 20.0])))
    assert near.dtype == torch.float32
    with pytest.raises(ValueError, match=r"sigma=0\.51 is not on .* grid"):
        lin(z, torch.tensor([0.51, 0.5]))
    with pytest.raises(ValueError, match="must exceed D"):
        LinearDenoiser.distill(teacher, images, SIGMAS, num_probes=9)
    with pytest.raises(ValueError, match="singular"):
        LinearFitStats.of(torch.ones(3, 4), torch.ones(3, 4)).solve()
    both = LinearDenoiser.concat(
        [lin, LinearDenoiser.distill(teacher, images, [1.0], num_probes=12, dtype=torch.float64)]
    )
    torch.testing.assert_close(both(z, 1.0), teacher(z.double(), torch.ones(2)).float())


@pytest.mark.slow
def test_two_process_gloo_distillation_equals_one_process(tmp_path):
    from tests.denoisers import _linear_ddp_worker as worker
    from tests.helpers import run_clean_together

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ranks = [[worker.__file__, r, 2, port, tmp_path / f"out{r}.pt"] for r in range(2)]
    procs = run_clean_together(ranks, timeout=120)
    assert all(p.returncode == 0 for p in procs), "\n".join(p.stdout for p in procs)
    teacher = worker.Teacher()
    one = LinearDenoiser.distill(
        teacher, worker.images(), worker.SIGMAS, worker.NUM_PROBES, dtype=torch.float64
    )
    got = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]
    # each rank denoised its own blocks only (256 + 88 and 256 probes per sigma) ...
    assert [g["seen"] for g in got] == [2 * 344, 2 * 256] and teacher.seen == 2 * 600
    for g in got:  # ... and both got the one-process map
        torch.testing.assert_close(g["weight"], one.weight, rtol=0, atol=1e-12)
        torch.testing.assert_close(g["bias"], one.bias, rtol=0, atol=1e-12)
    # the evaluation's reference shares its fit over the ranks alike
    alone = worker.linear_reference(worker.Teacher(), 0, 1)
    assert [g["reference_seen"] for g in got] == [2 * 344, 2 * 256]
    for g in got:
        torch.testing.assert_close(g["reference_weight"], alone.denoiser.weight, rtol=0, atol=1e-10)
