#!/usr/bin/env bash
# One-step set-up for a fresh machine: creates .venv/ in the repository root, installs the
# project and its dependencies, and installs Debian's Fashion-MNIST package when it is missing.
# Safe to run again: it re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

if ! command -v "$PY" >/dev/null; then
  echo "setup: '$PY' not found; install Python >= 3.10 or set PYTHON=/path/to/python" >&2
  exit 1
fi

# --- Fashion-MNIST (Debian package dataset-fashion-mnist) ------------------------------
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -d "$FMNIST" ]; then
  echo "setup: Fashion-MNIST not found at $FMNIST; installing Debian package dataset-fashion-mnist"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null && { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } >/tmp/lightning_pspc_apt.log 2>&1; then
    echo "setup: installed $FMNIST"
  else
    echo "setup: WARNING could not install dataset-fashion-mnist (see /tmp/lightning_pspc_apt.log)." >&2
    echo "setup:   Fix: 'sudo apt-get update && sudo apt-get install dataset-fashion-mnist', or point" >&2
    echo "setup:   the data module at other data (IDXSource(root=...), DigitsSource, HFSource)." >&2
  fi
fi

# --- virtual environment -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.lightning_pspc-installed"
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision pinned to a matching pair (timm needs torchvision to import).
case "$(uname -m)" in
  aarch64|arm64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
  *) TORCH="torch==2.14.1 torchvision==0.29.1" ;;
esac
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: installing $TORCH (a few minutes on a fresh machine)"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH
fi
echo "setup: installing lightning_pspc and its dependencies"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
echo "$WANT" > "$STAMP"
echo "setup: done ($VENV)"
