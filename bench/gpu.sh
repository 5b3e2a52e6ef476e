#!/usr/bin/env bash
# LongCLIP-L/14-336 in bf16 on one GPU, about 5 minutes on an H200: pairs/s, ratios to the bare
# model loop and to the row-at-a-time evaluator, bf16/fp16 score deviation from fp32.
# Usage: bench/gpu.sh [--precision fp16] [--batch-size 64] ...; on a CPU: bench/gpu.sh --device cpu --smoke
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m bench.gpu "$@"
