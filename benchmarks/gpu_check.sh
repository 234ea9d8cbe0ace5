#!/usr/bin/env bash
# One-call GPU check (at most ~8 minutes): the `cuda` tests, the denoiser benchmark on CUDA against
# the published structure, the locality benchmark on CUDA, and the training throughput of the
# small presets. Run from the repository root on a machine with a GPU and the project's
# dependencies (or with wheels of the missing ones in .whl/, installed into a private folder) and
# Fashion-MNIST in /usr/share/datasets/fashion-mnist (scripts/setup.sh installs it):
#     [CKPT=run/last.ckpt] [SKIP="denoisers training"] [DATA=dir] \
#       bash benchmarks/gpu_check.sh [OUT_DIR]
# CKPT: a trained UNet run whose heatmaps cut the PSPC-Flex masks (else an untrained UNet's);
# SKIP: steps to leave out; DATA: a folder holding train-images-idx3-ubyte.gz (and the labels),
# linked to /usr/share/datasets/fashion-mnist where that is missing (a lent GPU machine has no
# Fashion-MNIST: carry the two train files there). Writes OUT_DIR/gpu_check.log (default:
# runs/gpu_check) and ends with a short summary.
set -uo pipefail
cd "$(dirname "$0")/.."
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
SKIP=" ${SKIP:-} "
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log everything, keep going
  local name=$1 limit=$2; shift 2
  if [[ "$SKIP" == *" $name "* ]]; then echo "=== $name: skipped" | tee -a "$LOG"; return; fi
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  STATUS[$name]="rc=$rc, $((SECONDS - t0)) s"
  echo "=== $name: ${STATUS[$name]}" | tee -a "$LOG"
}
: > "$LOG"
step env 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, lightning; print(\"torch\", torch.__version__, \"lightning\", lightning.__version__, \"cuda\", torch.cuda.is_available())'"
step cuda_tests 200 "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider
step denoisers 200 "$PY" benchmarks/denoisers.py --device cuda --repeats 3
step locality 120 "$PY" benchmarks/locality.py --device cuda ${CKPT:+--ckpt "$CKPT"}
step els_2000 120 "$PY" benchmarks/locality.py --device cuda --skip flex heatmaps --els-n 2000 --els-loop-rows 4
step training 80 "$PY" benchmarks/training.py --device cuda --presets dit_fmnist_small unet_fmnist_small --steps 50 --repeats 2
echo "=== summary" | tee -a "$LOG"
for name in "${!STATUS[@]}"; do echo "$name: ${STATUS[$name]}"; done | sort | tee -a "$LOG"
grep -E "passed|failed|error" "$LOG" | grep -E "^[0-9]+ (passed|failed)|=+ .*(passed|failed)" | tail -2 | tee -a "$LOG"
