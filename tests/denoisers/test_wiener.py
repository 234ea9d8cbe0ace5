import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, WienerLocalityDenoiser, wiener_masks
from lightning_pspc.denoisers.loops.local_loops import fpmc_loop

from .conftest import reduced_precision
from .local_data import mixed_probes, smooth_images


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
def test_matches_the_definition_loop_at_all_18_edm_sigmas(shape):
    x = smooth_images(30, *shape)
    z, s = mixed_probes(x)
    d = WienerLocalityDenoiser(x, threshold=0.05, temperature=1.5)
    with reduced_precision():
        out = d(z, s)
    eye = torch.eye(x[0].numel(), dtype=torch.float64).view(-1, *shape)
    for i in range(18):
        m = wiener_masks(d.eigenvalues, d.eigenvectors, s[i].item(), 0.05)
        q = m.T.reshape(-1, *shape)  # output dimension m queries with column M[:, m]
        ref = fpmc_loop(z[i : i + 1], s[i : i + 1], x, q, eye, temperature=1.5)
        assert (out[i].double() - ref[0]).abs().max() < 1e-5


def test_masks_follow_the_published_rule():
    x = smooth_images(30, 1, 6)
    d = WienerLocalityDenoiser(x)
    m = wiener_masks(d.eigenvalues, d.eigenvectors, 0.5, 0.02)
    w = (d.eigenvectors * (d.eigenvalues / (d.eigenvalues + 0.25))) @ d.eigenvectors.T
    w_hat = (w / w.diagonal().unsqueeze(1)).abs()
    assert torch.equal(m.bool(), w_hat >= 0.02 * w_hat.max())
    assert m.diagonal().all()  # W_hat's diagonal is 1, the largest entry's scale
    assert m.sum() < m.numel()  # local at this sigma


def test_threshold_zero_is_the_empirical_denoiser():
    x = smooth_images(30, 2, 6)
    z, s = mixed_probes(x)
    out = WienerLocalityDenoiser(x, threshold=0.0)(z, s)
    torch.testing.assert_close(out, EmpiricalDenoiser(x)(z, s), rtol=0, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    x = smooth_images(4, 1, 6)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        WienerLocalityDenoiser(x, threshold=-0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        WienerLocalityDenoiser(x, temperature=0.0)
