"""Renders the benchmarks' JSON documents (``benchmarks/results/*.json``) into docs/benchmarks.md.

    python benchmarks/render.py            # rewrite the generated part of docs/benchmarks.md
    python benchmarks/render.py --check    # exit 1 if docs/benchmarks.md is out of date

Only the text between ``<!-- BEGIN GENERATED -->`` and ``<!-- END GENERATED -->`` is generated;
the text around the markers is kept (a missing file is created with a short introduction, a file
without the markers gets them appended). One section per document: what the benchmark measures,
the command that produced the document, the machine, a table of the worst cells (the document's
summary), then every cell, one table per part. Every figure comes from the documents; this
script holds only descriptions, column headings and number formats. A document marked
``"transcribed": true`` (figures copied once from an earlier run, such as GPU figures a CPU
machine cannot re-measure) is rendered with a note saying so. The document format is described
in ``benchmarks/results_io.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"

#: What each benchmark measures, one line (keyed by the document's ``benchmark``).
DESCRIPTIONS = {
    "denoisers": "PSPCSquareDenoiser on Fashion-MNIST against a loop with the published PSPC "
    "code's structure and against the empirical denoiser's time on the same batch, for every "
    "N x B x P x sigma, and one DenoiserComparison evaluation's work through both.",
    "locality": "PSPC-Flex and circular ELS against loops with the published structure, against "
    "the empirical denoiser and as a fraction of their arithmetic floor; sensitivity heatmap time "
    "per probe of the small UNet and DiT.",
    "generalization": "Wall and CPU seconds per checkpoint of eval.py's generalization measures "
    "(Generalization, Agreement, twin similarity) at each training-set size.",
    "linear_distillation": "Seconds per sigma of the closed-form linear distillation of the "
    "small presets' networks with 4 x D probes, and of the same fit with a teacher that costs "
    "nothing.",
    "training": "Training throughput of the small presets: Lightning's Trainer.fit of "
    "DiffusionModule against a bare PyTorch loop doing the same work.",
    "callbacks": "Cost of one evaluation of the DenoiserComparison and MemorizationMonitor "
    "callbacks against training time, and the overhead expected for given evaluation periods.",
    "seed_experiments": "The seed papers' measurements on the small UNet and DiT presets trained "
    "on the same 1,024 Fashion-MNIST images: shared errors of the two networks (Niedoba et al., "
    "sec. 3), the UNet's linear distillation against the Gaussian denoiser (Li et al.), "
    "calibrated against scaled PSPC-Square, and sample agreement with calibrated LS / ELS beside "
    "Kamb & Ganguli's published median.",
    "gpu_check": "The steps of scripts/gpu_check.sh on a GPU machine: their status and seconds, "
    "and the counts of the cuda tests.",
    "gpu_h100_transcribed": "Figures on one H100 GPU: the cuda tests, the local family and PSPC-Square on "
    "CUDA, sensitivity heatmaps and the training throughput in bf16.",
}

#: Headings of the per-part tables (keyed by the cells' ``part``).
PARTS = {
    "grid": "Every cell of the grid",
    "workload": "Workload: one DenoiserComparison evaluation's probes",
    "flex": "PSPC-Flex against the published structure",
    "els": "Circular ELS against the per-pixel cdist loop",
    "heatmaps": "Sensitivity heatmaps",
    "cost": "Every timed item",
    "throughput": "Images per second",
    "steps": "Steps",
    "cuda_tests": "cuda tests",
    "pspc_square_auto": "PSPC-Square on CUDA, method auto",
    "pspc_square_forced": "PSPC-Square on CUDA, each strategy forced",
    "linear_distillation": "Seconds per sigma of the closed-form linear distillation of the "
    "small presets' networks with 4 x D probes, and of the same fit with a teacher that costs "
    "nothing.",
    "training": "Training throughput",
    "shared_errors": "Shared errors: UNet against DiT, each against the empirical denoiser",
    "pspc_schedule": "The UNet's MSE to PSPC-Square, scaled CIFAR-10 schedule against the "
    "calibrated one",
    "agreement": "Sample agreement (median Pearson r, 20 Heun steps)",
    "linear_fit": "The UNet's linear distillation: normalised MSE to the Gaussian denoiser of the "
    "distilled map and of the network, and the map's MSE to the network",
}

#: Column headings (keys not listed are shown as they are, underscores as spaces).
LABELS = {
    "pspc_seconds": "PSPC s",
    "empirical_seconds": "empirical s",
    "loop_seconds": "loop s",
    "engine_seconds": "engine s",
    "published_seconds": "published s",
    "speedup": "speed-up",
    "speedup_min": "speed-up, least",
    "speedup_max": "speed-up, most",
    "ratio_to_empirical": "time / empirical",
    "ratio_to_empirical_min": "time / empirical, least",
    "ratio_to_empirical_max": "time / empirical, most",
    "max_abs_diff": "max abs diff",
    "smallest_speedup": "smallest speed-up",
    "smallest_speedup_at": "at",
    "largest_ratio_to_empirical": "largest time / empirical",
    "largest_ratio_to_empirical_at": "at",
    "largest_max_abs_diff": "largest max abs diff",
    "cells_missing": "cells missing a target",
    "cells_missing_a_target": "cells missing a target",
    "mask_pixels": "mean mask pixels",
    "K": "K (distinct masks)",
    "fraction_of_floor": "of floor",
    "patches": "patches",
    "loop_rows": "loop rows timed",
    "params_millions": "params (M)",
    "full_seconds_per_probe": "full s / probe",
    "stride4_seconds_per_probe": "stride-4 s / probe",
    "wall_seconds": "wall s",
    "cpu_seconds": "CPU s",
    "bare_images_per_second": "bare img/s",
    "lightning_images_per_second": "Lightning img/s",
    "ratio": "ratio Lightning / bare",
    "value_percent": "value (%)",
    "seconds_min": "seconds, least",
    "seconds_max": "seconds, most",
    "gemm_multiply_adds_per_second": "dense float64 GEMM rate (multiply-adds/s)",
    "pass": "pass",
    "speedup_target": "speed-up target (at least)",
    "speedup_pass": "speed-up target",
    "ratio_to_empirical_target": "time / empirical target (at most)",
    "ratio_to_empirical_pass": "time / empirical target",
    "ratio_target": "ratio target (at least)",
}

#: Benchmarks in the order of their sections (others follow by file name, transcribed ones last).
ORDER = [
    "denoisers",
    "locality",
    "generalization",
    "linear_distillation",
    "training",
    "callbacks",
    "seed_experiments",
    "gpu_check",
]


def label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


def shown(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def fmt(key: str, value: object) -> str:
    """One value as a table cell; the format follows the unit in the key."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        if key == "pass" or key.endswith("_pass"):
            return "pass" if value else "**miss**"
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(key, v) for v in value) if value else "none"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if "max_abs_diff" in key:
            return f"{value:.1e}"
        if "speedup" in key or "ratio_to_empirical" in key:
            return f"{value:,.0f}x" if abs(value) >= 100 else f"{value:.1f}x"
        if key == "ratio":
            return f"{value:.3f}"
        if "fraction" in key:
            return f"{value:.2f}"
        if "percent" in key:
            return f"{value:.1f}"
        if key in ("sigma", "tau"):
            return f"{value:g}"
        if "per_second" in key:
            return (
                f"{value:.3g}"
                if value >= 1e6
                else f"{value:,.0f}"
                if value >= 100
                else f"{value:.1f}"
            )
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if "seconds" in key:
            return f"{value:.4g}"
        if value and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict], skip: tuple[str, ...] = ("part",)) -> list[str]:
    """A Markdown table of flat dicts: the union of their keys in order of appearance, without
    ``skip`` and without the columns that hold no value in any row."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    if not keys:
        return []
    lines = [
        "| " + " | ".join(label(k) for k in keys) + " |",
        "|" + "---|" * len(keys),
    ]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in keys) + " |" for r in rows]
    return lines


def machine_line(doc: dict) -> str:
    m = dict(doc.get("machine") or {})
    parts = []
    if "cpu" in m:
        cores = f"{m.pop('cpu')}"
        if "cpu_count" in m:
            cores += f", {m.pop('cpu_count')} CPUs"
        if "cpu_affinity" in m:
            cores += f" ({m.pop('cpu_affinity')} usable)"
        if "torch_threads" in m:
            cores += f", {m.pop('torch_threads')} torch threads"
        parts.append(cores)
    if "device" in m:
        parts.append(f"device {m.pop('device')}")
    for lib in ("torch", "numba"):
        if lib in m:
            parts.append(f"{lib} {m.pop(lib)}")
    parts += [f"{label(k)} {fmt(k, v)}" for k, v in m.items()]
    return "; ".join(parts)


def section(path: Path, doc: dict) -> list[str]:
    """The Markdown of one document."""
    name = doc.get("benchmark", path.stem)
    out = [f"## {path.stem}", "", f"Source: `{shown(path)}`."]
    description = DESCRIPTIONS.get(name) or doc.get("description")
    if description:
        out += ["", description]
    if doc.get("transcribed"):
        out += [
            "",
            "> **Transcribed from an earlier run, not re-measured on the current code.** "
            + (doc.get("source") or ""),
        ]
    out += ["", f"Command: `{doc.get('command', '?')}`"]
    commands = doc.get("commands") or {}
    if commands:
        out += ["", "Runs (the `run` column of the tables):", ""]
        out += [f"- `{run}`: `{command}`" for run, command in commands.items()]
    machine = machine_line(doc)
    created = doc.get("created")
    out += ["", "Machine: " + machine + (f"; measured {created}" if created else "") + "."]
    summary = dict(doc.get("summary") or {})
    worst = summary.pop("worst", [])
    if worst:
        out += ["", "### Worst cells", "", *table(worst)]
    if summary:
        out += [""]
        for k, v in summary.items():
            if k.endswith("_at") and k[:-3] in summary:
                continue  # with its figure
            text = fmt(k, v)
            if summary.get(f"{k}_at") is not None:
                text += f" ({fmt(k + '_at', summary[k + '_at'])})"
            if k == "pass":
                text = "yes" if v else "**no**" if v is not None else "-"
            elif v is None and k.endswith("_pass"):
                text = "not measured"
            out.append(f"- {'every target met' if k == 'pass' else label(k)}: {text}")
    cells = doc.get("cells") or []
    for part in dict.fromkeys(c.get("part", "cells") for c in cells):
        rows = [c for c in cells if c.get("part", "cells") == part]
        out += ["", f"### {PARTS.get(part, part)}", "", *table(rows)]
    return out


def order(path: Path, doc: dict) -> tuple:
    name = doc.get("benchmark", path.stem)
    rank = ORDER.index(name) if name in ORDER else len(ORDER)
    return (bool(doc.get("transcribed")), rank, path.name)


def generated(results: Path) -> str:
    """The text between the markers, markers included."""
    docs = [(p, json.loads(p.read_text())) for p in sorted(results.glob("*.json"))]
    docs.sort(key=lambda pd: order(*pd))
    out = [
        BEGIN,
        "<!-- Rendered by benchmarks/render.py from benchmarks/results/*.json; "
        "edit those and rerun it, not this part. -->",
    ]
    if not docs:
        out += ["", f"No results in `{shown(results)}` yet."]
    for path, doc in docs:
        out += ["", *section(path, doc)]
    out += ["", END]
    return "\n".join(out)


INTRO = """# Benchmarks

Each benchmark in `benchmarks/` prints its figures and writes them as a JSON document under
`benchmarks/results/`; `python benchmarks/render.py` renders the documents into the part of
this file between the markers below, and `python benchmarks/render.py --check` fails when it is
out of date.

"""


def render(current: str | None, results: Path) -> str:
    """``current`` (the file's text, or None) with its generated part rendered anew."""
    body = generated(results)
    if current is None:
        return INTRO + body + "\n"
    start, end = current.find(BEGIN), current.find(END)
    if start < 0 or end < start:
        return current.rstrip("\n") + "\n\n" + body + "\n"
    return current[:start] + body + current[end + len(END) :]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON documents")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the Markdown file to render into")
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if the file is out of date, write nothing"
    )
    args = ap.parse_args()
    current = args.docs.read_text() if args.docs.exists() else None
    new = render(current, args.results.resolve())
    if args.check:
        if new != current:
            print(
                f"{shown(args.docs)} is out of date with {shown(args.results)}/*.json: "
                "run python benchmarks/render.py",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"{args.docs} is up to date")
        return
    if new != current:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(new)
        print(f"rendered {args.docs}")
    else:
        print(f"{args.docs} already up to date")


if __name__ == "__main__":
    main()
