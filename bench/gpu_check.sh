#!/usr/bin/env bash
# The GPU check a session with a lent GPU runs as is (< 8 min on one GPU); prints a markdown table.
#   bash bench/gpu_check.sh               # CUDA: full-size SD1.5 512² and SDXL 1024², random weights
#   bash bench/gpu_check.sh --cpu-smoke   # CPU, tiny models: keeps the script working in CI
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
exec "$PY" bench/gpu_check.py "$@"
