"""Benchmark of the local family and of sensitivity heatmaps on Fashion-MNIST (prints, writes
JSON; not a test).

* PSPC-Flex (FPMC engine; ``--engine torch`` for the torch engine on the CPU too) against the published structure (a Python loop over the 784 anchors,
  one masked posterior mean per anchor, data streamed 100 images at a time, float32 ``cdist``),
  masks from heatmaps of the small UNet at one sigma, for several ``tau``;
* circular ELS against a per-pixel loop taking a float32 ``cdist`` against the whole patch set;
* each also as a multiple of the empirical denoiser's time on the same batch, and as a fraction
  of its arithmetic floor: floor multiply-adds / (the machine's dense float64 GEMM rate measured
  here) / time. Floors: PSPC-Flex ``2 B K N |mask|`` (logits and numerators over each element's
  own mask, ``K`` distinct masks), ELS ``B H W M (C k^2 + C)`` (``M = N (H-k+1)(W-k+1)`` patches);
* sensitivity heatmap seconds per sigma and per probe, full (784 VJPs per probe) and strided,
  for the small UNet and DiT presets.

    .venv/bin/python benchmarks/locality.py --ckpt /tmp/loc_runs/u/last.ckpt   # ~8 min, 2 cores

Without ``--ckpt`` the heatmaps for the masks come from an untrained UNet (said in the output).

The figures go to ``benchmarks/results/locality.json`` (``--json PATH``, ``--no-json``; see
``benchmarks/results_io.py``): parts ``flex`` (one cell per tau, and the soft masks), ``els`` (one
per patch size) and ``heatmaps`` (one per preset); the summary holds the smallest speed-ups, the
largest differences and the GEMM rate of the floors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_pspc.data import IDXSource
from lightning_pspc.denoisers import EmpiricalDenoiser, EquivariantLocalDenoiser, PSPCFlexDenoiser
from lightning_pspc.denoisers.loops.local_loops import els_cdist_loop, pspc_flex_published
from lightning_pspc.denoisers.pspc_flex import masks_from_heatmaps
from lightning_pspc.evaluation.probes import forward_probes
from lightning_pspc.locality import sensitivity_heatmaps
from lightning_pspc.runs import build_from_config, load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


DEVICE = torch.device("cpu")  # set by --device


def probes_at(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``images`` (in a seeded order) noised at ``sigma``: the evaluation's probe source."""
    grid = torch.tensor([sigma], dtype=torch.float64)
    return forward_probes(images, grid, images.shape[0], seed).z


def sync() -> None:
    """Wait for the device (CUDA kernels run asynchronously)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after none: the first call is timed too)."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rate() -> float:
    """Dense float64 multiply-adds per second of this device (best of 3, 1024^3)."""
    a = torch.rand(1024, 1024, dtype=torch.float64, device=DEVICE)
    return 1024**3 / best_time(lambda: a @ a, 3)


def bench_flex(
    args, data: torch.Tensor, held: torch.Tensor, rate: float
) -> tuple[list[dict], dict]:
    """PSPC-Flex against the published structure: one JSON cell per tau (and the soft masks),
    and where the masks came from."""
    if args.ckpt:
        module, _ = load_run(args.ckpt)
        source = f"UNet trained briefly ({args.ckpt})"
    else:
        module, _ = build_from_config(REPO / "configs" / "unet_fmnist_small.yaml")
        source = "untrained UNet (configs/unet_fmnist_small.yaml)"
    net = module.denoiser.eval().to(DEVICE)
    probes = probes_at(held[: args.heatmap_probes], args.sigma, seed=0).to(DEVICE)
    t0 = time.perf_counter()
    hm = sensitivity_heatmaps(net, probes, args.sigma)
    t_hm = time.perf_counter() - t0
    print(
        f"\nPSPC-Flex masks: heatmaps of the {source} at sigma={args.sigma}, "
        f"{args.heatmap_probes} held-out probes ({t_hm:.1f} s)"
    )
    n, b = args.flex_n, args.batch
    x = data[:n].to(DEVICE)
    z = probes_at(held[-b:], args.sigma, seed=1).to(DEVICE)
    sig = torch.full((b,), args.sigma, device=DEVICE)
    emp = EmpiricalDenoiser(x)
    t_emp = best_time(lambda: emp(z, sig), args.repeats)
    print(f"N={n} B={b} sigma={args.sigma}; empirical denoiser {t_emp * 1e3:.1f} ms")
    print(
        f"{'tau':>5} {'|mask|':>7} {'K':>4} {'engine s':>9} {'published s':>12} {'speed-up':>9} "
        f"{'x empirical':>12} {'of floor':>9} {'max|diff|':>10}"
    )
    common = {"N": n, "B": b, "sigma": args.sigma, "empirical_seconds": t_emp}
    masks_info = {
        "flex_masks": f"heatmaps of the {source} at sigma={args.sigma}",
        "flex_masks_heatmap_seconds": t_hm,
    }
    cells = []
    for tau in args.taus:
        d = PSPCFlexDenoiser(x, hm, tau)
        masks = masks_from_heatmaps(hm, tau)
        coll = d.collection(0)
        coll.engine = "torch" if args.engine == "triton" else args.engine  # no Triton FPMC kernel
        size = masks.flatten(2).sum(-1).double().mean().item()
        out = d(z, sig)  # also builds the collection
        t = best_time(lambda d=d: d(z, sig), args.repeats)
        sync()
        t0 = time.perf_counter()
        ref = pspc_flex_published(z, sig, x, masks.to(DEVICE))
        sync()
        t_pub = time.perf_counter() - t0
        floor = 2 * b * coll.num_elements * n * size / rate
        diff = (out - ref).abs().max().item()
        print(
            f"{tau:>5.2f} {size:>7.1f} {coll.num_elements:>4} {t:>9.3f} {t_pub:>12.2f} "
            f"{t_pub / t:>8.1f}x {t / t_emp:>11.1f}x {floor / t:>9.2f} {diff:>10.1e}"
        )
        cells.append(
            {
                "part": "flex",
                "masks": "hard",
                "tau": tau,
                "mask_pixels": size,
                "K": coll.num_elements,
                **common,
                "engine_seconds": t,
                "published_seconds": t_pub,
                "speedup": t_pub / t,
                "ratio_to_empirical": t / t_emp,
                "fraction_of_floor": floor / t,
                "max_abs_diff": diff,
            }
        )
    # the soft relaxation has no published loop: its time against the empirical denoiser's
    d = PSPCFlexDenoiser(x, hm, soft=True)
    d.collection(0).engine = "torch" if args.engine == "triton" else args.engine
    d(z, sig)
    t = best_time(lambda: d(z, sig), args.repeats)
    print(
        f" soft {'all':>7} {d.collection(0).num_elements:>4} {t:>9.3f} {'-':>12} {'-':>9} {t / t_emp:>11.1f}x"
    )
    cells.append(
        {
            "part": "flex",
            "masks": "soft",
            "tau": None,
            "mask_pixels": None,
            "K": d.collection(0).num_elements,
            **common,
            "engine_seconds": t,
            "published_seconds": None,
            "speedup": None,
            "ratio_to_empirical": t / t_emp,
            "fraction_of_floor": None,
            "max_abs_diff": None,
        }
    )
    return cells, masks_info


def bench_els(args, data: torch.Tensor, held: torch.Tensor, rate: float) -> list[dict]:
    """Circular ELS against the per-pixel cdist loop, one JSON cell per patch size."""
    n, b = args.els_n, args.batch
    x = data[:n].to(DEVICE)
    z = probes_at(held[-b:], args.sigma, seed=1).to(DEVICE)
    sig = torch.full((b,), args.sigma, device=DEVICE)
    emp = EmpiricalDenoiser(x)
    t_emp = best_time(lambda: emp(z, sig), args.repeats)
    print(
        f"\nCircular ELS: N={n} B={b} sigma={args.sigma}; empirical {t_emp * 1e3:.2f} ms"
        + (f"; loop timed on {args.els_loop_rows} image rows, scaled" if args.els_loop_rows else "")
    )
    print(
        f"{'k':>3} {'patches':>8} {'engine s':>9} {'cdist loop s':>13} {'speed-up':>9} "
        f"{'x empirical':>12} {'of floor':>9} {'max|diff|':>10}"
    )
    c, h, w = x.shape[1:]
    cells = []
    for k in args.els_sizes:
        d = EquivariantLocalDenoiser(x, patch_size=k)
        d.engine = args.engine
        out = d(z, sig)
        t = best_time(lambda d=d: d(z, sig), args.repeats)
        rows = min(args.els_loop_rows or h, h)
        sync()
        t0 = time.perf_counter()
        ref = els_cdist_loop(z, sig, x, k, rows)
        sync()
        t_loop = (time.perf_counter() - t0) * h / rows  # every row of pixels costs the same
        m = n * (h - k + 1) * (w - k + 1)
        floor = b * h * w * m * (c * k * k + c) / rate
        diff = (out - ref)[:, :, :rows].abs().max().item()
        print(
            f"{k:>3} {m:>8} {t:>9.3f} {t_loop:>13.2f} {t_loop / t:>8.1f}x {t / t_emp:>11.0f}x "
            f"{floor / t:>9.2f} {diff:>10.1e}"
        )
        cells.append(
            {
                "part": "els",
                "k": k,
                "N": n,
                "B": b,
                "sigma": args.sigma,
                "patches": m,
                "empirical_seconds": t_emp,
                "engine_seconds": t,
                "loop_seconds": t_loop,
                "loop_rows": rows,
                "speedup": t_loop / t,
                "ratio_to_empirical": t / t_emp,
                "fraction_of_floor": floor / t,
                "max_abs_diff": diff,
            }
        )
    return cells


def bench_heatmaps(args, held: torch.Tensor) -> list[dict]:
    """Sensitivity heatmap seconds per probe, full and strided, one JSON cell per preset."""
    cells = []
    print("\nSensitivity heatmaps (one sigma; seconds per sigma and per probe)")
    print(f"{'preset':<22} {'params':>8} {'M':>3} {'full s/probe':>13} {'stride-4 s/probe':>17}")
    for name in ("unet_fmnist_small", "dit_fmnist_small"):
        module, _ = build_from_config(REPO / "configs" / f"{name}.yaml")
        net = module.denoiser.eval().to(DEVICE)
        params = sum(p.numel() for p in net.parameters())
        m = args.heatmap_probes
        z = probes_at(held[:m], args.sigma, seed=0).to(DEVICE)
        full = best_time(lambda net=net, z=z: sensitivity_heatmaps(net, z, args.sigma), 1) / m
        strided = best_time(
            lambda net=net, z=z: sensitivity_heatmaps(net, z, args.sigma, stride=4), 2
        )
        print(f"{name:<22} {params / 1e6:>7.2f}M {m:>3} {full:>13.2f} {strided / m:>17.2f}")
        cells.append(
            {
                "part": "heatmaps",
                "preset": name,
                "params_millions": params / 1e6,
                "probes": m,
                "sigma": args.sigma,
                "full_seconds_per_probe": full,
                "stride4_seconds_per_probe": strided / m,
            }
        )
    return cells


def summarize(cells: list[dict], rate: float) -> dict:
    """The smallest speed-up, largest time / empirical and largest difference of each part (the
    benchmark sets no targets)."""
    summary: dict = {"gemm_multiply_adds_per_second": rate, "worst": []}
    for part, what, key in (("flex", "PSPC-Flex", "tau"), ("els", "circular ELS", "k")):
        mine = [c for c in cells if c["part"] == part]
        timed = [c for c in mine if c["speedup"] is not None]
        if not timed:
            continue

        def at(c: dict, key: str = key) -> str:
            return (f"{key}={c[key]:g}" if c[key] is not None else "soft masks") + f" N={c['N']}"

        slow = min(timed, key=lambda c: c["speedup"])
        heavy = max(mine, key=lambda c: c["ratio_to_empirical"])
        off = max(timed, key=lambda c: c["max_abs_diff"])
        summary["worst"] += [
            {"figure": f"{what}: smallest speed-up", "value": slow["speedup"], "at": at(slow)},
            {
                "figure": f"{what}: largest time / empirical",
                "value": heavy["ratio_to_empirical"],
                "at": at(heavy),
            },
            {
                "figure": f"{what}: largest max abs diff",
                "value": off["max_abs_diff"],
                "at": at(off),
            },
        ]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None, help="checkpoint of the UNet whose heatmaps cut masks")
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--flex-n", type=int, default=2000)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--els-n", type=int, default=100)
    ap.add_argument("--els-sizes", type=int, nargs="+", default=[3, 7])
    ap.add_argument(
        "--els-loop-rows",
        type=int,
        default=0,
        help="time the per-pixel loop on the first R image rows and scale by H / R (0: all rows; "
        "the loop takes minutes at N = 2,000)",
    )
    ap.add_argument("--heatmap-probes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["flex", "els", "heatmaps"])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "torch", "fused", "triton"],
        help="auto: the fused numba kernels on the CPU; on CUDA the Triton kernel for ELS and the "
        "torch engine for PSPC-Flex",
    )
    results_io.add_json_options(ap, "locality")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    rate = gemm_rate()
    print(
        f"device={DEVICE} threads={torch.get_num_threads()} torch={torch.__version__}; dense float64 GEMM "
        f"{rate / 1e9:.1f} G multiply-adds/s (the floor's rate)"
    )
    data = IDXSource().load().float() / 127.5 - 1  # [60000, 1, 28, 28]
    held = data[-64:]  # images outside every data set used here
    cells, masks_info = [], {}
    if "flex" not in args.skip:
        flex, masks_info = bench_flex(args, data, held, rate)
        cells += flex
    if "els" not in args.skip:
        cells += bench_els(args, data, held, rate)
    if "heatmaps" not in args.skip:
        cells += bench_heatmaps(args, held)
    machine = results_io.machine(DEVICE)
    summary = {**summarize(cells, rate), **masks_info}
    results_io.save("locality", args, machine, cells, summary)


if __name__ == "__main__":
    main()
