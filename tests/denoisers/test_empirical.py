import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import edm_sigmas

from .conftest import empirical_reference, noisy, reduced_precision

SIGMAS = edm_sigmas(18)


def test_one_image_data_set_returns_that_image(fmnist):
    x = fmnist[:1]
    d = EmpiricalDenoiser(x)
    z = noisy(x.expand(18, -1, -1, -1), SIGMAS)
    torch.testing.assert_close(d(z, SIGMAS), x.expand(18, -1, -1, -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["train", "heldout"])
def test_matches_definition_at_all_edm_sigmas(fmnist, source):
    train, held = fmnist[:300], fmnist[300:318]
    clean = train[:18] if source == "train" else held
    z = noisy(clean, SIGMAS, seed=1)
    out = EmpiricalDenoiser(train, chunk_elements=1000)(z, SIGMAS)  # many chunks
    ref = empirical_reference(z, SIGMAS, train)
    assert (out.double() - ref).abs().max() < 1e-5


def test_small_sigma_recovers_the_training_image(fmnist):
    train = fmnist[:300]
    z = noisy(train[5:6], torch.tensor([0.002]))
    out = EmpiricalDenoiser(train)(z, torch.tensor([0.002]))
    torch.testing.assert_close(out, train[5:6], rtol=0, atol=1e-6)


def test_large_sigma_tends_to_the_mean(fmnist):
    train = fmnist[:300]
    z = noisy(train[:4], torch.full((4,), 1e4))
    out = EmpiricalDenoiser(train)(z, torch.full((4,), 1e4))
    assert (out - train.mean(0)).abs().max() < 2e-3


def test_mixed_sigma_batch_equals_per_element_calls(fmnist):
    train = fmnist[:200]
    d = EmpiricalDenoiser(train)
    z = noisy(fmnist[200:218], SIGMAS)
    batch = d(z, SIGMAS)
    single = torch.cat([d(z[i : i + 1], SIGMAS[i : i + 1]) for i in range(18)])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-6)


def test_chunking_does_not_change_the_result(fmnist):
    train = fmnist[:200]
    z = noisy(fmnist[200:209], SIGMAS[::2])
    a = EmpiricalDenoiser(train, chunk_elements=10**8)(z, SIGMAS[::2])
    b = EmpiricalDenoiser(train, chunk_elements=7)(z, SIGMAS[::2])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_exact_under_autocast_and_reduced_matmul_precision(fmnist):
    train = fmnist[:200]
    z = noisy(fmnist[200:218], SIGMAS)
    d = EmpiricalDenoiser(train)
    ref = d(z, SIGMAS)
    with reduced_precision():
        out = d(z, SIGMAS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_scalar_sigma_and_bf16_input(fmnist):
    train = fmnist[:50]
    d = EmpiricalDenoiser(train)
    z = noisy(fmnist[50:54], torch.full((4,), 0.5))
    torch.testing.assert_close(d(z, 0.5), d(z, torch.full((4,), 0.5)))
    assert d(z.bfloat16(), 0.5).dtype == torch.float32


@pytest.mark.parametrize(
    ("z_shape", "match"),
    [
        ((2, 1, 32, 32), r"\[B, 1, 28, 28\]"),
        ((2, 28, 28), r"\[B, 1, 28, 28\]"),
        ((2, 3, 28, 28), "got"),
    ],
)
def test_bad_shapes_raise_clear_errors(fmnist, z_shape, match):
    d = EmpiricalDenoiser(fmnist[:10])
    with pytest.raises(ValueError, match=match):
        d(torch.zeros(z_shape), torch.ones(2))


def test_bad_sigma_and_images_raise(fmnist):
    d = EmpiricalDenoiser(fmnist[:10])
    z = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match="sigma must be a scalar or have shape"):
        d(z, torch.ones(3))
    with pytest.raises(ValueError, match="> 0"):
        d(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        EmpiricalDenoiser(torch.zeros(10, 28, 28))
    with pytest.raises(TypeError, match="float"):
        EmpiricalDenoiser(torch.zeros(10, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_online_softmax_weights_are_never_subnormal(monkeypatch, dtype):
    """Shifted logits from 0 down past the subnormal range (exp(-745) in float64): each weight,
    and its product with a dark pixel's value, is 0 or a normal number (subnormal arithmetic is
    ~100x slower); the far-away ones weigh exp(exp_floor)."""
    from lightning_pspc.denoisers.softmax import OnlineSoftmax, exp_floor

    weights = []
    exp_ = torch.Tensor.exp_
    monkeypatch.setattr(torch.Tensor, "exp_", lambda t: weights.append(exp_(t)) or t)
    logits = -torch.linspace(0, 2000, 4001, dtype=dtype).view(1, -1)
    state = OnlineSoftmax.empty((1,), 1, like=logits)
    state.update(logits, torch.full((4001, 1), 0.004, dtype=dtype))
    monkeypatch.undo()
    p, tiny = weights[-1], torch.finfo(dtype).tiny  # [-1]: the weights (before: the rescale)
    for t in (p, p * 0.004):
        assert bool(((t == 0) | (t >= tiny)).all())
    assert p.min() == torch.tensor(exp_floor(dtype), dtype=dtype).exp()
    torch.testing.assert_close(state.result(), torch.full((1, 1), 0.004, dtype=dtype))
