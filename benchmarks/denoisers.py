"""Benchmark of the closed-form denoisers on Fashion-MNIST (prints tables, writes JSON; not a test).

Grid: PSPCSquareDenoiser (one patch size P) against a per-position loop with the structure of the
published PSPC code (a Python loop over every patch position, each a streaming posterior mean
over 100 training images at a time, float32) for every N x B x P x sigma, and its time as a
multiple of the EmpiricalDenoiser's on the same batch (the two timed in turn, best of
``--repeats`` rounds). Targets: >= 20x the loop and <= 10x the
empirical denoiser in every cell; the cells that miss are listed, then a markdown table.
On CPU PSPC runs the fused kernels (``pspc_rows`` for patches of at most 9 x 9 pixels and for
larger ones on training sets whose rows stay in cache, ``pspc_cpu`` one_pass otherwise, two_pass
for batches too small to keep every thread busy), and for P = 1 the per-pixel table of distinct
training values (``pspc_values``); the kernel layouts and
the value table are built by the untimed warm-up call (value table: 0.09 s at N = 2,000, 0.5 s
at N = 10,000, one core).

The loop is timed once per (N, B, P) at the largest sigma and that time used for every sigma
(``--loop-every-sigma`` times every cell; its work does not depend on sigma, and at the largest
sigma it meets no subnormal numbers, so this is its lowest time), over the first
``--loop-rows`` rows of window positions, scaled by ``rows / timed rows`` (every row of
positions costs the same: as many positions, each a posterior mean over all N crops).
``max|diff|`` (to the float32 loop, where timed) compares the image rows those windows complete.

Workload: one call of the evaluation's own work (``DenoiserComparison``: 8 training + 8
held-out images at each of the 18 EDM sigmas, batches of 64, the default 28x28 patch schedule)
through PSPCSquareDenoiser, against the same batches through the loop (one call per sigma, as
the published code takes one sigma per call).

    .venv/bin/python benchmarks/denoisers.py                       # grid + workload
    .venv/bin/python benchmarks/denoisers.py --sizes 2000 --batches 16 --patch-sizes 3 \
        --sigmas 0.002 0.5 --no-workload
    .venv/bin/python benchmarks/denoisers.py --device cuda

One core per process (two DDP ranks on a 2-core machine): ``--ranks 2`` runs the grid in two
processes at once, each pinned to its own core with one thread, in lock-step: a barrier before
every timed call, so both time the same cell at the same moment, as ranks evaluating the same
callback do. Each cell reports its worst rank (largest PSPC time / empirical time; ``rank``
column). Without the loop and the workload (the loop's memory traffic would slow the other
rank's PSPC calls, a load that ranks doing the same work do not meet):

    .venv/bin/python benchmarks/denoisers.py --ranks 2 --sizes 2000 10000

Two separate instances started side by side from the shell do not measure this: without the
barrier they drift apart (one times its N = 10,000 cells while the other is still at N = 2,000).

Reading the figures: PSPC and the empirical denoiser are timed in turn within every round, so
their ratio is the figure to compare between runs. Absolute times move with the load on the
cores and, on shared or virtual machines, with the host, by up to 1.5x between runs and between
cores; compare times within one run.

The figures go to ``benchmarks/results/denoisers.json`` (``--json PATH``, ``--no-json``; see
``benchmarks/results_io.py``): a cell per grid cell (part ``grid``) and per workload training-set
size (part ``workload``); the summary holds the worst cells per (N, B), the overall worst
figures and whether every cell meets the targets.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numba
import torch

from lightning_pspc.data import IDXSource
from lightning_pspc.denoisers import EmpiricalDenoiser, PSPCSquareDenoiser
from lightning_pspc.denoisers.kernels import numba_target
from lightning_pspc.denoisers.loops.pspc_loops import pspc_square_loop
from lightning_pspc.diffusion import edm_sigmas
from lightning_pspc.evaluation.batching import denoise_batched
from lightning_pspc.evaluation.probes import forward_probes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402


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
    """Best wall time of ``repeats`` calls, output, peak memory."""
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


#: torch threads of the loop (0: as the rest); set by ``--loop-threads``.
LOOP_THREADS = 0


def interleaved(
    fns: list[Callable[[], torch.Tensor]], repeats: int, sync: Callable[[], object] | None = None
) -> list[float]:
    """Best wall time of each function over ``repeats`` rounds that call them in turn (the
    functions see the same load on a shared machine); ``sync`` is called before each call
    (``--ranks``: a barrier, so that every rank times the same call at the same moment)."""
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def loop_cell(
    z: torch.Tensor, sigma: torch.Tensor, train: torch.Tensor, p: int, rows: int, repeats: int
) -> tuple[float, torch.Tensor, int]:
    """Loop time over the first ``rows`` rows of window positions scaled to all of them, its
    output and the number of image rows it completes."""
    lh = z.shape[-2] - min(p, z.shape[-2]) + 1
    rows = max(1, min(lh, rows))
    threads = torch.get_num_threads()
    torch.set_num_threads(LOOP_THREADS or threads)
    try:
        t, out, _ = timed(
            lambda: pspc_square_loop(z.float(), sigma.float(), train.float(), p, 100, rows),
            z.device,
            repeats,
        )
    finally:
        torch.set_num_threads(threads)
    return t * lh / rows, out, (z.shape[-2] if rows == lh else rows)


def grid(
    args: argparse.Namespace,
    data: torch.Tensor,
    device: torch.device,
    sync: Callable[[], object] | None = None,
    emit: Callable[..., None] = print,
) -> list[dict]:
    """Times every N x B x P x sigma cell; prints one line per cell (``emit``)."""
    g = torch.Generator().manual_seed(0)
    held = data[-max(args.batches) :]
    emit(table_header())
    cells, loop_times = [], {}
    for n in args.sizes:
        train = data[:n].to(device)
        emp = EmpiricalDenoiser(train)
        pspc = {
            p: PSPCSquareDenoiser(train, patch_size=p, method=args.method) for p in args.patch_sizes
        }
        for b in args.batches:
            for s in sorted(args.sigmas, reverse=True):
                clean = held[:b]
                z = (clean + s * torch.randn(clean.shape, generator=g)).to(device)
                sigma = torch.full((b,), s, device=device)
                emp(z, sigma)  # warm-up
                for p in args.patch_sizes:
                    d = pspc[p]
                    out = d(z, sigma)  # warm-up (kernel layout, compilation)
                    t, t_emp = interleaved(
                        [lambda d=d, z=z, s=sigma: d(z, s), lambda e=emp, z=z, s=sigma: e(z, s)],
                        args.repeats,
                        sync,
                    )
                    loop_t, diff = math.nan, math.nan
                    key = (n, b, p)
                    if not args.no_loop and (args.loop_every_sigma or key not in loop_times):
                        loop_t, ref, rows = loop_cell(
                            z, sigma, train, p, args.loop_rows, args.loop_repeats
                        )
                        diff = (out[..., :rows, :] - ref[..., :rows, :]).abs().max().item()
                        loop_times[key] = loop_t
                    loop_t = loop_times.get(key, math.nan)
                    cell = dict(n=n, b=b, p=p, sigma=s, t=t, loop=loop_t, emp=t_emp, diff=diff)
                    cells.append(cell)
                    emit(cell_line(cell), flush=True)
    return cells


def table_header(ranked: bool = False) -> str:
    """The header of the grid's table (and its rule) for :func:`cell_line`."""
    header = (
        f"{'N':>6} {'B':>3} {'P':>3} {'sigma':>6} {'pspc s':>8} {'loop s':>8} {'speed-up':>9} "
        f"{'emp s':>7} {'x emp':>6} {'max|diff|':>9}" + (f" {'rank':>4}" if ranked else "")
    )
    return header + "\n" + "-" * len(header)


def cell_line(c: dict) -> str:
    """One cell of the grid as a line of its table."""
    return (
        f"{c['n']:>6} {c['b']:>3} {c['p']:>3} {c['sigma']:>6g} {c['t']:>8.4f} {c['loop']:>8.2f} "
        f"{c['loop'] / c['t']:>8.1f}x {c['emp']:>7.4f} {c['t'] / c['emp']:>6.1f} {c['diff']:>9.1e}"
        + (f" {c['rank']:>4}" if "rank" in c else "")
    )


def rank_worker(
    rank: int, core: int, args: argparse.Namespace, barrier: object, results: object
) -> None:
    """One ``--ranks`` process: pinned to ``core``, one thread, the grid in lock-step with the
    other ranks (a barrier before every timed call); its cells go to ``results``."""
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    data = IDXSource().load().float() / 127.5 - 1
    try:
        cells = grid(args, data, torch.device("cpu"), barrier.wait, emit=lambda *a, **k: None)
    except BaseException:
        barrier.abort()  # the other ranks stop waiting
        raise
    results.put((rank, cells))


def ranks_grid(args: argparse.Namespace) -> list[dict]:
    """The grid timed by ``args.ranks`` processes at once (see the module docstring); each cell
    is the rank with the largest PSPC time / empirical time (its number in the last column)."""
    cores = sorted(os.sched_getaffinity(0))
    if args.ranks > len(cores):
        print(f"warning: {args.ranks} ranks share {len(cores)} cores")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(args.ranks), ctx.Queue()
    procs = [
        ctx.Process(
            target=rank_worker, args=(r, cores[r % len(cores)], args, barrier, results), daemon=True
        )
        for r in range(args.ranks)
    ]
    for proc in procs:
        proc.start()
    per_rank = {}
    while len(per_rank) < args.ranks:
        try:
            rank, cells = results.get(timeout=5)
            per_rank[rank] = cells
        except queue.Empty:
            if any(proc.exitcode not in (None, 0) for proc in procs):
                for proc in procs:
                    proc.kill()
                raise SystemExit("a rank failed (its traceback is above)") from None
    for proc in procs:
        proc.join()
    print(table_header(ranked=True))
    merged = []
    for same in zip(*(per_rank[r] for r in range(args.ranks))):
        worst = max(range(args.ranks), key=lambda r: same[r]["t"] / same[r]["emp"])
        merged.append(dict(same[worst], rank=worst))
        print(cell_line(merged[-1]))
    return merged


def cell_name(c: dict) -> str:
    """A grid cell's coordinates, as the summary names it."""
    return f"N={c['n']} B={c['b']} P={c['p']} sigma={c['sigma']:g}"


def json_cell(c: dict) -> dict:
    """A grid cell as written to the JSON document (explicit keys, units in the names)."""
    out = {
        "part": "grid",
        "N": c["n"],
        "B": c["b"],
        "P": c["p"],
        "sigma": c["sigma"],
        "pspc_seconds": c["t"],
        "empirical_seconds": c["emp"],
        "loop_seconds": c["loop"],
        "speedup": c["loop"] / c["t"],
        "ratio_to_empirical": c["t"] / c["emp"],
        "max_abs_diff": c["diff"],
    }
    if "rank" in c:
        out["rank"] = c["rank"]
    return out


def summarize(cells: list[dict], args: argparse.Namespace) -> dict:
    """Prints the worst cells, the cells that miss a target and a markdown table (rows N, B,
    sigma); returns them as the JSON document's summary."""
    name = cell_name
    misses = [
        c for c in cells if c["loop"] / c["t"] < args.target or c["t"] / c["emp"] > args.emp_target
    ]
    summary: dict = {
        "speedup_target": args.target,
        "ratio_to_empirical_target": args.emp_target,
    }
    timed_loop = [c for c in cells if math.isfinite(c["loop"])]
    if timed_loop:
        worst = min(timed_loop, key=lambda c: c["loop"] / c["t"])
        print(
            f"\nsmallest speed-up over the loop: {worst['loop'] / worst['t']:.1f}x ({name(worst)}: "
            f"{worst['t']:.4f} s vs {worst['loop']:.2f} s); target >= {args.target:g}x"
        )
        diffs = [c["diff"] for c in timed_loop if math.isfinite(c["diff"])]
        print(f"largest max|diff| to the float32 loop: {max(diffs, default=math.nan):.1e}")
        summary.update(
            smallest_speedup=worst["loop"] / worst["t"],
            smallest_speedup_at=name(worst),
            speedup_pass=worst["loop"] / worst["t"] >= args.target,
            largest_max_abs_diff=max(diffs, default=math.nan),
        )
    else:
        summary["speedup_pass"] = None  # the loop was not timed
    worst_emp = max(cells, key=lambda c: c["t"] / c["emp"])
    print(
        f"largest time / empirical: {worst_emp['t'] / worst_emp['emp']:.1f}x ({name(worst_emp)}: "
        f"{worst_emp['t']:.4f} s vs {worst_emp['emp']:.4f} s); target <= {args.emp_target:g}x"
    )
    print("cells missing a target: " + (", ".join(map(name, misses)) if misses else "none"))
    summary.update(
        largest_ratio_to_empirical=worst_emp["t"] / worst_emp["emp"],
        largest_ratio_to_empirical_at=name(worst_emp),
        ratio_to_empirical_pass=worst_emp["t"] / worst_emp["emp"] <= args.emp_target,
        cells_missing_a_target=[name(c) for c in misses],
    )
    summary["pass"] = not misses
    ps = sorted({c["p"] for c in cells})
    print("\ncells: PSPC time, speed-up over the loop, PSPC time / empirical time (e)")
    print("\n| N | B | sigma | " + " | ".join(f"P={p}" for p in ps) + " | empirical |")
    print("|---" * (4 + len(ps)) + "|")
    for key in dict.fromkeys((c["n"], c["b"], c["sigma"]) for c in cells):
        row = {c["p"]: c for c in cells if (c["n"], c["b"], c["sigma"]) == key}
        figs = [
            f"{row[p]['t']:.3f} s, {row[p]['loop'] / row[p]['t']:.0f}x, {row[p]['t'] / row[p]['emp']:.1f}e"
            for p in ps
        ]
        emp_t = sorted(c["emp"] for c in row.values())[len(row) // 2]  # median of the row's
        print(f"| {key[0]:,} | {key[1]} | {key[2]:g} | " + " | ".join(figs) + f" | {emp_t:.3f} s |")
    summary["worst"] = [worst_of_group(group, args) for group in groups(cells)]
    return summary


def groups(cells: list[dict]) -> list[list[dict]]:
    """The grid's cells grouped by (N, B), in the grid's order."""
    keys = dict.fromkeys((c["n"], c["b"]) for c in cells)
    return [[c for c in cells if (c["n"], c["b"]) == key] for key in keys]


def worst_of_group(cells: list[dict], args: argparse.Namespace) -> dict:
    """The worst cells of one (N, B): smallest speed-up, largest time / empirical, misses."""
    at = lambda c: f"P={c['p']} sigma={c['sigma']:g}"  # noqa: E731
    row: dict = {"N": cells[0]["n"], "B": cells[0]["b"]}
    timed_loop = [c for c in cells if math.isfinite(c["loop"])]
    if timed_loop:
        worst = min(timed_loop, key=lambda c: c["loop"] / c["t"])
        row.update(smallest_speedup=worst["loop"] / worst["t"], smallest_speedup_at=at(worst))
    worst = max(cells, key=lambda c: c["t"] / c["emp"])
    row.update(
        largest_ratio_to_empirical=worst["t"] / worst["emp"],
        largest_ratio_to_empirical_at=at(worst),
        pspc_seconds=worst["t"],
        empirical_seconds=worst["emp"],
    )
    if "rank" in worst:
        row["rank"] = worst["rank"]
    row["cells_missing"] = sum(
        c["loop"] / c["t"] < args.target or c["t"] / c["emp"] > args.emp_target for c in cells
    )
    return row


def workload(args: argparse.Namespace, data: torch.Tensor, device: torch.device) -> list[dict]:
    """One DenoiserComparison evaluation's forward probes through PSPC and through the loop;
    one JSON cell per training-set size."""
    sigmas = edm_sigmas(18)
    pool, held = data[: min(args.workload_sizes)], data[-1000:]
    probes = [forward_probes(pool, sigmas, 8, seed=0), forward_probes(held, sigmas, 8, seed=1)]
    print(f"\nworkload: {sum(len(q) for q in probes)} probes (8 train + 8 held-out x 18 sigmas)")
    cells = []
    for n in args.workload_sizes:
        train = data[:n].to(device)
        d = PSPCSquareDenoiser(train, method=args.method)  # default 28x28 schedule

        def fast(d=d) -> torch.Tensor:
            return torch.cat([denoise_batched(d, q.z.to(device), q.sigma, 64) for q in probes])

        def loop(d=d, train=train) -> tuple[float, float]:
            seconds, diff = 0.0, 0.0
            for q in probes:
                for start in range(0, len(q), 64):
                    z, s = q.z[start : start + 64].to(device), q.sigma[start : start + 64]
                    out = d(z, s)
                    for value in s.unique().tolist():  # one sigma per call, as published
                        i = (s == value).nonzero().squeeze(1)
                        p = int(d.patch_size_for(s[i[:1]]).item())
                        t, ref, rows = loop_cell(z[i], s[i].to(device), train, p, args.loop_rows, 1)
                        seconds += t
                        diff = max(
                            diff, (out[i, ..., :rows, :] - ref[..., :rows, :]).abs().max().item()
                        )
            return seconds, diff

        fast()  # warm-up
        t, _, _ = timed(fast, device, args.repeats)
        loop_t, diff = loop() if not args.no_loop else (math.nan, math.nan)
        print(
            f"N={n}: PSPCSquareDenoiser {t:.2f} s, loop {loop_t:.1f} s (scaled from "
            f"{args.loop_rows} rows of positions per call), {loop_t / t:.1f}x, max|diff| {diff:.1e} "
            f"(patch sizes {d.patch_sizes})",
            flush=True,
        )
        cells.append(
            {
                "part": "workload",
                "N": n,
                "probes": sum(len(q) for q in probes),
                "pspc_seconds": t,
                "loop_seconds": loop_t,
                "loop_rows": args.loop_rows,
                "speedup": loop_t / t,
                "max_abs_diff": diff,
                "patch_sizes": [int(p) for p in d.patch_sizes],
            }
        )
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--patch-sizes", type=int, nargs="+", default=[1, 3, 5, 7, 15])
    ap.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=[0.002, 0.03, 0.3, 3.0, 30.0],
        help="noise levels",
    )
    ap.add_argument(
        "--workload-sizes", type=int, nargs="+", default=[2000], help="N of the workload"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--method", default="auto", help="PSPC method: auto fused gemm pixel")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of the fast denoisers")
    ap.add_argument("--loop-repeats", type=int, default=1, help="timed calls of the loop per cell")
    ap.add_argument(
        "--loop-rows", type=int, default=2, help="rows of window positions the loop times"
    )
    ap.add_argument(
        "--loop-every-sigma",
        action="store_true",
        help="time the loop at every sigma (default: once per N, B, P at the largest sigma)",
    )
    ap.add_argument(
        "--loop-threads",
        type=int,
        default=0,
        help="torch threads of the loop (0: all); 1 keeps its many small parallel ops from "
        "waiting on descheduled threads when other processes share the cores",
    )
    ap.add_argument("--no-loop", action="store_true", help="skip the published-structure loop")
    ap.add_argument("--no-grid", action="store_true", help="only the workload")
    ap.add_argument("--no-workload", action="store_true", help="only the grid")
    ap.add_argument("--target", type=float, default=20.0, help="speed-up over the loop to reach")
    ap.add_argument("--emp-target", type=float, default=10.0, help="largest time / empirical")
    ap.add_argument(
        "--ranks",
        type=int,
        default=1,
        help="time the grid in this many processes at once, one core and one thread each, in "
        "lock-step (as DDP ranks); CPU only, without the loop and the workload",
    )
    results_io.add_json_options(ap, "denoisers")
    args = ap.parse_args()
    global LOOP_THREADS
    LOOP_THREADS = args.loop_threads
    device = torch.device(args.device)
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"numba 512-bit vectors={numba_target.WIDE_VECTORS}"
    )
    machine = results_io.machine(device, numba_wide_vectors=numba_target.WIDE_VECTORS)
    cells, summary = [], {}
    if args.ranks > 1:
        if device.type != "cpu":
            raise SystemExit(f"--ranks {args.ranks} times CPU processes; --device is {device}")
        args.no_loop = True
        print(f"{args.ranks} ranks, one core and one thread each, in lock-step")
        merged = ranks_grid(args)
        summary = summarize(merged, args)
        cells = [json_cell(c) for c in merged]
    else:
        data = IDXSource().load().float() / 127.5 - 1  # [60000, 1, 28, 28]
        if not args.no_grid:
            found = grid(args, data, device)
            summary = summarize(found, args)
            cells = [json_cell(c) for c in found]
        if not args.no_workload:
            cells += workload(args, data, device)
    results_io.save("denoisers", args, machine, cells, summary)


if __name__ == "__main__":
    main()
