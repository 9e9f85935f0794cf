# Sourced by the Python scenarios (after tests/lib.sh): a virtual
# environment under the build folder, VENV, with pytest and CPU torch (with
# numpy and safetensors) from PyPI, installed once, and the pt package built
# from a copy of client/python and installed into it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$BUILD/pyenv
command -v python3 >/dev/null || fail "python3 not found"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
fi
if ! "$VENV/bin/python" -c 'import pytest, torch, numpy, safetensors' 2>/dev/null; then
  say "installing $(grep -v '^#' "$ROOT/tests/python/requirements.txt" | tr '\n' ' ')from PyPI into $VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/tests/python/requirements.txt" >"$T_DIR/pip.log" 2>&1 \
    || { tail -n 30 "$T_DIR/pip.log"; fail "pip install -r tests/python/requirements.txt failed"; }
fi
# built from a copy, so that the source tree gets no build/ or egg-info
rm -rf "$T_DIR/src"
cp -r "$ROOT/client/python" "$T_DIR/src"
PT_ROOT=$ROOT PT_BUILD=$BUILD "$VENV/bin/pip" install -q --force-reinstall --no-deps "$T_DIR/src" \
  >"$T_DIR/pip.log" 2>&1 || { cat "$T_DIR/pip.log"; fail "pip install ./client/python failed"; }
