import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser, EquivariantLocalDenoiser, LocalDenoiser
from lightning_pspc.denoisers.loops.local_loops import els_loop, ls_loop

from ..helpers import run_clean
from .conftest import reduced_precision
from .local_data import SIGMAS, els_source_and_queries, mixed_probes, smooth_images

SIZES = (7, 7, 5, 5, 5, 3, 3, 3, 3, 1, 1, 1, 3, 5, 7, 1, 3, 5)  # 18 sizes, each seen at many sigmas


def per_size_reference(fn, z, s, sizes):
    out = torch.empty(z.shape, dtype=torch.float64)
    for k in set(sizes):
        i = torch.tensor([j for j, p in enumerate(sizes) if p == k])
        out[i] = fn(z[i], s[i], k)
    return out


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
def test_ls_matches_the_definition_loop_at_all_18_edm_sigmas(shape):
    x = smooth_images(30, *shape)
    z, s = mixed_probes(x)
    with reduced_precision():
        out = LocalDenoiser(x, sigmas=SIGMAS, patch_sizes=SIZES, block_size=5)(z, s)
    ref = per_size_reference(lambda a, b, k: ls_loop(a, b, x, k), z, s, SIZES)
    assert (out.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("padding", ["circular", "zeros"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6)])
def test_els_matches_the_definition_loop_at_all_18_edm_sigmas(shape, padding):
    x = smooth_images(20, *shape)
    z, s = mixed_probes(x)
    sizes = tuple(min(k, 5) for k in SIZES)
    with reduced_precision():
        out = EquivariantLocalDenoiser(x, padding=padding, sigmas=SIGMAS, patch_sizes=sizes)(z, s)
    ref = per_size_reference(lambda a, b, k: els_loop(a, b, x, k, padding), z, s, sizes)
    assert (out.double() - ref).abs().max() < 1e-5


def test_ls_with_a_window_covering_the_image_is_the_empirical_denoiser():
    x = smooth_images(30, 2, 6)
    z, s = mixed_probes(x)
    d = LocalDenoiser(x, patch_size=11)  # 2 * 6 - 1: every pixel's window is the whole image
    assert d.collection(11).num_elements == 1
    torch.testing.assert_close(d(z, s), EmpiricalDenoiser(x)(z, s), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,k", [((1, 8, 8), 9), ((2, 6, 6), 7), ((1, 8, 8), 7)])
def test_zero_padded_els_with_k_at_least_the_image_side_is_ls(shape, k):
    """Past the image side every pixel is its own class (ELS computes it as LS then); just
    below it (k = 7 at 8x8) one interior class remains. Both match the definition loop."""
    x = smooth_images(20, *shape)
    z, s = mixed_probes(x)
    els = EquivariantLocalDenoiser(x, patch_size=k, padding="zeros")(z, s)
    with reduced_precision():
        ref = els_loop(z, s, x, k, "zeros")
    assert (els.double() - ref).abs().max() < 1e-5
    if k > shape[1]:
        torch.testing.assert_close(els, LocalDenoiser(x, patch_size=k)(z, s), rtol=0, atol=1e-6)


def test_circular_els_commutes_with_circular_shifts():
    x = smooth_images(20, 2, 6)
    z, s = mixed_probes(x)
    d = EquivariantLocalDenoiser(x, patch_size=3)
    shifted = d(torch.roll(z, (2, -1), (2, 3)), s)
    torch.testing.assert_close(shifted, torch.roll(d(z, s), (2, -1), (2, 3)), rtol=0, atol=1e-6)


def test_bad_patch_sizes_raise_clear_errors():
    x = smooth_images(4, 1, 6)
    for cls in (LocalDenoiser, EquivariantLocalDenoiser):
        for k in (0, 4, -3):
            with pytest.raises(ValueError, match=rf"positive odd integers .*got \[{k}\]"):
                cls(x, patch_size=k)
        with pytest.raises(ValueError, match="same non-zero length, got 2 and 3"):
            cls(x, sigmas=[1.0, 2.0], patch_sizes=[3, 3, 5])
        with pytest.raises(ValueError, match="not both"):
            cls(x, patch_size=3, sigmas=[1.0], patch_sizes=[3])
        with pytest.raises(ValueError, match="give patch_size"):
            cls(x)
    with pytest.raises(ValueError, match="padding must be"):
        EquivariantLocalDenoiser(x, patch_size=3, padding="reflect")
    with pytest.raises(ValueError, match="circular ELS needs patch sizes <= the image side 6"):
        EquivariantLocalDenoiser(x, patch_size=7)


@pytest.mark.parametrize("padding", ["circular", "zeros"])
def test_equal_patches_are_merged_exactly(padding):
    x = smooth_images(12, 1, 8)
    x[:, :, :3] = -1.0  # a black band, as Fashion-MNIST's background: many equal patches
    z, s = mixed_probes(x)
    d = EquivariantLocalDenoiser(x, patch_size=3, padding=padding)
    out = d(z, s)
    assert sum(r.shape[0] for r, _ in d._patch_sets.values()) < 12 * 64
    assert (out.double() - els_loop(z, s, x, 3, padding)).abs().max() < 1e-5


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_els_engines_match_the_definition_loop(engine):
    x = smooth_images(40, 2, 8, seed=5)  # 40 * 36 patches: more than one kernel chunk
    z, s = mixed_probes(x)
    d = EquivariantLocalDenoiser(x, patch_size=3)
    d.engine = engine
    assert (d(z, s).double() - els_loop(z, s, x, 3, "circular")).abs().max() < 1e-5


def test_els_triton_kernel_matches_the_definition_loop():
    """The CUDA engine's Triton kernel, run by Triton's CPU interpreter in a subprocess (the
    interpreter is chosen when ``triton`` is first imported): both paddings and windows wider
    than one feature tile against the definition loop at all 18 EDM sigmas, block sizes and
    patch-set splits alike."""
    pytest.importorskip("triton")
    proc = run_clean(["-m", "tests.denoisers.triton_interpreted"], 600, TRITON_INTERPRET="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checked: circular, zeros, wide windows, splits" in proc.stdout


def test_els_accelerator_step_sizes_give_the_same_centres():
    from lightning_pspc.denoisers.local import ELS_DEVICE_QUERY_ROWS, els_posterior_centres

    rhs, centres, q, inv = els_source_and_queries(smooth_images(30, 1, 8, seed=6))
    small = els_posterior_centres(q, rhs, centres, inv, 2**10)
    big = els_posterior_centres(q, rhs, centres, inv, 2**22, ELS_DEVICE_QUERY_ROWS)
    torch.testing.assert_close(big, small, rtol=0, atol=1e-9)
