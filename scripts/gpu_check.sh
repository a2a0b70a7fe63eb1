#!/usr/bin/env bash
# The query encoder on a GPU: FP32/FP16 throughput with PyTorch CUDA over batches 1..256, and
# parity of its embeddings with the CPU ONNX ones (cosine >= 0.999) on real text
# (benchmarks/gpu_check.py says how).
#
#   scripts/gpu_check.sh prepare   # on the CPU machine, once: writes build/gpu_check/ (~46 MB)
#   scripts/gpu_check.sh           # on the GPU machine, with build/gpu_check carried: about a
#                                  # minute; the report goes to $OUT, else benchmarks/reports/
#
# Exit status: 0 measured and parity passed, or skipped (no CUDA: it says so); 1 parity
# failed; 2 no bundle; 124 stopped at the 280 s limit (the lent machine's budget).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "${1:-}" == prepare ]]; then
    shift
    exec .venv/bin/python -m benchmarks.gpu_check prepare "$@"
fi
# The GPU machine has no .venv: its own python3 holds PyTorch with CUDA.
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
exec timeout 280 "$PYTHON" -m benchmarks.gpu_check measure "$@"
