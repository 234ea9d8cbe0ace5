"""Benchmark of the closed-form denoisers on Fashion-MNIST (prints a table; not a test).

Times EmpiricalDenoiser, GaussianDenoiser and PSPCSquareDenoiser against a per-position loop with
the structure of the published PSPC code (a Python loop over every patch position, each a
streaming posterior mean over 100 training images at a time, float32), and prints speed-ups, the
max abs difference between the two, PSPC's time as a multiple of the empirical denoiser's on the
same batch, and peak memory.

    .venv/bin/python benchmarks/denoisers.py                      # full grid (~6 min on 2 cores)
    .venv/bin/python benchmarks/denoisers.py --sizes 2000 --batches 16 --patch-sizes 3
    .venv/bin/python benchmarks/denoisers.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable

import torch

from lightning_pspc.data import IDXSource
from lightning_pspc.denoisers import EmpiricalDenoiser, GaussianDenoiser, PSPCSquareDenoiser
from lightning_pspc.denoisers.reference import pspc_square_loop


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or sampled resident set size on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self._stop = self._rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.base)


def timed(
    fn: Callable[[], torch.Tensor], device: torch.device, repeats: int
) -> tuple[float, torch.Tensor, int]:
    """Best wall time of ``repeats`` calls (after one warm-up on GPU), output, peak memory."""
    if device.type == "cuda":
        fn()
    best, out = float("inf"), None
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best, out, mem.peak


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--patch-sizes", type=int, nargs="+", default=[3, 7, 15])
    ap.add_argument("--sigma", type=float, default=0.5, help="noise level of the probes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of the fast denoisers")
    ap.add_argument("--loop-repeats", type=int, default=2, help="timed calls of the loop")
    ap.add_argument(
        "--no-loop", action="store_true", help="skip the (slow) published-structure loop"
    )
    ap.add_argument(
        "--methods", nargs="+", default=["auto"], help="PSPC methods: auto fused gemm pixel"
    )
    ap.add_argument("--target", type=float, default=20.0, help="speed-up target to report")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} sigma={args.sigma}"
    )

    data = IDXSource().load().float() / 127.5 - 1  # [60000, 1, 28, 28]
    g = torch.Generator().manual_seed(0)
    held = data[-max(args.batches) :]
    header = (
        f"{'N':>6} {'B':>3} {'denoiser':<14} {'time s':>9} {'loop s':>9} {'speed-up':>9} "
        f"{'x empirical':>11} {'max|diff|':>10} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    speedups: list[tuple[float, str]] = []
    for n in args.sizes:
        train = data[:n].to(device)
        t0 = time.perf_counter()
        gauss = GaussianDenoiser(train)
        t_gauss_fit = time.perf_counter() - t0
        emp = EmpiricalDenoiser(train)
        for b in args.batches:
            clean = held[:b]
            z = (clean + args.sigma * torch.randn(clean.shape, generator=g)).to(device)
            sigma = torch.full((b,), args.sigma, device=device)
            t_emp, out_emp, mem = timed(lambda d=emp, z=z, s=sigma: d(z, s), device, args.repeats)
            print(
                f"{n:>6} {b:>3} {'empirical':<14} {t_emp:>9.4f} {'':>9} {'':>9} {1.0:>11.1f} {'':>10} {mem / 2**20:>8.0f}"
            )
            t_g, _, mem = timed(lambda d=gauss, z=z, s=sigma: d(z, s), device, args.repeats)
            print(
                f"{n:>6} {b:>3} {'gaussian':<14} {t_g:>9.4f} {'':>9} {'':>9} {t_g / t_emp:>11.2f} {'':>10} "
                f"{mem / 2**20:>8.0f}   (fit {t_gauss_fit:.2f} s once)"
            )
            for p in args.patch_sizes:
                loop_t, loop_out = None, None
                if not args.no_loop:
                    loop_t, loop_out, _ = timed(
                        lambda z=z, s=sigma, p=p, x=train: pspc_square_loop(
                            z.float(), s.float(), x.float(), p, chunk=100
                        ),
                        device,
                        args.loop_repeats,
                    )
                for method in args.methods:
                    d = PSPCSquareDenoiser(train, patch_size=p, method=method)
                    t, out, mem = timed(lambda d=d, z=z, s=sigma: d(z, s), device, args.repeats)
                    diff = (
                        (out - loop_out).abs().max().item()
                        if loop_out is not None
                        else float("nan")
                    )
                    name = f"pspc P={p}" + ("" if method == "auto" else f" {method}")
                    loop_s = f"{loop_t:>9.2f}" if loop_t else f"{'-':>9}"
                    speed = f"{loop_t / t:>8.1f}x" if loop_t else f"{'-':>9}"
                    if loop_t:
                        speedups.append((loop_t / t, f"N={n} B={b} P={p} {method}"))
                    print(
                        f"{n:>6} {b:>3} {name:<14} {t:>9.4f} {loop_s} {speed} {t / t_emp:>11.1f} "
                        f"{diff:>10.1e} {mem / 2**20:>8.0f}",
                        flush=True,
                    )
    if speedups:
        worst, where = min(speedups)
        verdict = "meets" if worst >= args.target else "MISSES"
        print(
            f"\nsmallest PSPC speed-up over the published-structure loop: {worst:.1f}x ({where}); "
            f"{verdict} the {args.target:g}x target"
        )


if __name__ == "__main__":
    main()
