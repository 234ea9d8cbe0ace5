"""EDM augmentation: exact resampling identities, label semantics, statistics, conditioning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision.transforms.functional import gaussian_blur

from lightning_pspc.diffusion import AugmentPipe, EDMLoss, EDMPrecond
from lightning_pspc.diffusion.augment import SYM6, _rotate, _scale, _translate, warp
from lightning_pspc.networks import DiT, UNet


def _digits(n: int = 8, size: int = 24, blur: float = 0.0) -> torch.Tensor:
    """Real images: scikit-learn digits up-sampled to ``size`` (and blurred), about [-1, 1]."""
    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 8 - 1
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return gaussian_blur(x, 9, blur) if blur else x


def test_sym6_filter_is_orthonormal_low_pass():
    h = torch.tensor(SYM6, dtype=torch.float64)
    assert h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(1, 6):
        assert (h[: -2 * shift] * h[2 * shift :]).sum().abs().item() < 1e-11
    assert (h * h).sum().item() == pytest.approx(1.0, abs=1e-11)


def test_identity_warp_returns_the_image():
    x = torch.randn(3, 2, 20, 28)  # white noise: every frequency, non-square
    assert (warp(x, torch.eye(3).expand(3, 3, 3)) - x).abs().max() < 1e-5


def test_integer_translation_shifts_with_reflection():
    x = torch.randn(2, 3, 16, 16)
    zero = torch.zeros(2)
    out = warp(x, _translate(-torch.full((2,), 3.0), zero))  # content moves 3 px right
    expected = F.pad(x, [3, 0, 0, 0], mode="reflect")[..., :16]
    assert (out - expected).abs().max() < 1e-5
    out = warp(x, _translate(zero, torch.full((2,), 2.0)))  # content moves 2 px up
    expected = F.pad(x, [0, 0, 0, 2], mode="reflect")[..., 2:, :]
    assert (out - expected).abs().max() < 1e-5


def test_rotation_matches_rot90_on_smooth_images():
    x = _digits(blur=1.5)
    quarter = warp(x, _rotate(torch.full((x.shape[0],), math.pi / 2)))
    half = warp(x, _rotate(torch.full((x.shape[0],), math.pi)))
    # sym6 is not symmetric: up-sampling with it and down-sampling with it is exact for shifts
    # but leaves about 2 % errors under rotations even on smooth images (so does EDM's pipe).
    for out, k in ((quarter, 1), (half, 2)):
        err = (out - torch.rot90(x, k, (2, 3))).abs()  # images span [-1, 1]
        assert err.max() < 0.05 and err.mean() < 0.02
    assert (quarter - torch.rot90(x, -1, (2, 3))).abs().max() > 0.5  # the sign is pinned


def test_scaling_is_about_the_centre_and_undone_by_its_inverse():
    x = _digits(4, 32, blur=1.5)
    s = torch.full((4,), 1.25)
    there_and_back = warp(warp(x, _scale(1 / s, 1 / s)), _scale(s, s))
    centre = (slice(None), slice(None), slice(10, 22), slice(10, 22))
    assert (there_and_back - x)[centre].abs().max() < 0.05
    # Up-scaling keeps the centre pixel pair in place (even size: the centre is between pixels).
    assert (warp(x, _scale(1 / s, 1 / s)) - x)[..., 15:17, 15:17].abs().max() < 0.1


def test_labels_are_zero_exactly_when_nothing_happens():
    x = _digits(16, 24)
    out, labels = AugmentPipe(p=0.0)(x)
    assert labels.shape == (16, 9) and labels.dtype == torch.float32
    assert torch.equal(out, x) and not labels.any()


def test_flip_labels_say_which_images_were_flipped():
    x = _digits(64, 16)
    pipe = AugmentPipe(p=1.0, xflip=1, yflip=1, scale=0, rotate_frac=0, aniso=0, translate_frac=0)
    assert pipe.label_dim == 2
    out, labels = pipe(x, generator=torch.Generator().manual_seed(0))
    for i in range(64):
        expected = x[i]
        if labels[i, 0]:
            expected = expected.flip(-1)
        if labels[i, 1]:
            expected = expected.flip(-2)
        assert torch.equal(out[i], expected)
    assert 0 < labels.mean(0).min() and labels.mean(0).max() < 1


def test_transformation_rates_follow_p():
    b = 20_000
    _, labels = AugmentPipe(p=0.12)(torch.zeros(b, 1, 8, 8), torch.Generator().manual_seed(1))
    happened = (labels != 0).float().mean(0)
    tol = 4 * math.sqrt(0.12 * 0.88 / b)
    assert happened[0].item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / b))  # x-flip
    assert happened[1].item() == pytest.approx(0.06, abs=tol)  # y-flip: p/2
    for col in (2, 3, 4, 7, 8):  # scale, rotation (cos - 1, sin), translation
        assert happened[col].item() == pytest.approx(0.12, abs=tol)
    # Anisotropy: 0.12; its angle label is non-zero only along rotated axes (probability 1/2).
    assert happened[5].item() == pytest.approx(0.12, abs=tol)
    assert happened[6].item() == pytest.approx(0.06, abs=tol)


def test_label_values_describe_the_transformation():
    b = 4000
    x = torch.zeros(b, 1, 8, 8)
    pipe = AugmentPipe(p=1.0, xflip=0, yflip=0, aniso=0, translate_frac=0)
    _, labels = pipe(x, torch.Generator().manual_seed(2))
    scale, cos_m1, sin = labels.T
    assert scale.std().item() == pytest.approx(1.0, abs=0.06)  # log2 s / scale_std ~ N(0, 1)
    assert torch.allclose((cos_m1 + 1) ** 2 + sin**2, torch.ones(b), atol=1e-5)
    assert cos_m1.min() >= -2.0 and (cos_m1 < -1.9).any()  # angles cover the whole circle


def test_pipe_accepts_bf16_and_keeps_dtype():
    x = _digits(8, 16).bfloat16()
    out, labels = AugmentPipe(p=1.0)(x)
    assert out.dtype == torch.bfloat16 and labels.dtype == torch.float32


@pytest.mark.parametrize("bad", [dict(p=1.5), dict(p=-0.1), dict(scale_std=float("nan"))])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError, match="AugmentPipe"):
        AugmentPipe(**bad)


@pytest.mark.parametrize(
    "net",
    [
        lambda: UNet(
            16,
            1,
            model_channels=16,
            channel_mult=(1, 2),
            num_blocks=1,
            attn_resolutions=(8,),
            augment_dim=9,
        ),
        lambda: DiT(16, 1, patch_size=4, hidden_size=32, depth=2, num_heads=2, augment_dim=9),
    ],
    ids=["unet", "dit"],
)
def test_networks_are_conditioned_on_labels_and_none_means_zero(net):
    torch.manual_seed(0)
    model = net().eval()
    for p in model.parameters():  # both start with a (near-)zero output layer; wake them up
        torch.nn.init.normal_(p, std=0.05)
    x, c = torch.randn(4, 1, 16, 16), torch.randn(4)
    labels = AugmentPipe(p=1.0)(x)[1]
    with torch.no_grad():
        plain = model(x, c)
        assert torch.equal(plain, model(x, c, augment_labels=torch.zeros(4, 9)))
        changed = (model(x, c, augment_labels=labels) - plain).abs().max()
        assert changed > 1e-3 * plain.abs().max()
        embed = model.map_noise if isinstance(model, UNet) else model.t_embedder
        assert (embed(c, labels) - embed(c)).abs().max() > 1e-2
    with pytest.raises(ValueError, match=r"augment_labels must have shape \[B, augment_dim\]"):
        model(x, c, augment_labels=torch.zeros(4, 3))


def test_labels_to_a_network_without_augment_dim_raise():
    net = DiT(16, 1, patch_size=4, hidden_size=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="augment_dim=0"):
        net(torch.randn(2, 1, 16, 16), torch.zeros(2), augment_labels=torch.zeros(2, 9))


def test_loss_passes_labels_through_the_preconditioner():
    seen = {}

    class Recorder(torch.nn.Module):
        augment_dim = 9

        def forward(self, x, c_noise, augment_labels=None):
            seen["labels"] = augment_labels
            return torch.zeros_like(x)

    x = _digits(4, 16)
    x_aug, labels = AugmentPipe(p=1.0)(x)
    EDMLoss()(EDMPrecond(Recorder()), x_aug, augment_labels=labels)
    assert seen["labels"] is labels
    EDMPrecond(Recorder())(x, torch.ones(4))
    assert seen["labels"] is None
