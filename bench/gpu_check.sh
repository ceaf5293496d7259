#!/usr/bin/env bash
# The checks that need a GPU, as one command, from the repository root on a machine with an
# NVIDIA GPU and numba-cuda (CuPy and torch with CUDA are used when present):
#   1. the CUDA test suite on the device (tests/cuda, including CuPy/torch interop and
#      torch fused CUDA Adam parity), then
#   2. the benchmark table (bench/gpu_bench.py: 1e6/1e8/1e9 float32).
# Logs and the benchmark's JSON go to the folder given as the first argument
# (default: gpu-results). Runs from a checkout; no install needed.
set -uo pipefail
out="${1:-gpu-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import numba, numba_cuda, numpy; print('numba', numba.__version__, 'numpy', numpy.__version__)"
FASTOPT_CUDA_TESTS=1 python3 -m pytest tests/cuda -q -p no:cacheprovider -rs 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
python3 bench/gpu_bench.py --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
