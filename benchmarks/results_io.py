"""What the benchmarks share: their ``--json`` options and the JSON document they write.

Every benchmark prints its figures and writes them as one JSON document (by default
``benchmarks/results/<name>.json``; ``--json PATH`` elsewhere, ``--no-json`` not at all)::

    {"benchmark": name,
     "command": the command line that produced it ("python benchmarks/<name>.py ..."),
     "created": ISO 8601 time (UTC),
     "machine": {"cpu", "cpu_count", "cpu_affinity", "torch_threads", "torch", "numba", "device",
                 and what a benchmark adds},
     "settings": the argparse values (without the output options),
     "cells": [one flat dict per measured cell: "part" (which table of the benchmark it belongs
               to), the cell's coordinates and every figure printed for it, with its unit in the
               key ("..._seconds", "speedup", "ratio_to_empirical", "max_abs_diff", ...)],
     "summary": {"worst": [flat dicts: the worst cells, as the benchmark reports them],
                 "pass": whether every target is met (absent where there is no target),
                 further figures the benchmark computes from the cells}}

Non-finite numbers (a loop that was not timed) are written as ``null``. ``benchmarks/render.py``
turns the documents under ``benchmarks/results/`` into the tables of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

#: The folder of the benchmarks' JSON documents.
RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]

#: The options of :func:`add_json_options`, left out of a document's settings.
OUTPUT_OPTIONS = ("json", "no_json")


def add_json_options(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH`` (default ``benchmarks/results/<name>.json``) and ``--no-json``."""
    default = RESULTS / f"{name}.json"
    parser.add_argument(
        "--json",
        default=str(default),
        metavar="PATH",
        help=f"write the figures as JSON here (default {display_path(default)})",
    )
    parser.add_argument("--no-json", action="store_true", help="write no JSON")


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def command_line(argv: list[str] | None = None) -> str:
    """The command line of this process as a shell would take it, the script's path relative
    to the repository root: ``python benchmarks/denoisers.py --sizes 2000 ...``."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["python", display_path(argv[0]), *argv[1:]])


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` where absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def machine(device: object = "cpu", **extra: object) -> dict:
    """CPU model, cores, library versions and the device (its CUDA name when on CUDA)."""
    import numba
    import torch

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "device": name,
        **extra,
    }


def settings(args: argparse.Namespace) -> dict:
    """The argparse values of a run, without the output options."""
    return {k: v for k, v in vars(args).items() if k not in OUTPUT_OPTIONS}


def finite(value: object) -> object:
    """``value`` with every NaN or infinity (at any depth) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def now() -> str:
    """The current time, ISO 8601 in UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def document(
    name: str, args: argparse.Namespace, machine_info: dict, cells: list[dict], summary: dict
) -> dict:
    """The JSON document of one run (see the module docstring)."""
    return {
        "benchmark": name,
        "command": command_line(),
        "created": now(),
        "machine": machine_info,
        "settings": settings(args),
        "cells": cells,
        "summary": summary,
    }


def write_json(path: str | Path, doc: dict) -> Path:
    """Write ``doc`` to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0o600 would survive the rename
        with os.fdopen(fd, "w") as f:
            json.dump(finite(doc), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(
    name: str, args: argparse.Namespace, machine_info: dict, cells: list[dict], summary: dict
) -> None:
    """Write the run's document where ``--json`` says (nothing with ``--no-json``)."""
    if args.no_json:
        return
    path = write_json(args.json, document(name, args, machine_info, cells, summary))
    print(f"\nfigures written to {display_path(path)}")
