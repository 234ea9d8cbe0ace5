#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
