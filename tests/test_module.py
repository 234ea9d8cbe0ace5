"""DiffusionModule: EMA rule, lr warm-up, deterministic validation, denoiser contract, sampling."""

from __future__ import annotations

import math

import lightning
import pytest
import torch

from lightning_pspc.diffusion import EDMLoss, EDMPrecond
from lightning_pspc.ema import ema_beta, update_ema
from lightning_pspc.module import DiffusionModule


def _trainer(**kwargs) -> lightning.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return lightning.Trainer(**{**defaults, **kwargs})


def test_ema_beta_halves_weight_every_halflife():
    # 100 steps of 50 images = one half-life of 5000 images: the old average keeps weight 1/2.
    beta = ema_beta(50, images_seen=10**9, halflife_images=5000)
    assert beta**100 == pytest.approx(0.5, rel=1e-12)
    assert beta == pytest.approx(0.5 ** (50 / 5000))
    # Ramp-up caps the half-life at ratio * images seen (EDM): 0.05 * 2000 = 100 images.
    assert ema_beta(50, 2000, 5000, rampup_ratio=0.05) == pytest.approx(0.5 ** (50 / 100))
    assert ema_beta(50, 0, 5000, rampup_ratio=0.05) == 0.0  # first step copies the weights


def test_update_ema_is_the_convex_combination(tiny_net):
    net, ema = tiny_net(), tiny_net()
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, net, beta=0.9)
    for p_ema, p0, p in zip(ema.parameters(), before, net.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * p0 + 0.1 * p)


def test_ema_is_frozen_eval_copy_outside_the_optimizer(tiny_net):
    module = DiffusionModule(tiny_net(dropout=0.5))
    module.train()
    assert module.precond.training and not module.ema.training
    assert not any(p.requires_grad for p in module.ema.parameters())
    optimised = {
        id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]
    }
    assert optimised == {id(p) for p in module.precond.parameters()}
    assert any(k.startswith("ema.") for k in module.state_dict())
    assert isinstance(module.denoiser, torch.nn.Module) and not module.denoiser.training


def test_training_updates_weights_lr_warmup_and_ema(tiny_net, tiny_datamodule):
    torch.manual_seed(0)
    dm = tiny_datamodule(num_train=32, batch_size=8)
    module = DiffusionModule(
        tiny_net(), lr=1e-2, warmup_images=64, ema_halflife_images=1000, ema_rampup_ratio=None
    )
    start = {k: v.clone() for k, v in module.state_dict().items()}
    lrs = []

    class RecordLR(lightning.Callback):  # the rate each optimizer step uses
        def on_train_batch_start(self, trainer, pl_module, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(max_epochs=1, limit_val_batches=0, callbacks=[RecordLR()]).fit(module, dm)
    assert module.images_seen == 32
    # linear warm-up over 64 images, 8 images per step
    assert lrs == pytest.approx([1e-2 * 8 * (i + 1) / 64 for i in range(4)])
    raw = module.precond.net.out.weight
    ema = module.ema.net.out.weight
    w0 = start["precond.net.out.weight"]
    assert not torch.equal(raw, w0)
    # EMA moved towards the trained weights but by far less than they moved (beta close to 1).
    moved_raw, moved_ema = (raw - w0).norm(), (ema - w0).norm()
    assert 0 < moved_ema < 0.1 * moved_raw


def test_val_loss_is_deterministic_and_uses_the_ema(tiny_net, tiny_datamodule):
    dm = tiny_datamodule(num_heldout=16, batch_size=8)
    module = DiffusionModule(tiny_net(), val_sigmas=(0.5, 2.0))
    first = _trainer().validate(module, dm, verbose=False)[0]
    second = _trainer().validate(module, dm, verbose=False)[0]
    assert first["val/loss"] == second["val/loss"]
    assert first["val/loss"] == pytest.approx(
        (first["val/loss_sigma0.5"] + first["val/loss_sigma2"]) / 2, rel=1e-6
    )
    # The logged loss is EDMLoss of the EMA network at the fixed sigma with the module's fixed noise.
    heldout = dm.heldout_images()
    manual = torch.cat(
        [module._shared_step(b, "val", i)[1] for i, b in enumerate(heldout.split(8))]
    )
    assert first["val/loss_sigma2"] == pytest.approx(manual.mean().item(), rel=1e-6)
    # Changing the raw network does not change val/loss; changing the EMA does.
    with torch.no_grad():
        module.precond.net.out.weight.add_(1.0)
    assert _trainer().validate(module, dm, verbose=False)[0]["val/loss"] == first["val/loss"]
    with torch.no_grad():
        module.ema.net.out.weight.add_(1.0)
    assert _trainer().validate(module, dm, verbose=False)[0]["val/loss"] != first["val/loss"]


def test_denoiser_is_the_preconditioned_ema(tiny_net):
    module = DiffusionModule(tiny_net(), sigma_data=0.5)
    with torch.no_grad():
        for p in module.ema.parameters():
            p.normal_()
    z, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 0.5, 2.0, 20.0])
    s = sigma.view(-1, 1, 1, 1)
    expected = 0.25 / (s**2 + 0.25) * z + s * 0.5 / (s**2 + 0.25).sqrt() * module.ema.net(
        z / (s**2 + 0.25).sqrt(), sigma.log() / 4
    )
    torch.testing.assert_close(module.denoiser(z, sigma), expected)
    assert module.denoiser(z, sigma).shape == z.shape


def test_sample_with_zero_network_is_the_gaussian_flow(tiny_net):
    # With F = 0 the denoiser is sd^2/(s^2+sd^2) z: the exact denoiser of x ~ N(0, sd^2 I). Its
    # PF-ODE maps sigma_max * n to n * sigma_max * sd / sqrt(sigma_max^2 + sd^2) (EDM eq. 4).
    module = DiffusionModule(tiny_net(), sigma_data=0.5)
    with torch.no_grad():
        for p in module.ema.parameters():
            p.zero_()
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = module.sample(noise, num_steps=100)  # Heun is 2nd order: 18 steps are 5% off here
    scale = 80 * 0.5 / math.sqrt(80**2 + 0.25)
    torch.testing.assert_close(out, noise * scale, atol=3e-3, rtol=3e-3)
    torch.testing.assert_close(module.sample(noise, num_steps=100), out)  # deterministic


def test_checkpoint_round_trip_restores_ema_and_counter(tiny_net, tiny_datamodule, tmp_path):
    dm = tiny_datamodule()
    module = DiffusionModule(tiny_net())
    trainer = _trainer(limit_val_batches=0)
    trainer.fit(module, dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    fresh = DiffusionModule(tiny_net())
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.on_load_checkpoint(ckpt)
    for a, b in zip(fresh.ema.parameters(), module.ema.parameters()):
        assert torch.equal(a, b)
    assert fresh.images_seen == module.images_seen == 32


def test_bf16_mixed_precision_keeps_the_loss_in_float32(tiny_net, tiny_datamodule):
    seen = []

    class Spy(DiffusionModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen.append((loss.dtype, torch.is_autocast_enabled("cpu")))
            return loss

    module = Spy(tiny_net())
    _trainer(precision="bf16-mixed", limit_train_batches=2, limit_val_batches=1).fit(
        module, tiny_datamodule()
    )
    assert seen == [(torch.float32, True)] * 2
    assert all(p.dtype == torch.float32 for p in module.ema.parameters())
    assert all(torch.isfinite(p).all() for p in module.precond.parameters())


def test_edm_precond_is_used_for_training(tiny_net):
    module = DiffusionModule(tiny_net(), p_mean=0.3, p_std=0.7)
    assert isinstance(module.precond, EDMPrecond) and isinstance(module.loss_fn, EDMLoss)
    assert (module.loss_fn.p_mean, module.loss_fn.p_std) == (0.3, 0.7)


def test_bad_hyperparameters_raise_one_clear_error(tiny_net):
    with pytest.raises(ValueError, match="val_sigmas"):
        DiffusionModule(tiny_net(), val_sigmas=(0.5, -1.0))
    with pytest.raises(ValueError, match="lr=0"):
        DiffusionModule(tiny_net(), lr=0)


def test_augmented_training_conditions_the_network_and_evaluation_does_not(
    tiny_net, tiny_datamodule
):
    from lightning_pspc.diffusion import AugmentPipe

    calls: list[tuple[bool, torch.Tensor | None]] = []

    class Labelled(tiny_net):
        augment_dim = 9

        def forward(self, x, c_noise, augment_labels=None):
            calls.append((self.training, augment_labels))
            return super().forward(x, c_noise)

    module = DiffusionModule(Labelled(), augment=AugmentPipe(p=1.0))
    _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(
        module, tiny_datamodule(num_train=16, batch_size=8)
    )
    train = [labels for training, labels in calls if training]
    evaluation = [labels for training, labels in calls if not training]
    assert len(train) == 2 and len(evaluation) == len(module.val_sigmas)
    assert all(labels.shape == (8, 9) and labels.any() for labels in train)
    assert all(labels is None for labels in evaluation)  # val/loss, denoiser: un-augmented
    assert module.hparams.get("augment") is None  # the pipe lives in config.yaml, not hparams


def test_augment_needs_a_network_built_for_its_labels(tiny_net):
    from lightning_pspc.diffusion import AugmentPipe

    with pytest.raises(ValueError, match=r"augment_dim=9 \(YAML: model.net.init_args"):
        DiffusionModule(tiny_net(), augment=AugmentPipe(p=0.12))
