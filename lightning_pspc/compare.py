"""Compare the closed-form denoisers on built-in data: ``python -m lightning_pspc.compare``.

Builds the empirical, PSPC-Square and Gaussian denoisers on N Fashion-MNIST training images
(Debian's dataset-fashion-mnist, no hub access), denoises held-out and training images at the 18
EDM sigmas, prints per-sigma MSEs (to the clean image and between denoisers) and writes a PNG
grid in the spirit of figure 1 of Niedoba et al. (noisy | empirical | PSPC | Gaussian | clean).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .data import ImageDataModule
from .denoisers import EmpiricalDenoiser, GaussianDenoiser, PSPCSquareDenoiser
from .diffusion import edm_sigmas


def compare(num_train: int, num_probes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-sigma MSE tables ``[18]`` and the denoised grids, for held-out probes."""
    dm = ImageDataModule(num_train=num_train, num_heldout=num_probes, seed=seed)
    train, held = dm.reference_images(), dm.heldout_images()
    sigmas = edm_sigmas(18).float()
    denoisers = {
        "empirical": EmpiricalDenoiser(train),
        "pspc": PSPCSquareDenoiser(train),
        "gaussian": GaussianDenoiser(train),
    }
    g = torch.Generator().manual_seed(seed)
    clean = held.repeat(18, 1, 1, 1)  # [18 * P, C, H, W], probe-major within each sigma
    sigma = sigmas.repeat_interleave(num_probes)
    z = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g)
    outs, results = {}, {"sigmas": sigmas}
    for name, d in denoisers.items():
        t0 = time.perf_counter()
        outs[name] = d(z, sigma)
        results[f"time/{name}"] = torch.tensor(time.perf_counter() - t0)

    def per_sigma(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).square().flatten(1).mean(1).view(18, num_probes).mean(1)

    for name, out in outs.items():
        results[f"{name} vs clean"] = per_sigma(out, clean)
    results["pspc vs empirical"] = per_sigma(outs["pspc"], outs["empirical"])
    results["gaussian vs empirical"] = per_sigma(outs["gaussian"], outs["empirical"])
    results["pspc vs gaussian"] = per_sigma(outs["pspc"], outs["gaussian"])
    results["grid"] = torch.stack([z, outs["empirical"], outs["pspc"], outs["gaussian"], clean])
    return results


def save_grid(grid: torch.Tensor, num_probes: int, path: Path) -> None:
    """Rows: every third sigma for probe 0; columns: noisy, empirical, PSPC, Gaussian, clean."""
    from torchvision.utils import save_image

    rows = [grid[:, i * num_probes] for i in range(0, 18, 3)]  # each [5, C, H, W]
    save_image(torch.cat(rows).clamp(-1, 1) * 0.5 + 0.5, path, nrow=grid.shape[0], padding=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-train", type=int, default=1000)
    ap.add_argument("--num-probes", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    r = compare(args.num_train, args.num_probes)
    cols = [
        "empirical vs clean",
        "pspc vs clean",
        "gaussian vs clean",
        "pspc vs empirical",
        "gaussian vs empirical",
    ]
    print(
        f"Fashion-MNIST, N={args.num_train} training images, {args.num_probes} held-out probes per sigma"
    )
    print(f"{'sigma':>8} " + " ".join(f"{c:>21}" for c in cols))
    for i, s in enumerate(r["sigmas"].tolist()):
        print(f"{s:>8.3f} " + " ".join(f"{r[c][i].item():>21.5f}" for c in cols))
    times = ", ".join(f"{k[5:]} {v.item():.2f} s" for k, v in r.items() if k.startswith("time/"))
    print(f"denoiser time for {18 * args.num_probes} probes: {times}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(r["grid"], args.num_probes, args.out / "denoisers.png")
    print(f"grid: {args.out / 'denoisers.png'}  (total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
