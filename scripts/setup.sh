#!/usr/bin/env bash
# Sets up .venv with everything adaptok, its tests and its benchmarks need. Idempotent.
#
# Install path (measured on the 2-core CPU machines, see README): timm imports torchvision at import
# time, and PyPI's torchvision wheels do not load beside the pre-placed CPU-only torch 2.13.0 wheel.
# The matching pair torch 2.14.1 + torchvision 0.29.1 (a CUDA build, which also runs on the CPU) lies
# on these machines' disk, so pip installs it without a multi-GB download; elsewhere pip downloads it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() {  # quiet pip that still fails loudly; drops this machine's noise about missing local indexes
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then cat "$log"; return 1; fi
  grep -v "is ignored" "$log" || true
}
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || pip install "torch==2.14.1" "torchvision==0.29.1"
pip install -e ".[dev,bench]"  # bench: matplotlib for the benchmarks' plots
# Fashion-MNIST (Debian's dataset-fashion-mnist, 30 MB, offline once installed): the default
# training set, and a handful of its test items are objects on flat grounds for the dHT tests.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 \
         && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
    || echo "setup: could not install dataset-fashion-mnist; pass --data-root to a folder" \
            "of its idx files" >&2
fi
.venv/bin/python -c "import adaptok, timm, torchvision" # fail loudly if the install is broken
