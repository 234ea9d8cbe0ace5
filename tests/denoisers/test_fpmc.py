import pytest
import torch

from lightning_pspc.denoisers import (
    EmpiricalDenoiser,
    FilteredPosteriorMeans,
    FPMCDenoiser,
    PSPCSquareDenoiser,
)
from lightning_pspc.denoisers.loops.local_loops import fpmc_loop

from .conftest import reduced_precision
from .local_data import mixed_probes, smooth_images


def square_windows(c: int, h: int, w: int, p: int) -> torch.Tensor:
    """PSPC-Square's windows as FPMC elements: ``q = r =`` window indicator ``[L, 1, H, W]``."""
    out = []
    for r in range(h - p + 1):
        for col in range(w - p + 1):
            m = torch.zeros(1, h, w)
            m[:, r : r + p, col : col + p] = 1
            out.append(m)
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
@pytest.mark.parametrize("p", [2, 3, 5])
def test_engine_with_square_windows_is_pspc_square(shape, p):
    x = smooth_images(30, *shape)
    z, s = mixed_probes(x)
    q = square_windows(*shape, p)
    with reduced_precision():
        out = FPMCDenoiser(x, q, q, block_size=5, chunk_elements=3000)(z, s)
    ref = PSPCSquareDenoiser(x, patch_size=p)(z, s)
    assert (out - ref).abs().max() < 1e-5


def test_soft_per_channel_weights_match_the_definition_loop():
    x = smooth_images(24, 2, 6, seed=3)
    z, s = mixed_probes(x)
    g = torch.Generator().manual_seed(0)
    q = torch.rand(10, 2, 6, 6, generator=g) ** 3  # per-channel query precisions
    r = torch.rand(10, 1, 6, 6, generator=g) * (torch.rand(10, 1, 6, 6, generator=g) > 0.5)
    ref = fpmc_loop(z, s, x, q, r, temperature=0.7)
    for block, chunk in [(16, 2**22), (3, 200), (1, 1)]:
        with reduced_precision():
            out = FPMCDenoiser(x, q, r, 0.7, block_size=block, chunk_elements=chunk)(z, s)
        assert (out.double() - ref).abs().max() < 1e-5


def test_uncovered_pixels_take_the_empirical_value_and_equal_queries_merge():
    x = smooth_images(20, 1, 8)
    z, s = mixed_probes(x)
    q = torch.ones(3, 1, 8, 8)  # three equal queries: one posterior mean, responses summed
    r = torch.zeros(3, 1, 8, 8)
    r[0, :, :2], r[1, :, :4], r[2, :, 0, 0] = 1.0, 2.0, 5.0
    d = FPMCDenoiser(x, q, r)
    assert d.collection.num_elements == 1
    torch.testing.assert_close(d(z, s), EmpiricalDenoiser(x)(z, s), rtol=0, atol=1e-6)
    r[:, :, :4] = 0  # top half covered by nothing: the empirical denoiser's value there
    r[0, :, 4:] = 1.0
    q[0, :, :4] = 0.0
    out, ref = FPMCDenoiser(x, q, r)(z, s), fpmc_loop(z, s, x, q, r)
    assert (out.double() - ref).abs().max() < 1e-5


def test_bad_weights_raise_clear_errors():
    x = smooth_images(4, 2, 6)
    ok = torch.ones(3, 1, 6, 6)
    with pytest.raises(
        ValueError, match=r"query must be a tensor \[K, 1 or 2, 6, 6\], got \(3, 3, 6, 6\)"
    ):
        FilteredPosteriorMeans(torch.ones(3, 3, 6, 6), ok, (2, 6, 6))
    with pytest.raises(ValueError, match="response must be finite and >= 0"):
        FPMCDenoiser(x, ok, -ok)
    with pytest.raises(ValueError, match="same number K"):
        FPMCDenoiser(x, ok, ok[:2])
    with pytest.raises(ValueError, match="must cover 6x6"):
        FPMCDenoiser(x, torch.ones(3, 1, 5, 6), torch.ones(3, 1, 5, 6))


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_both_engines_match_the_definition_loop(engine):
    x = smooth_images(700, 2, 6, seed=4)  # more images than one kernel chunk (online softmax)
    z, s = mixed_probes(x)
    g = torch.Generator().manual_seed(1)
    q = torch.rand(7, 1, 6, 6, generator=g) * (torch.rand(7, 1, 6, 6, generator=g) > 0.6)
    r = (torch.rand(7, 2, 6, 6, generator=g) > 0.5).double()
    d = FPMCDenoiser(x, q, r, 0.8, block_size=3)
    d.collection.engine = engine
    out = d(z, s)
    assert (out.double() - fpmc_loop(z, s, x, q, r, temperature=0.8)).abs().max() < 1e-5


def test_unknown_engine_raises():
    with pytest.raises(ValueError, match="engine must be one of"):
        FilteredPosteriorMeans(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), (1, 4, 4), 4, "x")
