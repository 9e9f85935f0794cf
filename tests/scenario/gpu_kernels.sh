#!/usr/bin/env bash
# gpu_kernels.sh — the CUDA copy backend against the CPU oracle: builds
# tests/gpu/gpu_kern_test (make gpu-test) and runs it. The test checks the
# CRC kernel's arithmetic on the host first, then, on a GPU, device saves and
# restores of odd sizes. Skips (77, reason on the last line) when nvcc is
# absent or no GPU is usable; any other failure fails.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
if ! command -v nvcc >/dev/null 2>&1 && [ -z "${NVCC:-}" ]; then
  echo "skip: nvcc not found: the CUDA backend is not built here"
  exit 77
fi
make --no-print-directory BUILD="$BUILD" gpu-test || {
  echo "gpu_kernels: FAIL: make gpu-test"; exit 1; }
out=$(mktemp /tmp/pt-gpu-kernels.XXXXXX)
trap 'rm -f "$out"' EXIT
timeout -k 10 300 "$BUILD/tests/gpu/gpu_kern_test" >"$out" 2>&1
rc=$?
cat "$out" # on a skip, the test's last line says why
[ "$rc" -eq 77 ] && exit 77
[ "$rc" -eq 0 ] || echo "gpu_kernels: FAIL: gpu_kern_test exited $rc"
exit "$rc"
