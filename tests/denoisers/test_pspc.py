import pytest
import torch
import torch.nn.functional as F

from lightning_pspc.denoisers import (
    CIFAR10_PATCH_SIZES,
    EmpiricalDenoiser,
    PSPCSquareDenoiser,
    box_sum,
    box_sum_transposed,
    scale_patch_sizes,
)
from lightning_pspc.denoisers.kernels import pspc_cpu, pspc_rows, pspc_values
from lightning_pspc.denoisers.loops.pspc_loops import pspc_square_loop
from lightning_pspc.denoisers.pspc import device_method
from lightning_pspc.diffusion import edm_sigmas

from .conftest import noisy, reduced_precision

SIGMAS = edm_sigmas(18)


@pytest.fixture(scope="module")
def data(fmnist):
    """Training crops and probes (train + held-out) at 16x16 so the definition loop is quick."""
    crop = fmnist[:, :, 6:22, 6:22].contiguous()
    train = crop[:120]
    clean = torch.cat([train[:9], crop[300:309]])  # 9 training + 9 held-out probes
    return train, clean


def loop_reference(d: PSPCSquareDenoiser, z, sigma, train):
    sizes = d.patch_size_for(sigma)
    out = torch.empty_like(z, dtype=torch.float64)
    for p in sizes.unique().tolist():
        i = (sizes == p).nonzero().squeeze(1)
        out[i] = pspc_square_loop(z[i].double(), sigma[i].double(), train.double(), int(p))
    return out


@pytest.mark.parametrize("method", ["auto", "fused", "gemm", "pixel"])
def test_matches_per_position_loop_at_all_18_edm_sigmas(data, method):
    train, clean = data
    # A 16x16 schedule that visits whole-image, large, medium and small patches.
    sizes = (16,) * 5 + (13, 11, 9, 7, 5, 4, 3, 3, 2, 2, 1, 1, 3)
    d = PSPCSquareDenoiser(
        train, sigmas=SIGMAS, patch_sizes=sizes, method=method, chunk_elements=20000
    )
    z = noisy(clean, SIGMAS, seed=3)  # element i at sigma_i: mixed sigmas in one batch
    out = d(z, SIGMAS)
    ref = loop_reference(d, z, SIGMAS, train)
    assert (out.double() - ref).abs().max() < 1e-5


def test_default_fmnist_schedule_matches_loop(fmnist):
    train, probes = fmnist[:60], fmnist[300:303]
    d = PSPCSquareDenoiser(train)
    assert d.patch_sizes == scale_patch_sizes(28)
    sig = SIGMAS[[6, 9, 15]]  # patch sizes 28, 9, 3
    z = noisy(probes, sig)
    assert (d(z, sig).double() - loop_reference(d, z, sig, train)).abs().max() < 1e-5


def test_rgb_matches_loop(rgb_small):
    train = rgb_small[:30]
    z = noisy(rgb_small[30:36], SIGMAS[[0, 4, 8, 11, 14, 17]])
    for p in (3, 5, 12):
        d = PSPCSquareDenoiser(train, patch_size=p)
        sig = SIGMAS[[0, 4, 8, 11, 14, 17]]
        ref = pspc_square_loop(z.double(), sig.double(), train.double(), p)
        assert (d(z, sig).double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("p", [16, 17, 100])
def test_patch_at_least_image_size_is_the_empirical_denoiser(data, p):
    train, clean = data
    z = noisy(clean, SIGMAS)
    out = PSPCSquareDenoiser(train, patch_size=p)(z, SIGMAS)
    torch.testing.assert_close(out, EmpiricalDenoiser(train)(z, SIGMAS), rtol=0, atol=1e-6)


def test_one_image_data_set_returns_that_image(data):
    train, _ = data
    x = train[:1].expand(18, -1, -1, -1)
    for p in (1, 3, 8):
        out = PSPCSquareDenoiser(train[:1], patch_size=p)(noisy(x, SIGMAS), SIGMAS)
        torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_mixed_sigma_batch_equals_per_element_calls(data):
    train, clean = data
    d = PSPCSquareDenoiser(train, sigmas=SIGMAS, patch_sizes=(16,) * 6 + (11, 7, 5) + (3,) * 9)
    z = noisy(clean, SIGMAS)
    single = torch.cat([d(z[i : i + 1], SIGMAS[i : i + 1]) for i in range(18)])
    torch.testing.assert_close(d(z, SIGMAS), single, rtol=0, atol=1e-6)


def test_methods_and_chunk_sizes_agree(data):
    train, clean = data
    z = noisy(clean, SIGMAS)
    outs = [
        PSPCSquareDenoiser(train, patch_size=5, method=m, chunk_elements=c)(z, SIGMAS)
        for m in ("gemm", "pixel")
        for c in (10**8, 3000, 1)
    ]
    outs.append(PSPCSquareDenoiser(train, patch_size=5, method="fused")(z, SIGMAS))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "b, p, faster",
    [(64, 3, "gemm"), (64, 7, "gemm"), (64, 15, "gemm"), (16, 5, "gemm"), (16, 7, "gemm")]
    + [(16, 15, "pixel")],
)
def test_auto_off_the_cpu_takes_the_strategy_measured_faster(b, p, faster):
    # 28 x 28 cells timed with both strategies on an H100 (pspc.GEMM_COST_RATIO)
    assert device_method(b, 1, 28, 28, p, p) == faster


@pytest.fixture(scope="module")
def kernel_case(fmnist):
    """N = 150 training crops (3 blocks of 64, the last padded), 6 probes from sigma = 0.002
    (two of them) to 80, and the float64 definition for P = 1, 3 and 4 (an even patch)."""
    crop = fmnist[:, :, 6:22, 6:22]
    train = crop[:150].contiguous()
    sig = SIGMAS[[17, 17, 15, 12, 8, 0]].double()
    z = noisy(torch.cat([train[:2], crop[300:304]]), sig, seed=5).double()
    refs = {p: pspc_square_loop(z, sig, train.double(), p) for p in (1, 3, 4)}
    return train, z, sig, refs


@pytest.mark.parametrize(
    "path, parts",
    [
        ("rows", None),
        ("one_pass", None),
        ("one_pass_windows", None),
        ("two_pass", 1),
        ("two_pass", 3),
    ],
)
def test_every_fused_kernel_path_matches_the_definition(kernel_case, path, parts):
    """Each path forced explicitly (whatever the thread count), at sigma down to 0.002."""
    train, z, sig, refs = kernel_case
    layout = pspc_cpu.TrainingLayout(train, block=64)
    for p, ref in refs.items():
        total = pspc_cpu.pspc_fused_sum(z, sig, layout, p, p, path=path, parts=parts)
        count = box_sum_transposed(torch.ones(17 - p, 17 - p, dtype=torch.float64), p, p)
        assert (total / count - ref).abs().max() < 1e-5, (path, parts, p)


@pytest.mark.parametrize("ph, pw", [(3, 3), (2, 5)])
def test_rows_path_on_rgb_non_square_windows_and_one_image(rgb_small, ph, pw):
    """The rows path on 3 channels, N = 30 (one chunk, mostly padding lanes), a patch that is
    not square, a batch of one image (its work items are window rows) and any number of window
    rows per item."""
    train = rgb_small[:30].contiguous()
    n, c, h, w = train.shape
    sig = VALUE_SIGMAS
    z = noisy(train[: len(sig)], sig, seed=3).double()
    ref = pspc_square_loop(z, sig, train.double(), ph) if ph == pw else None
    layout = pspc_cpu.TrainingLayout(train)
    count = box_sum_transposed(torch.ones(h - ph + 1, w - pw + 1, dtype=torch.float64), ph, pw)
    rows = pspc_cpu.pspc_fused_sum(z, sig, layout, ph, pw, path="rows") / count
    one_pass = pspc_cpu.pspc_fused_sum(z, sig, layout, ph, pw, path="one_pass") / count
    assert (rows - one_pass).abs().max() < 1e-6
    if ref is not None:
        assert (rows - ref).abs().max() < 1e-5
    single = pspc_cpu.pspc_fused_sum(z[-1:], sig[-1:], layout, ph, pw, path="rows") / count
    assert (single - one_pass[-1:]).abs().max() < 1e-6
    inv2s2 = (0.5 / sig.square()).numpy()
    for band in (1, 3, 20):  # window rows per work item (3: the last item is partial)
        out = pspc_rows.pspc_rows_sum(z.numpy(), inv2s2, layout.lanes, ph, pw, rows_per_item=band)
        assert (torch.from_numpy(out) / count - one_pass).abs().max() < 1e-6, band


@pytest.mark.parametrize("n", [256, 280])
def test_rows_path_flushes_and_padded_last_chunk(fmnist, n):
    """Both passes of the rows path flush their float32 sums every 8 chunks of 32 training
    images: 8 chunks (one flush) and 9 (a padded last chunk after a flush), at small sigma (few
    live windows per chunk: pass 2 sweeps only their columns and rows) and large, against the
    one-pass path."""
    crop = fmnist[:, :, 8:20, 8:20]
    train = crop[:n].contiguous()
    sig = SIGMAS[[17, 12, 6, 0]].double()
    z = noisy(torch.cat([train[:2], crop[-2:]]), sig, seed=7).double()
    layout = pspc_cpu.TrainingLayout(train)
    assert layout.lanes.size // (12 * 12 * pspc_rows.LANES) == -(-n // pspc_rows.LANES)
    for p in (2, 3, 5):
        rows = pspc_cpu.pspc_fused_sum(z, sig, layout, p, p, path="rows")
        one_pass = pspc_cpu.pspc_fused_sum(z, sig, layout, p, p, path="one_pass")
        count = box_sum_transposed(torch.ones(13 - p, 13 - p, dtype=torch.float64), p, p)
        assert (rows / count - one_pass / count).abs().max() < 1e-6, p


@pytest.mark.parametrize("p", [9, 11])
def test_rows_path_on_patches_taller_than_its_bands(fmnist, p):
    """Patches larger than the bands of window rows (each image row covered by window rows of
    several items; the running sum down a column adds and drops rows at both ends), at small and
    large sigma, against the one-pass path."""
    crop = fmnist[:, :, 6:22, 6:22]
    train = crop[:64].contiguous()
    sig = SIGMAS[[17, 12, 6, 0]].double()
    z = noisy(torch.cat([train[:2], crop[-2:]]), sig, seed=9).double()
    layout = pspc_cpu.TrainingLayout(train)
    count = box_sum_transposed(torch.ones(17 - p, 17 - p, dtype=torch.float64), p, p)
    one_pass = pspc_cpu.pspc_fused_sum(z, sig, layout, p, p, path="one_pass") / count
    inv2s2 = (0.5 / sig.square()).numpy()
    for band in (1, 3, 8):
        out = pspc_rows.pspc_rows_sum(z.numpy(), inv2s2, layout.lanes, p, p, rows_per_item=band)
        assert (torch.from_numpy(out) / count - one_pass).abs().max() < 1e-6, band


@pytest.mark.parametrize("rows, band", [(26, 8), (22, 8), (24, 8), (26, 3), (5, 8), (26, 1)])
def test_band_order_splits_rows_evenly_with_sizes_alternating(rows, band):
    order = pspc_rows.band_order(rows, band)
    spans = [pspc_rows._band(rows, len(order), int(k)) for k in order]
    covered = sorted(r for l0, nr in spans for r in range(l0, l0 + nr))
    assert covered == list(range(rows))  # every window row in exactly one band
    sizes = [nr for _, nr in spans]
    assert max(sizes) <= band and max(sizes) - min(sizes) <= 1
    assert len(order) == -(-rows // band)
    halves = [sum(sizes[: len(sizes) // 2]), sum(sizes[len(sizes) - len(sizes) // 2 :])]
    assert abs(halves[0] - halves[1]) <= 1  # two threads' contiguous shares match


def test_rows_per_item_keeps_threads_busy_and_kept_weights_bounded():
    auto = pspc_rows.auto_rows_per_item
    assert auto(64, 26, 2, 2000 * 26, 2**23) == pspc_rows.ROWS_PER_ITEM
    assert auto(1, 26, 2, 2000 * 26, 2**23) == 3  # 8 items of 3 rows (and one of 2)
    assert auto(64, 26, 2, 100_000 * 26, 2**23) == 3  # 3 x 2.6 M kept weights fit, 4 do not
    assert auto(64, 26, 2, 10**6 * 26, 2**23) == 1  # never fewer than one row


def test_auto_kernel_path_choice():
    one = dict(threads=2, nblk=4, nv=512, windows=18 * 18, keep_elements=2**23, row_windows=18)
    assert pspc_cpu.choose_path(8, ph=2, pw=2, **one) == ("rows", 0)
    assert pspc_cpu.choose_path(1, ph=9, pw=9, **one) == ("rows", 0)  # any batch
    # larger patches: rows while an item's training rows fit (2,048 x 18 x 28 values do)
    assert pspc_cpu.choose_path(8, ph=11, pw=11, **one) == ("rows", 0)
    assert pspc_cpu.choose_path(8, ph=11, pw=11, **dict(one, channels=3)) == ("one_pass", 0)
    many = dict(one, nblk=20, windows=14 * 14, row_windows=14)  # N = 10,240, P = 15
    assert pspc_cpu.choose_path(8, ph=15, pw=15, **many) == ("one_pass", 0)
    assert pspc_cpu.choose_path(7, ph=15, pw=15, **many) == ("two_pass", 2)  # too few images
    assert pspc_cpu.choose_path(1, ph=15, pw=15, **dict(many, nblk=4)) == ("rows", 0)
    assert pspc_cpu.choose_path(1, ph=11, pw=11, **dict(one, channels=3)) == ("two_pass", 4)
    big = dict(one, keep_elements=2**10)  # kept weights would not fit
    assert pspc_cpu.choose_path(64, ph=11, pw=11, **big) == ("two_pass", 1)
    assert pspc_cpu.choose_path(64, ph=3, pw=3, **big) == ("two_pass", 1)
    with pytest.raises(ValueError, match="path must be one of"):
        pspc_cpu.pspc_fused_sum(torch.zeros(1, 1, 4, 4), torch.ones(1), None, 2, 2, path="x")


VALUE_SIGMAS = torch.tensor([0.002, 0.03, 0.3, 3.0, 30.0, 80.0], dtype=torch.float64)


def _value_sets(fmnist, rgb_small):
    """Training sets for the P = 1 value path: 8-bit grey crops (many repeated values per
    pixel), continuous grey and RGB noise (every value distinct), RGB with repeated colours."""
    g = torch.Generator().manual_seed(7)
    return {
        "fmnist": fmnist[:150, :, 6:22, 6:22].contiguous(),
        "continuous": torch.rand(80, 1, 9, 7, generator=g) * 2 - 1,
        "rgb": rgb_small[:30],
        "rgb_repeats": (rgb_small[:30] * 2).round() / 2,
    }


@pytest.mark.parametrize("kind", ["fmnist", "continuous", "rgb", "rgb_repeats"])
def test_value_path_matches_the_definition(fmnist, rgb_small, kind):
    """P = 1 through the table of distinct values: one mixed-sigma batch and one batch per
    sigma, from 0.002 to 80, against the float64 per-position loop."""
    train = _value_sets(fmnist, rgb_small)[kind]
    n, c, h, w = train.shape
    table = pspc_values.value_table(train)
    distinct = int(table.offsets[-1])
    assert table.values.shape == (c, distinct) and table.counts.sum() == n * h * w
    repeats = kind in ("fmnist", "rgb_repeats")
    assert distinct < 0.8 * n * h * w if repeats else distinct == n * h * w
    k = len(VALUE_SIGMAS)
    z = noisy(train[:k], VALUE_SIGMAS, seed=11).double()  # near training images: sharp weights
    ref = pspc_square_loop(z, VALUE_SIGMAS, train.double(), 1)
    out = pspc_values.pspc_values_posterior_mean(z, VALUE_SIGMAS, table)
    assert (out - ref).abs().max() < 1e-5
    for i, s in enumerate(VALUE_SIGMAS.tolist()):
        sig = torch.full((4,), s, dtype=torch.float64)
        zi = noisy(train[-4:], sig, seed=20 + i).double()
        ref = pspc_square_loop(zi, sig, train.double(), 1)
        assert (pspc_values.pspc_values_posterior_mean(zi, sig, table) - ref).abs().max() < 1e-5


def test_value_path_rejects_a_table_of_another_shape(fmnist):
    table = pspc_values.value_table(fmnist[:10, :, :8, :8])
    with pytest.raises(ValueError, match="value_table"):
        pspc_values.pspc_values_posterior_mean(
            torch.zeros(1, 1, 9, 8, dtype=torch.float64), torch.ones(1, dtype=torch.float64), table
        )


@pytest.mark.parametrize("method", ["auto", "fused"])
def test_schedule_mixing_p1_and_p3_in_one_batch_uses_the_value_path(data, method):
    """Small sigmas at P = 1 (value table), the rest at P = 3 (fused kernel), one batch."""
    train, clean = data
    d = PSPCSquareDenoiser(
        train, sigmas=VALUE_SIGMAS, patch_sizes=(1, 1, 3, 3, 1, 3), method=method
    )
    sig = VALUE_SIGMAS[[0, 1, 2, 3, 4, 5, 0, 2, 4, 1]]
    z = noisy(clean[: len(sig)], sig, seed=2)
    out = d(z, sig)
    assert set(d._layouts) == {"values", "kernel"}
    assert (out.double() - loop_reference(d, z, sig, train)).abs().max() < 1e-5


def test_fused_kernel_sees_in_place_changes_of_the_training_set(data):
    train, clean = data
    train = train.clone()
    d = PSPCSquareDenoiser(train, patch_size=3, method="fused")
    z, sig = noisy(clean[:4], SIGMAS[:4]), SIGMAS[:4]
    d(z, sig)
    before = d.images.clone()
    d.images.mul_(-1)  # the cached kernel layout must be rebuilt
    ref = pspc_square_loop(z.double(), sig.double(), -before.double(), 3)
    assert (d(z, sig).double() - ref).abs().max() < 1e-5


def test_exact_under_autocast_and_reduced_matmul_precision(data):
    train, clean = data
    z = noisy(clean, SIGMAS)
    d = PSPCSquareDenoiser(train, patch_size=3)
    ref = d(z, SIGMAS)
    with reduced_precision():
        out = d(z, SIGMAS)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_nearest_grid_sigma_picks_the_patch_size():
    d = PSPCSquareDenoiser(torch.zeros(2, 3, 32, 32))
    assert d.patch_sizes == CIFAR10_PATCH_SIZES
    sizes = d.patch_size_for(torch.cat([SIGMAS, torch.tensor([1000.0, 1e-4])]))
    assert sizes.tolist() == list(CIFAR10_PATCH_SIZES) + [32, 3]
    # Between two grid sigmas the nearer one (absolute difference) wins.
    mid = (SIGMAS[8] + SIGMAS[9]) / 2
    assert d.patch_size_for(mid - 1e-3).item() == 11 and d.patch_size_for(mid + 1e-3).item() == 15


def test_patch_size_schedule_presets():
    assert CIFAR10_PATCH_SIZES == (32,) * 7 + (23, 15, 11, 7, 5) + (3,) * 6
    assert scale_patch_sizes(32) == CIFAR10_PATCH_SIZES
    assert scale_patch_sizes(28) == (28,) * 7 + (21, 13, 9, 7, 5) + (3,) * 6
    assert all(p % 2 == 1 or p == 64 for p in scale_patch_sizes(64))


def test_box_sum_and_its_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g, dtype=torch.float64)
    for ph, pw in [(1, 1), (3, 2), (9, 7), (4, 5)]:
        ref = F.avg_pool2d(x, (ph, pw), stride=1, divisor_override=1)
        torch.testing.assert_close(box_sum(x, ph, pw), ref)
        y = torch.rand(ref.shape, generator=g, dtype=torch.float64)
        # <box(x), y> == <x, box^T(y)>
        torch.testing.assert_close(
            (box_sum(x, ph, pw) * y).sum(), (x * box_sum_transposed(y, ph, pw)).sum()
        )


def test_bad_arguments_raise_clear_errors(data):
    train, _ = data
    with pytest.raises(ValueError, match="not both"):
        PSPCSquareDenoiser(train, patch_size=3, sigmas=[1.0], patch_sizes=[3])
    with pytest.raises(ValueError, match="same non-zero length"):
        PSPCSquareDenoiser(train, sigmas=[1.0, 2.0], patch_sizes=[3])
    with pytest.raises(ValueError, match="both sigmas"):
        PSPCSquareDenoiser(train, patch_sizes=[3])
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        PSPCSquareDenoiser(train, patch_size=0)
    with pytest.raises(ValueError, match="method must be"):
        PSPCSquareDenoiser(train, patch_size=3, method="fast")
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 16\]"):
        PSPCSquareDenoiser(train, patch_size=3)(torch.zeros(1, 1, 28, 28), torch.ones(1))
