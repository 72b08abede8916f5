#!/usr/bin/env bash
# Runs the candle adapter's tests on a CUDA device: vars on the GPU take the host round trip and
# must match downhill's core bit for bit (crates/downhill-candle/tests/adapter.rs,
# `cuda_vars_match_the_core_bit_for_bit`, compiled only with `--features cuda`).
#
#   scripts/gpu_check.sh
#
# Needs an NVIDIA GPU with its driver (nvidia-smi) and the CUDA toolkit (nvcc) that candle's
# `cuda` feature builds against. Without a device it prints SKIPPED and exits 0, so that it can
# sit in any pipeline; the default build never needs CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: SKIPPED: nvidia-smi not found, so no CUDA device to test on"
  exit 0
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu_check: SKIPPED: nvidia-smi lists no GPU"
  exit 0
fi
nvidia-smi -L
if ! command -v nvcc >/dev/null 2>&1; then
  echo "gpu_check: FAILED: a GPU is present but nvcc (the CUDA toolkit) is not on PATH;" \
       "candle's cuda feature needs it to build" >&2
  exit 1
fi
echo "gpu_check: cargo test --release -p downhill-candle --features cuda"
cargo test --release -p downhill-candle --features cuda
echo "gpu_check: PASSED on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
