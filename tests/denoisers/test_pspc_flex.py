import pytest
import torch

from lightning_pspc.denoisers import (
    CIFAR10_TAUS,
    EmpiricalDenoiser,
    PSPCFlexDenoiser,
    masks_from_heatmaps,
)
from lightning_pspc.denoisers.loops.local_loops import fpmc_loop, pspc_flex_loop

from .conftest import reduced_precision
from .local_data import SIGMAS, mixed_probes, smooth_images


def local_heatmaps(h: int, w: int, width: float, seed: int = 0) -> torch.Tensor:
    """``[H, W, H, W]`` heatmaps peaked around each pixel (like a network's) plus noise."""
    g = torch.Generator().manual_seed(seed)
    r, c = torch.arange(h).float(), torch.arange(w).float()
    d2 = (r.view(h, 1, 1, 1) - r.view(1, 1, h, 1)) ** 2 + (
        c.view(1, w, 1, 1) - c.view(1, 1, 1, w)
    ) ** 2
    return torch.exp(-d2 / (2 * width**2)) + 0.05 * torch.rand(h, w, h, w, generator=g)


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
@pytest.mark.parametrize("tau", [0.3, 0.7])
def test_matches_the_definition_loop_at_all_18_edm_sigmas(shape, tau):
    x = smooth_images(30, *shape)
    z, s = mixed_probes(x)
    hm = local_heatmaps(*shape[1:], width=1.5)
    with reduced_precision():
        out = PSPCFlexDenoiser(x, hm, tau, block_size=7)(z, s)
    ref = pspc_flex_loop(z, s, x, masks_from_heatmaps(hm, tau))
    assert (out.double() - ref).abs().max() < 1e-5


def test_schedule_form_picks_heatmap_and_tau_of_the_nearest_grid_sigma():
    x = smooth_images(24, 1, 8)
    z, s = mixed_probes(x)
    hms = torch.stack([local_heatmaps(8, 8, width=0.5 + 0.2 * i, seed=i) for i in range(18)])
    d = PSPCFlexDenoiser(x, heatmaps=hms, sigmas=SIGMAS)  # taus default: CIFAR-10 schedule
    assert d.taus == CIFAR10_TAUS
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(0))
    out = d(z[perm], s[perm] * 1.01)  # off-grid sigmas: nearest grid sigma
    for j, i in enumerate(perm.tolist()):
        ref = pspc_flex_loop(
            z[i : i + 1], s[i : i + 1] * 1.01, x, masks_from_heatmaps(hms[i], CIFAR10_TAUS[i])
        )
        assert (out[j].double() - ref[0]).abs().max() < 1e-5


def test_tau_one_is_the_empirical_denoiser():
    x = smooth_images(30, 2, 6)
    z, s = mixed_probes(x)
    d = PSPCFlexDenoiser(x, local_heatmaps(6, 6, 1.0), 1.0)
    assert d.collection(0).num_elements == 1  # every mask is the whole image: one element
    torch.testing.assert_close(d(z, s), EmpiricalDenoiser(x)(z, s), rtol=0, atol=1e-6)


def test_soft_uses_the_max_normalised_heatmap_as_query_and_response():
    x = smooth_images(24, 1, 6)
    z, s = mixed_probes(x)
    hm = local_heatmaps(6, 6, 1.0)
    q = (hm / hm.flatten(2).amax(-1)[..., None, None]).reshape(36, 1, 6, 6)
    out = PSPCFlexDenoiser(x, hm, soft=True)(z, s)
    assert (out.double() - fpmc_loop(z, s, x, q, q)).abs().max() < 1e-5


def test_mask_rule_of_the_published_code():
    hm = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(2, 2, 2, 2)  # every pixel's heatmap
    # normalised .1 .2 .3 .4, cumulative .1 .3 .6 1: c >= 1 - 0.5 keeps the 3 and the 4
    assert masks_from_heatmaps(hm, 0.5)[0, 0].tolist() == [[False, False], [True, True]]
    assert masks_from_heatmaps(hm, 1.0).all()
    # ties: a stable ascending sort keeps the later pixels
    flat = torch.ones(2, 2, 2, 2)
    assert masks_from_heatmaps(flat, 0.5)[1, 1].tolist() == [[False, True], [True, True]]
    # the largest pixel is always kept
    assert masks_from_heatmaps(hm, 1e-12)[0, 0].tolist() == [[False, False], [False, True]]


def test_bad_heatmaps_and_taus_raise_clear_errors():
    x = smooth_images(4, 1, 6)
    hm = local_heatmaps(6, 6, 1.0)
    with pytest.raises(
        ValueError, match=r"heatmaps must have shape \[H, W, H, W\] = \[6, 6, 6, 6\]"
    ):
        PSPCFlexDenoiser(x, hm[:5], 0.5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        PSPCFlexDenoiser(x, hm - 1, 0.5)
    zero = hm.clone()
    zero[2, 3] = 0
    with pytest.raises(ValueError, match=r"all-zero row at index \[2, 3\]"):
        PSPCFlexDenoiser(x, zero, 0.5)
    for tau in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"tau must be in \(0, 1\]"):
            PSPCFlexDenoiser(x, hm, tau)
    with pytest.raises(ValueError, match="give tau"):
        PSPCFlexDenoiser(x, hm)
    hms = hm.expand(3, -1, -1, -1, -1)
    with pytest.raises(ValueError, match="same length S, got 3, 2 and 3"):
        PSPCFlexDenoiser(x, hms, taus=[0.5, 0.5], sigmas=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"every tau must be in \(0, 1\]"):
        PSPCFlexDenoiser(x, hms, taus=[0.5, 0.0, 1.0], sigmas=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="give taus"):
        PSPCFlexDenoiser(x, hms, sigmas=[1.0, 2.0, 3.0])


def test_every_tau_and_heatmap_error_names_the_layout_and_the_shape_received():
    x = smooth_images(4, 1, 6)
    hm = local_heatmaps(6, 6, 1.0)
    hms = hm.expand(3, -1, -1, -1, -1)
    one, three = r"\(6, 6, 6, 6\)", r"\(3, 6, 6, 6, 6\)"
    cases = [  # (arguments, what the message must hold)
        ((hm,), {"taus": [0.5] * 3, "sigmas": [1.0, 2.0, 3.0]}, rf"\[S, 6, 6, 6, 6\].*shape {one}"),
        ((hm,), {}, rf"give tau.*\[H, W, H, W\].*shape {one}"),
        ((hms, 0.5), {}, rf"takes taus=\[S\], not tau.*shape {three} with tau=0.5"),
        ((hms,), {"sigmas": [1.0, 2.0, 3.0]}, rf"give taus.*shape {three}"),
        ((hms,), {"taus": [0.5, 0.5], "sigmas": [1.0, 2.0, 3.0]}, rf"got 3, 2 and 3.*{three}"),
        ((hm[None, :, :5],), {"taus": [0.5]}, r"\[S, H, W, H, W\].*got \(1, 6, 5, 6, 6\)"),
    ]
    for args, kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            PSPCFlexDenoiser(x, *args, **kwargs)
