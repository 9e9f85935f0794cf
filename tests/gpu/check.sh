#!/usr/bin/env bash
# check.sh — the checks to run on a machine with a GPU, in under 5 minutes:
# builds the CUDA backend (libpt_cuda.so, libpt_cuda.a) and the GPU test,
# runs the test (the CUDA kernels and copies against the CPU oracle, plus
# throughput figures), ptbench --quick when build/bin/ptbench exists, and,
# where a Python with CUDA torch is at hand (PT_GPU_PYTHON, else python3),
# PyTorch on the GPU: the pt package built against the CUDA backend, a model
# of a few GB of state under ptd node killed -9 and resumed bit-exact
# against the run without pt, and the D2H snapshot rate beside
# cudaMemcpyAsync into pinned memory and the step time with a snapshot
# every step over the step time without (tests/gpu/torch_gpu.py).
#
# Usage: tests/gpu/check.sh [BUILD_DIR]   (default build-gpu)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
B=${1:-build-gpu}
rc=0
command -v nvidia-smi >/dev/null && nvidia-smi -L
echo "== build: libpt_cuda.so, libpt_cuda.a, ptd and the GPU test into $B"
timeout 240 make --no-print-directory -j"$(nproc)" BUILD="$B" CUDA=yes \
  "$B/lib/libpt_cuda.so" "$B/lib/libpt_cuda.a" "$B/bin/ptd" "$B/bin/ptctl" gpu-test \
  || { echo "check: FAIL: build"; exit 1; }
echo "== gpu_kern_test"
timeout -k 10 120 "$B/tests/gpu/gpu_kern_test"
t=$?
if [ "$t" -ne 0 ]; then echo "check: gpu_kern_test exited $t"; rc=1; fi
if [ -x build/bin/ptbench ]; then
  echo "== ptbench --quick"
  timeout -k 10 120 build/bin/ptbench --quick || { echo "check: ptbench exited $?"; rc=1; }
fi

echo "== PyTorch on the GPU"
PY=${PT_GPU_PYTHON:-python3}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "check: PyTorch part skipped: '$PY' has no torch with CUDA here (this machine" \
       "cannot install one; PT_GPU_PYTHON names a Python that has it)"
else
  T=$(mktemp -d /tmp/pt-gpu.XXXXXX)
  (cd client/python && PT_CUDA=1 PT_ROOT="$ROOT" PT_BUILD="$ROOT/$B" \
     timeout 120 "$PY" setup.py -q build_ext --inplace) >"$T/build.log" 2>&1 \
    || { tail -n 20 "$T/build.log"; echo "check: FAIL: the package's CUDA build"; exit 1; }
  export PYTHONPATH="$ROOT/client/python${PYTHONPATH:+:$PYTHONPATH}"
  G=tests/gpu/torch_gpu.py STEPS=30
  env -u PT_SMP_SOCKET timeout 120 "$PY" $G train --steps $STEPS --out "$T/ref" \
    >"$T/ref.log" 2>&1 || { tail -n 20 "$T/ref.log"; echo "check: FAIL: the run without pt"; rc=1; }
  J=gpu$$
  "$B/bin/ptd" node --ranks 1 --job $J --state-dir "$T/sd" --shm-prefix $J- --backoff-ms 10 \
    -- "$PY" $G train --steps $STEPS --out "$T/out" --step-delay-ms 100 >"$T/node.log" 2>&1 &
  node=$!
  for _ in $(seq 600); do grep -q '^step 10 loss' "$T/node.log" && break; sleep 0.1; done
  pid=$("$B/bin/ptctl" --state-dir "$T/sd" status --json 2>/dev/null |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["ranks"][0]["trainer_pid"])')
  if [ -n "$pid" ] && [ "$pid" != 0 ]; then kill -9 "$pid"; echo "killed the trainer (pid $pid) after step 10"; fi
  timeout 180 tail --pid=$node -f /dev/null; wait $node; nrc=$?
  if [ "$nrc" = 0 ] && grep -q 'restored step' "$T/node.log" && cmp -s "$T/ref.0" "$T/out.0"; then
    echo "check: kill -9 and resume on the GPU: digest equals the run without pt"
  else
    tail -n 30 "$T/node.log"; echo "check: FAIL: GPU resume (node exit $nrc)"; rc=1
  fi
  J=gpub$$
  timeout 150 "$B/bin/ptd" node --ranks 1 --job $J --state-dir "$T/sdb" --shm-prefix $J- \
    -- "$PY" $G bench --gib 2 2>&1 | grep -v '^<' || { echo "check: FAIL: GPU bench"; rc=1; }
  rm -rf "$T"
fi
[ "$rc" -eq 0 ] && echo "check: PASS" || echo "check: FAIL"
exit "$rc"
