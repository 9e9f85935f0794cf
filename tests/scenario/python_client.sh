#!/usr/bin/env bash
# The Python package (client/python, import name `pt`): built and installed
# with pip into a virtual environment under the build folder, then
# tests/python/ under pytest against real `ptd node`s: errors with pt's code
# and text, the no-SMP outcome, refusals of buffers libpt cannot hold, and a
# 2-rank job whose trainers are killed with -9 and end bit-for-bit as a run
# without pt (the registered state and Python's random state in the blob);
# then pt.torch on CPU torch from PyPI: a transformer LM with AdamW over
# DDP/gloo, 2 and 3 ranks, killed with -9, bit-exact against a run without
# ptd, and the PyTorch friction cases.
# test-timeout: 1500
set -u
. "$(dirname "$0")/../lib.sh"

. "$(dirname "$0")/../python/venv.sh"
# the installed package runs with no LD_LIBRARY_PATH: libpt is linked in
(cd "$T_DIR" && env -u LD_LIBRARY_PATH "$VENV/bin/python" -c 'import pt; assert pt.VERSION >> 16 == 0') \
  || fail "import pt failed"
# torch is there: test_torch.py may not skip itself
(cd "$T_DIR" && PT_BUILD=$BUILD PT_REQUIRE_TORCH=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/python") \
  || fail "tests/python failed"
say "ok"
