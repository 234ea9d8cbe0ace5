"""The seed papers' measurements on the small presets (prints tables, writes JSON; not a test).

Evaluates a small UNet and a small DiT trained on the same 1,024 Fashion-MNIST images
(``configs/unet_fmnist_small.yaml``, ``configs/dit_fmnist_small.yaml``, 20 epochs each) with
``eval.py``'s pipeline and gathers, per sigma:

* shared errors (Niedoba et al. 2025, sec. 3): ``MSE(UNet, DiT)`` beside each network's MSE to
  the empirical denoiser and the cosine of their errors ``D - D_emp``, on forward probes and on
  both networks' reverse-trajectory states (``eval.py --ckpt UNET --ckpt DIT``);
* the UNet's linear distillation (Li et al. 2024): normalised MSE of the distilled map to the
  Gaussian denoiser, and of the network itself, and the map's MSE to the network;
* PSPC-Square with the best-fit (calibrated) schedule against the CIFAR-10 schedule scaled to
  28x28: the UNet's MSE to each, on training, held-out and reverse probes (``--pspc-schedule``);
* Kamb & Ganguli's agreement statistic: the median Pearson r between the UNet's samples and those
  of calibrated LS and ELS from the same noise, 20 Heun steps (their script's step count), beside
  their published medians (0.94 on Fashion-MNIST for conv-only networks).

Train the two runs first, then::

    python train.py fit --config configs/unet_fmnist_small.yaml --run_name unet_fmnist_small
    python train.py fit --config configs/dit_fmnist_small.yaml --run_name dit_fmnist_small
    python benchmarks/seed_experiments.py --unet checkpoints/unet_fmnist_small/last.ckpt \
        --dit checkpoints/dit_fmnist_small/last.ckpt --out runs/seed_experiments

Each evaluation writes its own folder under ``--out`` (``pair``, ``pspc_scaled``,
``pspc_calibrated``, ``kg``); ``--reuse`` reads a folder's ``metrics.json`` when it is there
instead of evaluating again. Figures go to ``benchmarks/results/seed_experiments.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightning_pspc.commands.evaluate import main as eval_main

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_io.py, beside this script
import results_io  # noqa: E402

#: Kamb & Ganguli's median Pearson r of conv-only networks' samples with the best ELS machine's
#: (docs/reference.md section 3c.6).
KAMB_GANGULI_MEDIAN = {"fashion_mnist": 0.94, "mnist": 0.94, "cifar10": 0.95}

#: The eval.py arguments of each evaluation (after ``--ckpt``/``--out``).
MINIMAL = ["--locality-probes", "0", "--num-agreement-samples", "0", "--num-linearity-pairs", "0"]
MINIMAL += ["--linear-distillation", "off", "--num-samples", "4"]
EVALUATIONS = {
    "pair": [],
    "pspc_scaled": ["--references", "empirical", "pspc", "--pspc-schedule", "scaled", *MINIMAL],
    "pspc_calibrated": ["--references", "empirical", "pspc", "--pspc-schedule", "calibrated"]
    + MINIMAL,
    "kg": [
        "--references", "empirical", "gaussian", "--agreement-references", "ls", "els",
        "--num-steps", "20", "--locality-fit-kinds", "pspc", "ls", "els",
        "--linear-distillation", "on", "--locality-probes", "0",
    ],
}  # fmt: skip


def evaluate(name: str, ckpts: list[str], out: Path, reuse: bool) -> dict:
    """``metrics.json`` of the evaluation ``name`` (run now unless ``reuse`` finds it)."""
    folder = out / name
    if not (reuse and (folder / "metrics.json").is_file()):
        args = [a for c in ckpts for a in ("--ckpt", c)] + ["--out", str(folder), "--no-progress"]
        if eval_main([*args, *EVALUATIONS[name]]) != 0:
            raise SystemExit(f"eval.py failed for {name}")
    return json.loads((folder / "metrics.json").read_text())


def shared_error_cells(report: dict) -> list[dict]:
    (pair,) = report["pairwise"]
    a, b = pair["runs"]
    return [
        {
            "part": "shared_errors",
            "probes": kind,
            "sigma": s,
            "mse_unet_dit": pair["mse_between"][kind][i],
            "mse_unet_empirical": pair["mse_to_empirical"][a][kind][i],
            "mse_dit_empirical": pair["mse_to_empirical"][b][kind][i],
            "error_cosine": pair["error_cosine"][kind][i],
            "error_cosine_pooled": pair["error_cosine_pooled"][kind][i],
        }
        for kind in pair["mse_between"]
        for i, s in enumerate(pair["sigmas"])
    ]


def linear_cells(record: dict) -> list[dict]:
    lin = record["linear_distillation"]
    return [
        {
            "part": "linear_fit",
            "sigma": s,
            "linear_gaussian_nmse": lin["gaussian_nmse"][i],
            "network_gaussian_nmse": lin["network_gaussian_nmse"][i],
            "linear_network_mse": lin["network_mse"][i],
        }
        for i, s in enumerate(lin["sigmas"])
    ]


def pspc_cells(scaled: dict, calibrated: dict) -> list[dict]:
    rs, rc = scaled["checkpoints"][0], calibrated["checkpoints"][0]
    sides_s = rs["local_schedules"]["pspc"]
    sides_c = rc["local_schedules"]["pspc"]
    cells = []
    for kind in rs["mse"]["pspc"]:
        for i, s in enumerate(rs["sigmas"]):
            a, c = rs["mse"]["pspc"][kind][i], rc["mse"]["pspc"][kind][i]
            cells.append(
                {
                    "part": "pspc_schedule",
                    "probes": kind,
                    "sigma": s,
                    "scaled_side": _side(sides_s, s),
                    "calibrated_side": _side(sides_c, s),
                    "mse_scaled": a,
                    "mse_calibrated": c,
                    "scaled_over_calibrated": a / c if a is not None and c else None,
                }
            )
    return cells


def _side(schedule: dict, sigma: float) -> int:
    nearest = min(range(len(schedule["sigmas"])), key=lambda j: abs(schedule["sigmas"][j] - sigma))
    return int(schedule["patch_sizes"][nearest])


def agreement_cells(record: dict) -> list[dict]:
    return [
        {
            "part": "agreement",
            "reference": ref,
            "steps": 20,
            "samples": record["agreement"]["num_samples"],
            "pearson_median": stats["pearson"]["median"],
            "pearson_q25": stats["pearson"]["q25"],
            "pearson_q75": stats["pearson"]["q75"],
            "kamb_ganguli_median": KAMB_GANGULI_MEDIAN["fashion_mnist"]
            if ref in ("ls", "els")
            else None,
        }
        for ref, stats in record["agreement"].items()
        if isinstance(stats, dict) and "pearson" in stats
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unet", required=True, help="last.ckpt of the unet_fmnist_small run")
    p.add_argument("--dit", required=True, help="last.ckpt of the dit_fmnist_small run")
    p.add_argument("--out", default="runs/seed_experiments", help="eval.py output folders")
    p.add_argument("--reuse", action="store_true", help="read existing metrics.json files")
    results_io.add_json_options(p, "seed_experiments")
    args = p.parse_args()
    out = Path(args.out)
    pair = evaluate("pair", [args.unet, args.dit], out, args.reuse)
    scaled = evaluate("pspc_scaled", [args.unet], out, args.reuse)
    calibrated = evaluate("pspc_calibrated", [args.unet], out, args.reuse)
    kg = evaluate("kg", [args.unet], out, args.reuse)
    cells = shared_error_cells(pair) + linear_cells(kg["checkpoints"][0])
    cells += pspc_cells(scaled, calibrated) + agreement_cells(kg["checkpoints"][0])
    mid = [c for c in cells if c["part"] == "shared_errors" and 0.25 <= c["sigma"] < 10]
    pspc = [c for c in cells if c["part"] == "pspc_schedule" and c["scaled_over_calibrated"]]
    worst = max(pspc, key=lambda c: c["scaled_over_calibrated"]) if pspc else None
    summary = {
        "worst": [worst] if worst else [],
        "error_cosine_mid_band_forward": _mean(
            [c["error_cosine"] for c in mid if c["probes"] == "forward"]
        ),
        "agreement_pearson_median": {
            c["reference"]: round(c["pearson_median"], 3) for c in cells if c["part"] == "agreement"
        },
    }
    for c in cells:
        print(c)
    print(summary)
    results_io.save("seed_experiments", args, results_io.machine(), cells, summary)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


if __name__ == "__main__":
    main()
