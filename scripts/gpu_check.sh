#!/usr/bin/env bash
# One-call GPU check (at most ~8 minutes): the `cuda` tests, the denoiser benchmark on CUDA against
# the published structure, the locality benchmark on CUDA, and the training throughput of the
# small presets. Run on a machine with a GPU and the project's dependencies (or with wheels of the
# missing ones in .whl/, installed into a private folder) and Fashion-MNIST in
# /usr/share/datasets/fashion-mnist (scripts/setup.sh installs it):
#     [CKPT=run/last.ckpt] [SKIP="denoisers training"] [DATA=dir] [COMMIT=<commit>] \
#       bash scripts/gpu_check.sh [OUT_DIR]
# CKPT: a trained UNet run whose heatmaps cut the PSPC-Flex masks (else an untrained UNet's);
# SKIP: steps to leave out (env cuda_tests denoisers locality els_2000 training); DATA: a folder
# holding train-images-idx3-ubyte.gz (and the labels), linked to /usr/share/datasets/fashion-mnist
# where that is missing (on a GPU machine without Fashion-MNIST, carry the two train files
# there); COMMIT: recorded in gpu_check.json as the code's version (optional). It runs from the
# repository root wherever it is called from.
# Writes into OUT_DIR (default: runs/gpu_check): gpu_check.log (everything printed), each
# benchmark step's JSON document (denoisers.json, locality.json, els_2000.json, training.json; the
# format of benchmarks/results_io.py), cuda_tests.xml (pytest's JUnit report) and gpu_check.json
# (device, torch version, COMMIT, each step's status and seconds, the cuda tests' counts), and
# ends with a short summary. Copy the benchmark documents into benchmarks/results/ under names of
# their own and run benchmarks/render.py to put them in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2  # the repository root (this script is in scripts/)
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -d "$FMNIST" ] && [ -n "${DATA:-}" ]; then
  [ -d "$DATA" ] ||
    { echo "gpu_check: DATA=$DATA is not a folder (it should hold the train files)"; exit 2; }
  mkdir -p "$(dirname "$FMNIST")" && ln -s "$(realpath "$DATA")" "$FMNIST" ||
    { echo "gpu_check: cannot link DATA=$DATA to $FMNIST (needs write access there)"; exit 2; }
fi
if [ ! -d "$FMNIST" ]; then
  echo "gpu_check: no Fashion-MNIST in $FMNIST: install dataset-fashion-mnist, or set DATA to a"
  echo "folder holding train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz"
  exit 2
fi
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}  # the benchmarks import the package from here
if compgen -G ".whl/*.whl" >/dev/null; then  # missing packages carried as wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_check_site .whl/*.whl && export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi
declare -A STATUS
SKIPPED=" ${SKIP:-} "
STEPS=$(mktemp)  # one line per step: name, status, rc, seconds, command (tab-separated)
trap 'rm -f "$STEPS"' EXIT
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log everything, keep going
  local name=$1 limit=$2; shift 2
  if [[ "$SKIPPED" == *" $name "* ]]; then
    echo "=== $name: skipped" | tee -a "$LOG"
    printf '%s\tskipped\t\t\t%s\n' "$name" "$*" >> "$STEPS"
    return
  fi
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} seconds=$((SECONDS - t0)) status=ok
  [ "$rc" = 0 ] || status=failed
  [ "$rc" = 124 ] && status=timeout
  STATUS[$name]="rc=$rc, $seconds s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$seconds" "$*" >> "$STEPS"
  echo "=== $name: ${STATUS[$name]}" | tee -a "$LOG"
}
: > "$LOG"
rm -f "$OUT"/{denoisers,locality,els_2000,training,gpu_check}.json "$OUT/cuda_tests.xml"  # an earlier run's
CUDA_TESTS=tests/e2e/test_cuda.py
[ -f "$CUDA_TESTS" ] || CUDA_TESTS=tests  # the `cuda` marker selects them wherever they are
step env 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, lightning; print(\"torch\", torch.__version__, \"lightning\", lightning.__version__, \"cuda\", torch.cuda.is_available())'"
step cuda_tests 200 "$PY" -m pytest -m cuda "$CUDA_TESTS" -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
step denoisers 200 "$PY" benchmarks/denoisers.py --device cuda --repeats 3 --json "$OUT/denoisers.json"
step locality 120 "$PY" benchmarks/locality.py --device cuda ${CKPT:+--ckpt "$CKPT"} --json "$OUT/locality.json"
step els_2000 120 "$PY" benchmarks/locality.py --device cuda --skip flex heatmaps --els-n 2000 --els-loop-rows 4 --json "$OUT/els_2000.json"
step training 80 "$PY" benchmarks/training.py --device cuda --presets dit_fmnist_small unet_fmnist_small --steps 50 --repeats 2 --json "$OUT/training.json"
echo "=== summary" | tee -a "$LOG"
for name in "${!STATUS[@]}"; do echo "$name: ${STATUS[$name]}"; done | sort | tee -a "$LOG"
grep -E "passed|failed|error" "$LOG" | grep -E "^[0-9]+ (passed|failed)|=+ .*(passed|failed)" | tail -2 | tee -a "$LOG"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) \
  "$PY" - "$OUT" "$STEPS" "$@" <<'EOF' 2>&1 | tee -a "$LOG"
"""Writes OUT/gpu_check.json: the device, each step's status and seconds, the cuda tests' counts."""
import os
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, "benchmarks")
import results_io  # noqa: E402

out, steps = Path(sys.argv[1]), Path(sys.argv[2])
settings = {v: os.environ.get(v) or None for v in ("CKPT", "SKIP", "DATA", "COMMIT")}
command = [f"{v}={shlex.quote(x)}" for v, x in settings.items() if x]
command.append(shlex.join(["bash", "scripts/gpu_check.sh", *sys.argv[3:]]))
try:
    machine = results_io.machine("cuda:0")
except Exception:  # no CUDA (or no torch): the CPU's figures
    try:
        machine = results_io.machine("cpu")
    except Exception:
        machine = {"cpu": results_io.cpu_model(), "cpu_count": os.cpu_count(), "torch": None}
    machine["device"] = None
machine["device"] = os.environ.get("GPU_NAME") or machine["device"] or "no GPU found"
cells = []
for line in steps.read_text().splitlines():
    name, status, rc, seconds, step_command = line.split("\t", 4)
    cells.append(
        {
            "part": "steps",
            "step": name,
            "status": status,
            "rc": int(rc) if rc else None,
            "seconds": int(seconds) if seconds else None,
            "json": f"{name}.json" if (out / f"{name}.json").exists() else None,
            "command": step_command,
        }
    )
summary = {}
report = out / "cuda_tests.xml"
if any(c["step"] == "cuda_tests" and c["status"] != "skipped" for c in cells) and report.exists():
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed, errors = int(suite.get("failures", 0)), int(suite.get("errors", 0))
    summary.update(
        cuda_tests_passed=total - skipped - failed - errors,
        cuda_tests_failed=failed,
        cuda_tests_errors=errors,
        cuda_tests_skipped=skipped,
    )
summary["pass"] = all(c["status"] in ("ok", "skipped") for c in cells)
doc = {
    "benchmark": "gpu_check",
    "command": " ".join(command),
    "created": results_io.now(),
    "commit": os.environ.get("COMMIT") or None,
    "machine": machine,
    "settings": {k.lower(): v for k, v in settings.items() if k != "COMMIT"},
    "cells": cells,
    "summary": summary,
}
results_io.write_json(out / "gpu_check.json", doc)
print(f"gpu_check: results in {out / 'gpu_check.json'}")
EOF
