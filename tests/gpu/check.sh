#!/usr/bin/env bash
# check.sh — the checks to run on a machine with a GPU, in under 5 minutes:
# builds the CUDA backend (libpt_cuda.so) and the GPU test, runs the test
# (the CUDA kernels and copies against the CPU oracle, plus throughput
# figures), then ptbench --quick when build/bin/ptbench exists.
#
# Usage: tests/gpu/check.sh [BUILD_DIR]   (default build-gpu)
set -u
cd "$(dirname "$0")/../.."
B=${1:-build-gpu}
rc=0
command -v nvidia-smi >/dev/null && nvidia-smi -L
echo "== build: libpt_cuda.so and the GPU test into $B"
timeout 240 make --no-print-directory -j"$(nproc)" BUILD="$B" CUDA=yes \
  "$B/lib/libpt_cuda.so" gpu-test || { echo "check: FAIL: build"; exit 1; }
echo "== gpu_kern_test"
timeout -k 10 120 "$B/tests/gpu/gpu_kern_test"
t=$?
if [ "$t" -ne 0 ]; then echo "check: gpu_kern_test exited $t"; rc=1; fi
if [ -x build/bin/ptbench ]; then
  echo "== ptbench --quick"
  timeout -k 10 120 build/bin/ptbench --quick || { echo "check: ptbench exited $?"; rc=1; }
fi
[ "$rc" -eq 0 ] && echo "check: PASS" || echo "check: FAIL"
exit "$rc"
