"""Tests of the pixel-space DiT with adaLN-Zero conditioning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_pspc.diffusion import EDMLoss, EDMPrecond
from lightning_pspc.networks import DIT_CONFIGS, DiT, dit_from_name
from lightning_pspc.networks.dit import sincos_pos_embed_2d


def tiny_dit(**kw) -> DiT:
    cfg = dict(img_resolution=8, in_channels=1, patch_size=2, hidden_size=32, depth=2, num_heads=4)
    cfg.update(kw)
    return DiT(**cfg)


def wake(net: DiT) -> DiT:
    """Perturb the zero-initialised adaLN and output layers so every path reaches the output."""
    with torch.no_grad():
        layers = [b.adaLN_modulation[-1] for b in net.blocks]
        layers += [net.final_layer.adaLN_modulation[-1], net.final_layer.linear]
        for layer in layers:
            nn.init.normal_(layer.weight, std=0.1)
            nn.init.normal_(layer.bias, std=0.1)
    return net


@pytest.mark.parametrize(
    "res,cin,cout,patch",
    [(28, 1, None, 4), (28, 1, None, 2), (32, 3, None, 4), (8, 1, None, 2), (8, 2, 3, 8)],
)
def test_output_shape(res: int, cin: int, cout: int | None, patch: int) -> None:
    net = wake(tiny_dit(img_resolution=res, in_channels=cin, out_channels=cout, patch_size=patch))
    y = net(torch.randn(2, cin, res, res), torch.tensor([-1.0, 0.5]))
    assert y.shape == (2, cout or cin, res, res)
    assert torch.isfinite(y).all()


def test_bad_config_errors() -> None:
    with pytest.raises(ValueError, match="resolution 30 is not divisible by patch_size=4"):
        tiny_dit(img_resolution=30, patch_size=4)
    with pytest.raises(ValueError, match="hidden_size=36 is not divisible by num_heads=5"):
        tiny_dit(hidden_size=36, num_heads=5)
    with pytest.raises(ValueError, match="unknown DiT size 'DiT-M/4'"):
        dit_from_name("DiT-M/4")
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 8, 8\], got \[2, 3, 8, 8\]"):
        tiny_dit()(torch.randn(2, 3, 8, 8), torch.zeros(2))


def test_adaln_zero_init_gives_exact_zero_output_and_identity_blocks() -> None:
    torch.manual_seed(0)
    net = tiny_dit(img_resolution=28, patch_size=4)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(net(x, torch.tensor([-1.5, 0.0, 1.0])), torch.zeros_like(x))
    tokens, c = torch.randn(3, 49, 32), torch.randn(3, 32)
    assert torch.equal(net.blocks[0](tokens, c), tokens)  # gates are zero: each block = identity


def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = wake(tiny_dit())
    out = net(torch.randn(3, 1, 8, 8), torch.tensor([-1.5, 0.0, 1.0]))
    (out - torch.randn_like(out)).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_output_depends_on_own_noise_label_only() -> None:
    torch.manual_seed(0)
    net = wake(tiny_dit()).eval()
    x = torch.randn(2, 1, 8, 8)
    y0 = net(x, torch.tensor([-1.0, -1.0]))
    y1 = net(x, torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(y1[0], y0[0])
    # DiT's N(0, 0.02) embedder init makes the effect small but far above float32 rounding
    assert (y1[1] - y0[1]).abs().mean() > 1e-3 * y0[1].abs().mean()


def test_unpatchify_inverts_patchify() -> None:
    net = tiny_dit(img_resolution=8, in_channels=3, patch_size=4)
    x = torch.randn(2, 3, 8, 8)
    # token t = (row, col) of the 2x2 grid holds its 4x4x3 patch in (p, q, C) order
    tokens = x.reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 4, 48)
    assert torch.equal(net.unpatchify(tokens), x)


def test_sincos_position_embedding() -> None:
    pos = sincos_pos_embed_2d(16, 3)  # [9, 16], tokens in row-major order
    assert pos.shape == (9, 16) and pos.abs().max() <= 1
    grid = pos.reshape(3, 3, 16)
    torch.testing.assert_close(grid[1, 0, :8], grid[1, 2, :8])  # first half: row only
    torch.testing.assert_close(grid[0, 1, 8:], grid[2, 1, 8:])  # second half: column only
    assert torch.cdist(pos, pos).add(torch.eye(9)).min() > 0.1  # all tokens distinct
    torch.testing.assert_close(
        grid[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4)
    )


def test_dropout_is_used_in_training_only() -> None:
    torch.manual_seed(0)
    net = wake(tiny_dit(dropout=0.3))
    assert net.blocks[0].attn.attn_drop.p == 0.3
    x, c = torch.randn(2, 1, 8, 8), torch.zeros(2)
    assert not torch.equal(net(x, c), net(x, c))
    net.eval()
    assert torch.equal(net(x, c), net(x, c))


def test_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    net = wake(tiny_dit()).eval()
    x, c = torch.randn(2, 1, 8, 8), torch.tensor([-1.0, 0.5])
    ref = net(x, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, c)
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 5e-2, rel


def test_registry_and_parameter_count() -> None:
    assert DIT_CONFIGS["DiT-B/4"] == dict(hidden_size=768, depth=12, num_heads=12, patch_size=4)
    net = dit_from_name("DiT-S/2", img_resolution=8, in_channels=1, depth=1, dropout=0.12)
    assert (net.patch_size, len(net.blocks), net.blocks[0].mlp.drop1.p) == (2, 1, 0.12)
    with torch.device("meta"):  # constructing only
        big = dit_from_name("DiT-B/4", img_resolution=32, in_channels=3)
    n = sum(p.numel() for p in big.parameters())
    assert abs(n - 130e6) / 130e6 < 0.02, n  # Niedoba et al. table 2 / Peebles & Xie table 1


def test_training_through_edm_precond_reduces_loss() -> None:
    torch.manual_seed(0)
    denoiser = EDMPrecond(tiny_dit(hidden_size=32, depth=1))
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    noise = torch.randn_like(x)
    loss_fn = EDMLoss()
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = loss_fn(denoiser, x, sigma=sigma, noise=noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
