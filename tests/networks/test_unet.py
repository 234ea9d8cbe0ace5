"""Tests of the DDPM++ UNet (EDM's SongUNet structure) and the noise embeddings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_pspc.diffusion import EDMLoss, EDMPrecond
from lightning_pspc.networks import PositionalEmbedding, UNet


def tiny_unet(**kw) -> UNet:
    cfg = dict(
        img_resolution=8,
        in_channels=1,
        model_channels=16,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
        dropout=0.0,
    )
    cfg.update(kw)
    return UNet(**cfg)


def wake(net: UNet) -> UNet:
    """Re-initialise EDM's near-zero layers so every path has an O(1) effect on the output."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d) and name.rsplit(".", 1)[-1] in (
                "conv1",
                "proj",
                "out_conv",
            ):
                nn.init.xavier_uniform_(m.weight)
    return net


@pytest.mark.parametrize(
    "res,cin,cout,mult,attn",
    [
        (28, 1, None, (1, 2), (14,)),  # Fashion-MNIST: 28 -> 14
        (32, 3, None, (1, 2, 2), (16,)),  # CIFAR-10: 32 -> 16 -> 8
        (8, 1, None, (1, 2), (4,)),  # sklearn digits
        (8, 2, 5, (1,), ()),  # one level, other channel counts
    ],
)
def test_output_shape(res: int, cin: int, cout: int | None, mult: tuple, attn: tuple) -> None:
    net = tiny_unet(
        img_resolution=res,
        in_channels=cin,
        out_channels=cout,
        channel_mult=mult,
        attn_resolutions=attn,
    )
    y = net(torch.randn(2, cin, res, res), torch.tensor([-1.0, 0.5]))
    assert y.shape == (2, cout or cin, res, res)
    assert torch.isfinite(y).all()


def test_28_works_with_three_levels_and_fails_with_four() -> None:
    tiny_unet(img_resolution=28, channel_mult=(1, 2, 2), attn_resolutions=(7,))  # 28 -> 14 -> 7
    with pytest.raises(ValueError, match=r"resolution 28 is not divisible by 8 \(4 levels"):
        tiny_unet(img_resolution=28, channel_mult=(1, 2, 2, 2))


def test_bad_config_errors() -> None:
    with pytest.raises(ValueError, match="resolution 30 is not divisible by 4"):
        tiny_unet(img_resolution=30, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"attn_resolutions=\[16\].*\[28, 14\]"):
        UNet(img_resolution=28, in_channels=1, channel_mult=(1, 2), attn_resolutions=(16,))
    with pytest.raises(ValueError, match="num_heads=3"):
        tiny_unet(num_heads=3)


def test_bad_input_errors() -> None:
    net = tiny_unet()
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 8, 8\], got \[2, 1, 16, 16\]"):
        net(torch.randn(2, 1, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="c_noise must have shape"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(3))


def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = tiny_unet(adaptive_scale=True)  # EDM init as is, no wake(): near-zero layers still pass
    x, c = torch.randn(3, 1, 8, 8), torch.tensor([-1.5, 0.0, 1.0])
    (net(x, c) - torch.randn(3, 1, 8, 8)).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_output_depends_on_own_noise_label_only() -> None:
    torch.manual_seed(0)
    net = wake(tiny_unet()).eval()
    x = torch.randn(2, 1, 8, 8)
    y0 = net(x, torch.tensor([-1.0, -1.0]))
    y1 = net(x, torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(y1[0], y0[0])  # sample 0 unaffected by sample 1's label
    assert (y1[1] - y0[1]).abs().mean() > 1e-3 * y0[1].abs().mean()


def test_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    net = wake(tiny_unet()).eval()
    x, c = torch.randn(2, 1, 8, 8), torch.tensor([-1.0, 0.5])
    ref = net(x, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, c)
    assert torch.isfinite(y).all()
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 5e-2, rel


def test_paper_ddpmpp_parameter_count() -> None:
    with torch.device("meta"):  # constructing only; the 56M net is never run
        net = UNet()  # 128 ch, (2, 2, 2), 4 blocks, attention at 16, 32x32x3
        scaled = UNet(adaptive_scale=True)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 55.7e6) / 55.7e6 < 0.05
    assert n == 55_732_739  # EDM's unconditional CIFAR-10 DDPM++ (55.73M with its 10-class label)
    # scale/shift injection doubles every block's affine layer (33 blocks)
    assert sum(p.numel() for p in scaled.parameters()) > n


def test_positional_embedding_frequencies() -> None:
    emb = PositionalEmbedding(8, endpoint=True)
    torch.testing.assert_close(emb.freqs, torch.tensor([1.0, 0.1 ** (4 / 3), 0.1 ** (8 / 3), 1e-4]))
    f = emb(torch.tensor([0.0, 2.0]))
    assert f.shape == (2, 8)
    torch.testing.assert_close(f[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    torch.testing.assert_close(f[1, 0], torch.tensor(math.cos(2.0)))


def test_training_through_edm_precond_reduces_loss() -> None:
    torch.manual_seed(0)
    denoiser = EDMPrecond(tiny_unet(model_channels=8, attn_resolutions=()))
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    noise = torch.randn_like(x)
    loss_fn = EDMLoss()
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(denoiser, x, sigma=sigma, noise=noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
