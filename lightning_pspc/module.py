"""LightningModule that trains an EDM denoiser (Karras et al. 2022) and keeps its EMA."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from .diffusion import AugmentPipe, EDMLoss, EDMPrecond, heun_sample
from .ema import ema_beta, make_ema, update_ema
from .runs.checkpoints import add_checksum

DEFAULT_VAL_SIGMAS = (0.02, 0.1, 0.5, 1.0, 2.0, 10.0)


class DiffusionModule(lightning.LightningModule):
    """Trains ``EDMPrecond(net)`` with :class:`EDMLoss`; evaluates and samples its EMA copy.

    Args:
        net: raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]`` (UNet, DiT, ...).
        lr, betas, eps, weight_decay: Adam(W) settings (EDM DDPM++: lr 1e-3; DiT: lr 1e-4).
        warmup_images: linear learning-rate warm-up over this many training images (all ranks).
        ema_halflife_images: EMA half-life in images (EDM: 500k for CIFAR-10).
        ema_rampup_ratio: cap the half-life at this fraction of the images seen (EDM: 0.05);
            ``None`` disables the ramp-up.
        sigma_data, p_mean, p_std: EDM preconditioning and training noise distribution.
        val_sigmas: fixed noise levels of ``val/loss`` (the mean over them, with fixed noise).
        val_seed: seed of the validation noise, so ``val/loss`` is deterministic.
        augment: EDM's non-leaky augmentation of the training batches (e.g.
            ``AugmentPipe(p=0.12)``, EDM and Niedoba et al. on CIFAR-10); the network must be
            built with ``augment_dim = augment.label_dim``. ``None``: no augmentation.

    Gradient clipping is the Trainer's ``gradient_clip_val``. The EMA network (``self.ema``, in
    the state dict) is what ``val/loss``, :attr:`denoiser` and :meth:`sample` use.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_images: int = 0,
        ema_halflife_images: float = 500_000,
        ema_rampup_ratio: float | None = 0.05,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        val_sigmas: Sequence[float] = DEFAULT_VAL_SIGMAS,
        val_seed: int = 0,
        augment: AugmentPipe | None = None,
    ) -> None:
        super().__init__()
        _check(lr > 0, f"lr={lr} must be > 0")
        _check(warmup_images >= 0, f"warmup_images={warmup_images} must be >= 0")
        _check(ema_halflife_images >= 0, f"ema_halflife_images={ema_halflife_images} must be >= 0")
        _check(len(val_sigmas) > 0, "val_sigmas must hold at least one noise level")
        _check(all(s > 0 for s in val_sigmas), f"val_sigmas={list(val_sigmas)} must all be > 0")
        if augment is not None and getattr(net, "augment_dim", None) != augment.label_dim:
            raise ValueError(
                f"DiffusionModule: augment gives {augment.label_dim} labels per image but the "
                f"network has augment_dim={getattr(net, 'augment_dim', None)}; build the network "
                f"with augment_dim={augment.label_dim} (YAML: model.net.init_args.augment_dim: "
                f"{augment.label_dim}) or drop model.augment"
            )
        self.save_hyperparameters(ignore=["net", "augment"])
        self.augment = augment
        self.precond = EDMPrecond(net, sigma_data)
        self.ema = make_ema(self.precond)
        self.loss_fn = EDMLoss(p_mean, p_std, sigma_data)
        self.val_sigmas = tuple(float(s) for s in val_sigmas)
        self.val_loss = MeanMetric()
        self.val_loss_sigma = nn.ModuleList(MeanMetric() for _ in self.val_sigmas)
        self.images_seen = 0  # training images over all ranks; saved in checkpoints
        self._pending_images = 0  # images of the optimizer step in progress
        self._base_seed = 0
        self._epoch_done = False  # all training batches of the current epoch have run
        self._resume_seed_epoch: int | None = None
        #: FLOPs of one training batch, for ``ThroughputMonitor``'s MFU (None: not measured)
        self.flops_per_batch: int | None = None

    # --- the denoiser contract ------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        """EMA network behind the preconditioner: ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]``."""
        return self.ema.eval()

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        """EMA denoiser ``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]``."""
        return self.denoiser(z, sigma)

    @torch.no_grad()
    def sample(self, noise: Tensor, num_steps: int = 18) -> Tensor:
        """Heun PF-ODE samples from unit ``noise [B,C,H,W]`` with the EMA denoiser ->
        ``[B,C,H,W]``."""
        return heun_sample(self.denoiser, noise.to(self.device), num_steps=num_steps)

    def train(self, mode: bool = True) -> DiffusionModule:
        """Switch the trained network's mode; the EMA copy always stays in eval mode."""
        super().train(mode)
        self.ema.eval()
        return self

    # --- steps ----------------------------------------------------------------------------
    def _shared_step(self, batch: Tensor, stage: str, batch_idx: int = 0) -> Tensor:
        """Per-image EDM loss ``[B]`` of clean images ``batch [B,C,H,W]``.

        ``stage="train"``: the trained network at random ``ln sigma ~ N(p_mean, p_std^2)``, on
        the batch augmented by ``augment`` when set.
        Otherwise: the EMA network at every ``val_sigmas`` with noise from a generator seeded
        by ``(val_seed, batch index, rank)``; returns ``[S, B]`` for the ``S`` sigmas.
        """
        if stage == "train":
            labels = None
            if self.augment is not None:
                batch, labels = self.augment(batch)
            return self.loss_fn(self.precond, batch, augment_labels=labels)
        gen = torch.Generator(device=batch.device)
        gen.manual_seed(_mix_seed(self.hparams.val_seed, batch_idx, self.global_rank))
        losses = []
        for s in self.val_sigmas:
            sigma = torch.full((batch.shape[0],), s, device=batch.device)
            noise = torch.randn(batch.shape, generator=gen, device=batch.device, dtype=batch.dtype)
            losses.append(self.loss_fn(self.ema, batch, sigma=sigma, noise=noise))
        return torch.stack(losses)  # [S, B]

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """Mean EDM loss of one batch; logs ``train/loss`` (mean over processes)."""
        n = batch.shape[0]
        self._pending_images += n * self.trainer.world_size
        loss = self._shared_step(batch, "train").mean()
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            sync_dist=True,
            batch_size=n,
            prog_bar=True,
        )
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        """EMA loss at the fixed ``val_sigmas``; logs ``val/loss`` and ``val/loss_sigma<s>``."""
        losses = self._shared_step(batch, "val", batch_idx)  # [S, B]
        self.val_loss.update(losses.flatten())
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        for s, metric, loss in zip(self.val_sigmas, self.val_loss_sigma, losses):
            metric.update(loss)
            self.log(f"val/loss_sigma{s:g}", metric, on_step=False, on_epoch=True)

    # --- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """Adam(W) over the trained network only (the EMA copy is not optimised), with a linear
        learning-rate warm-up over ``warmup_images`` training images (EDM's ``lr_rampup``) as a
        per-step ``LambdaLR``; add ``LearningRateMonitor`` to log the rate."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.precond.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
        )
        per_step = self._images_per_step() if hp.warmup_images > 0 else 1
        warmup = LambdaLR(optimizer, partial(warmup_factor, per_step, hp.warmup_images))
        schedule = {"scheduler": warmup, "interval": "step", "name": "train/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _images_per_step(self) -> int:
        """Training images per optimizer step over all processes (the warm-up counts images)."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not isinstance(batch_size, int):
            raise ValueError(
                "DiffusionModule: the learning-rate warm-up counts images and needs the data "
                "module's batch_size; fit with an ImageDataModule or set warmup_images=0"
            )
        return batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Optimizer step, then the EMA update with ``beta`` from the images of this step."""
        super().optimizer_step(*args, **kwargs)
        step_images, self._pending_images = self._pending_images, 0
        self.images_seen += step_images
        beta = ema_beta(
            step_images,
            self.images_seen,
            self.hparams.ema_halflife_images,
            self.hparams.ema_rampup_ratio,
        )
        update_ema(self.ema, self.precond, beta)

    # --- determinism and checkpoints ------------------------------------------------------
    def on_fit_start(self) -> None:
        """Seed the first epoch of this fit (epoch 0, or the epoch a checkpoint resumes at)."""
        self._base_seed = torch.initial_seed()  # set by seed_everything
        epoch = (
            self._resume_seed_epoch if self._resume_seed_epoch is not None else self.current_epoch
        )
        self._resume_seed_epoch = None
        self._reseed(epoch)
        # The EMA copy is in eval mode on purpose; Lightning would warn about it at every fit.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    def on_train_epoch_start(self) -> None:
        """A new epoch: its batches are not done yet (see :meth:`on_save_checkpoint`)."""
        self._epoch_done = False

    def on_train_batch_end(self, outputs: Any, batch: Tensor, batch_idx: int) -> None:
        """Note when the epoch's last training batch has run."""
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._epoch_done = True

    def on_train_epoch_end(self) -> None:
        """Seed the next epoch now, after validation and before its data iterator exists."""
        self._reseed(self.current_epoch + 1)

    def _reseed(self, epoch: int) -> None:
        """Seed torch/numpy/random from ``(seed, epoch, rank)``.

        Noise levels, noise, dropout, data order and flips of an epoch then depend only on the
        epoch, so a run resumed from an end-of-epoch checkpoint replays exactly what an
        uninterrupted run does. Seeding happens where both runs are about to create the epoch's
        data iterator: at fit start and at the end of the previous epoch.
        """
        seed = _mix_seed(self._base_seed, epoch, self.global_rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG libraries use)
        torch.manual_seed(seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the image counter (lr warm-up, EMA ramp-up), the epoch a resume starts at and
        the SHA-256 of the weights (verified by
        :func:`lightning_pspc.runs.checkpoints.read_checkpoint`)."""
        checkpoint["images_seen"] = self.images_seen
        checkpoint["resume_seed_epoch"] = self.current_epoch + int(self._epoch_done)
        add_checksum(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the image counter and the seed of the epoch the run resumes at."""
        self.images_seen = int(checkpoint.get("images_seen", 0))
        self._resume_seed_epoch = checkpoint.get("resume_seed_epoch")


def warmup_factor(images_per_step: int, warmup_images: int, step: int) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based): ``min(images / warmup, 1)`` with
    the images trained on up to and including that step (assumes full batches)."""
    if warmup_images <= 0:
        return 1.0
    return min((step + 1) * images_per_step / warmup_images, 1.0)


def _mix_seed(*values: int) -> int:
    """A 63-bit seed from non-negative integers (``numpy.random.SeedSequence``; deterministic
    across processes, unlike ``hash``)."""
    entropy = [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"DiffusionModule: {message}.")
