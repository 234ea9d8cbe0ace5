"""CUDA readiness (marked ``cuda``, skipped without a GPU): every closed-form denoiser strategy on
CUDA equals its CPU result, the small presets fit in ``bf16-mixed``, and the evaluation callbacks
run on the GPU. ``scripts/gpu_check.sh`` runs these on a machine with a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import torch

from lightning_pspc.commands.train import TrainCLI
from lightning_pspc.data import IDXSource
from lightning_pspc.denoisers import (
    EmpiricalDenoiser,
    EquivariantLocalDenoiser,
    GaussianDenoiser,
    LocalDenoiser,
    PSPCFlexDenoiser,
    PSPCSquareDenoiser,
    WienerLocalityDenoiser,
)
from lightning_pspc.diffusion import edm_sigmas
from tests.conftest import REPO

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: name -> factory(images) of every closed-form denoiser and strategy that runs on CUDA
DENOISERS: dict[str, Callable[[torch.Tensor], torch.nn.Module]] = {
    "empirical": EmpiricalDenoiser,
    "gaussian": GaussianDenoiser,
    "pspc_auto": PSPCSquareDenoiser,
    "pspc_gemm_p3": lambda x: PSPCSquareDenoiser(x, patch_size=3, method="gemm"),
    "pspc_pixel_p3": lambda x: PSPCSquareDenoiser(x, patch_size=3, method="pixel"),
    "pspc_gemm_p9": lambda x: PSPCSquareDenoiser(x, patch_size=9, method="gemm"),
    "pspc_pixel_p15": lambda x: PSPCSquareDenoiser(x, patch_size=15, method="pixel"),
    "pspc_chunked": lambda x: PSPCSquareDenoiser(x, patch_size=5, chunk_elements=2**14),
    # the local family on its engine (40 images: the CPU side of ELS is the slow one)
    "pspc_flex": lambda x: PSPCFlexDenoiser(x[:40], _gaussian_heatmaps(x.shape[-1]), 0.5),
    "pspc_flex_soft": lambda x: PSPCFlexDenoiser(
        x[:40], _gaussian_heatmaps(x.shape[-1]), 0.5, soft=True
    ),
    "ls": lambda x: LocalDenoiser(x[:40], patch_size=5),
    "els_circular": lambda x: EquivariantLocalDenoiser(x[:40], patch_size=3),
    "els_zeros": lambda x: EquivariantLocalDenoiser(x[:40], patch_size=5, padding="zeros"),
    # 81 features: the Triton kernel's loop over feature tiles of 64
    "els_wide": lambda x: EquivariantLocalDenoiser(x[:40], patch_size=9, padding="zeros"),
    "wiener": lambda x: WienerLocalityDenoiser(x[:40]),
}


def _gaussian_heatmaps(size: int, width: float = 2.0) -> torch.Tensor:
    """``[H, W, H, W]`` heatmaps falling off around each output pixel (stand-ins for a net's)."""
    r = torch.arange(size, dtype=torch.float64)
    d2 = (r.view(-1, 1, 1, 1) - r.view(1, 1, -1, 1)) ** 2 + (r.view(1, -1, 1, 1) - r) ** 2
    return torch.exp(-d2 / (2 * width**2))


@contextlib.contextmanager
def training_precision():
    """What training on a GPU sets: TF32 matmuls and bf16 autocast."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(scope="module")
def probes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """300 Fashion-MNIST training images, and 36 probes: 2 held-out images at all 18 EDM sigmas."""
    images = IDXSource().load()[:302].float() / 127.5 - 1
    train, held = images[:300], images[300:]
    sigma = edm_sigmas(18).float().repeat(2)  # mixed sigmas in one batch
    clean = held.repeat_interleave(18, 0)
    z = clean + sigma.view(-1, 1, 1, 1) * torch.randn(
        clean.shape, generator=torch.Generator().manual_seed(0)
    )
    return train, z, sigma


@pytest.mark.parametrize("name", list(DENOISERS))
def test_denoiser_on_cuda_equals_cpu(name, probes):
    train, z, sigma = probes
    cpu = DENOISERS[name](train)(z, sigma)
    gpu = DENOISERS[name](train).to("cuda")
    with training_precision():
        out = gpu(z.cuda(), sigma.cuda())
    assert out.dtype == torch.float32 and out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-5)


def _fit_args(tmp_path, preset: str) -> list[str]:
    return [
        "fit",
        f"--config={REPO / 'configs' / preset}",
        f"--run_root={tmp_path}",
        f"--run_name={preset.split('.')[0]}",
        "--trainer.accelerator=gpu",
        "--trainer.precision=bf16-mixed",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.logger=CSVLogger",
        "--trainer.enable_progress_bar=false",
        "--data.num_train=128",
        "--data.num_heldout=16",
        "--data.batch_size=32",  # 4 steps per epoch
    ]


@pytest.mark.parametrize("preset", ["unet_fmnist_small.yaml", "dit_fmnist_small.yaml"])
def test_preset_fits_in_bf16_with_the_evaluation_callbacks(tmp_path, preset):
    # the preset's own callbacks: sample grid, throughput, comparison and memorization monitors
    cli = TrainCLI(args=_fit_args(tmp_path, preset))
    trainer = cli.trainer
    # Lightning moves the module back to the CPU when the fit ends
    assert trainer.strategy.root_device.type == "cuda" and trainer.global_step == 4
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"]) and torch.isfinite(metrics["train/loss_epoch"])
    for key in (
        "compare/pspc/heldout/mid",
        "compare/empirical/reverse/low",
        "memorization/memorized_fraction",
    ):
        assert torch.isfinite(metrics[key]), key
    run = tmp_path / preset.split(".")[0]
    assert (run / "last.ckpt").is_file() and list((run / "plots").glob("*.png"))
