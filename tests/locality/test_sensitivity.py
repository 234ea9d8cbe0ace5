import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import EDMPrecond
from lightning_pspc.evaluation.probes import forward_probes
from lightning_pspc.locality import (
    heatmaps_at_sigmas,
    sensitivity_heatmaps,
    sensitivity_patch_size,
    strided_pixels,
)
from tests.helpers import TinyNet


def linear_map(c: int, h: int, w: int, seed: int = 0):
    """``D(z) = A z`` and ``|A|`` summed over output and input channels ``[H, W, H, W]``."""
    a = torch.randn(c * h * w, c * h * w, generator=torch.Generator().manual_seed(seed))
    expected = a.abs().view(c, h, w, c, h, w).sum((0, 3))
    return (lambda z, s: (z.flatten(1) @ a.T).view_as(z)), expected


def test_heatmap_of_a_linear_map_is_its_absolute_matrix_summed_over_channels():
    d, expected = linear_map(2, 5, 6)
    z = torch.randn(3, 2, 5, 6)
    for vjp_batch in (256, 7, 1):  # chunking changes nothing
        hm = sensitivity_heatmaps(d, z, 0.7, vjp_batch=vjp_batch)
        torch.testing.assert_close(hm, expected, rtol=1e-5, atol=1e-5)


def test_pixel_subsets_give_the_rows_of_those_pixels():
    d, expected = linear_map(1, 7, 7)
    z = torch.randn(2, 1, 7, 7)
    pix = strided_pixels(7, 7, 3)
    assert pix.tolist() == [[r, c] for r in (0, 3, 6) for c in (0, 3, 6)]
    torch.testing.assert_close(
        sensitivity_heatmaps(d, z, 1.0, stride=3), expected[pix[:, 0], pix[:, 1]]
    )
    rows = torch.tensor([[1, 2], [6, 0]])
    torch.testing.assert_close(
        sensitivity_heatmaps(d, z, 1.0, pixels=rows), expected[[1, 6], [2, 0]]
    )


def test_network_heatmap_is_the_mean_abs_gradient_per_probe():
    torch.manual_seed(0)
    net = EDMPrecond(TinyNet(channels=2, width=4)).eval()
    z, sigma = torch.randn(3, 2, 6, 6), 0.8
    hm = sensitivity_heatmaps(net, z, sigma, vjp_batch=10)
    zz = z.clone().requires_grad_(True)
    out = net(zz, torch.full((3,), sigma))
    ref = torch.zeros(6, 6)
    for c_out in range(2):
        (g,) = torch.autograd.grad(out[:, c_out, 2, 4].sum(), zz, retain_graph=True)
        ref += g.abs().sum(1).mean(0)
    torch.testing.assert_close(hm[2, 4], ref, rtol=1e-5, atol=1e-6)
    # two 3x3 convolutions: output pixel (2, 4) sees at most the 5x5 window around it
    assert hm[2, 4][:, :2].sum() == 0 and hm[2, 4][5:].sum() == 0 and hm[2, 4].sum() > 0
    assert not hm.requires_grad


def test_heatmaps_at_sigmas_use_the_evaluation_probes_of_each_sigma():
    net = EDMPrecond(TinyNet(channels=1, width=4)).eval()
    x = torch.rand(2, 1, 6, 6) * 2 - 1
    probes = forward_probes(x, torch.tensor([2.0, 0.5], dtype=torch.float64), 2, seed=3)
    a = heatmaps_at_sigmas(net, probes, [0.5, 2.0], stride=2)
    assert a.shape == (2, 9, 6, 6)
    at_two = probes.z[probes.sigma == 2.0]
    torch.testing.assert_close(a[1], sensitivity_heatmaps(net, at_two, 2.0, stride=2))
    with pytest.raises(ValueError, match="no probe at sigma=1"):
        heatmaps_at_sigmas(net, probes, [1.0], stride=2)


def test_sensitivity_patch_size():
    h = w = 7
    assert sensitivity_patch_size(torch.eye(h * w).view(h, w, h, w), 0.95) == 1.0
    # uniform heatmaps: the whole image must be covered at fraction 1; the side is clipped to 7
    assert sensitivity_patch_size(torch.ones(h, w, h, w), 1.0) == 7.0
    # the centre pixel of a uniform heatmap needs a 5x5 square (25/49 > 0.5; 9/49 < 0.5)
    centre = torch.ones(1, h, w)
    assert sensitivity_patch_size(centre, 0.5, pixels=torch.tensor([[3, 3]])) == 5.0
    # a corner pixel: squares are clipped to the image, 4x4 of 7x7 inside the 7-square
    assert sensitivity_patch_size(centre, 0.3, pixels=torch.tensor([[0, 0]])) == 7.0
    assert sensitivity_patch_size(centre, 0.15, pixels=torch.tensor([[0, 0]])) == 5.0


def test_bad_arguments_raise_clear_errors():
    d, _ = linear_map(1, 4, 4)
    z = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="not both"):
        sensitivity_heatmaps(d, z, 1.0, pixels=torch.tensor([[0, 0]]), stride=2)
    with pytest.raises(ValueError, match=r"inside the 4x4 image, got \[4, 0\]"):
        sensitivity_heatmaps(d, z, 1.0, pixels=torch.tensor([[4, 0]]))
    with pytest.raises(ValueError, match=r"probes \[M, C, H, W\]"):
        sensitivity_heatmaps(d, z[0], 1.0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        sensitivity_patch_size(torch.ones(4, 4, 4, 4), 0.0)
    with pytest.raises(ValueError, match=r"with pixels=\[P, 2\]"):
        sensitivity_patch_size(torch.ones(3, 4, 4), 0.5)


def test_a_denoiser_without_gradients_is_refused_rather_than_given_zero_heatmaps():
    images = torch.rand(4, 1, 5, 5) * 2 - 1
    z = torch.randn(2, 1, 5, 5)
    # closed forms run without autograd (their numba and Triton kernels never could)
    with pytest.raises(ValueError, match=r"EmpiricalDenoiser's output does not depend on z"):
        sensitivity_heatmaps(EmpiricalDenoiser(images), z, 1.0)
    d, _ = linear_map(1, 5, 5)
    with pytest.raises(ValueError, match=r"all zeros.*Fix: pass a network"):
        sensitivity_heatmaps(lambda x, s: d(x, s).detach(), z, 1.0, stride=2)
    net = EDMPrecond(TinyNet(channels=1, width=4)).eval()
    with pytest.raises(ValueError, match="does not depend on z"):  # only the weights need grad
        sensitivity_heatmaps(lambda x, s: net(x.detach(), s), z, 1.0, stride=2)


def test_patch_size_of_a_heatmap_without_mass_or_with_nan_names_the_row():
    h = w = 5
    hm = torch.rand(h, w, h, w) + 0.1
    zero = hm.clone()
    zero[2, 3] = 0  # an output pixel sensitive to nothing (before: side 1, the minimum)
    with pytest.raises(ValueError, match=r"output pixel \(2, 3\) has no mass"):
        sensitivity_patch_size(zero, 0.5)
    for bad in (float("nan"), float("inf")):
        broken = hm.clone()
        broken[4, 1, 0, 0] = bad  # before: a size that depended on where the NaN sat
        with pytest.raises(ValueError, match=r"output pixel \(4, 1\) has non-finite values"):
            sensitivity_patch_size(broken, 0.5)
    rows = torch.stack([hm[0, 0], torch.zeros(h, w)])  # [P, H, W] rows of the given pixels
    with pytest.raises(ValueError, match=r"output pixel \(3, 2\) has no mass \(.*\(1 of 2 rows\)"):
        sensitivity_patch_size(rows, 0.5, pixels=torch.tensor([[0, 0], [3, 2]]))
