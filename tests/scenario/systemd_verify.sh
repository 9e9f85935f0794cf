#!/usr/bin/env bash
# systemd/ptd.service passes `systemd-analyze verify` without a single line
# of output: systemd-analyze exits 0 on unknown keys and bad values, so any
# output at all counts as a failure. @BINDIR@ is replaced, as `make install`
# does, by the directory of the built ptd.
set -u
cd "$(dirname "$0")/../.."
: "${BUILD:=build}"
BUILD=$(cd "$BUILD" && pwd)
command -v systemd-analyze >/dev/null \
  || { echo "skip: systemd-analyze is not installed"; exit 77; }
[ -x "$BUILD/bin/ptd" ] || { echo "FAIL: $BUILD/bin/ptd is not built"; exit 1; }

tmp=$(mktemp -d /tmp/pt-systemd.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
sed -e "s|@BINDIR@|$BUILD/bin|g" systemd/ptd.service >"$tmp/ptd.service"
if grep -q '@[A-Z]*@' "$tmp/ptd.service"; then
  echo "FAIL: placeholders left in the unit:"; grep -n '@[A-Z]*@' "$tmp/ptd.service"; exit 1
fi
out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$tmp/ptd.service" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify exited $rc and said:"
  printf '%s\n' "$out"
  exit 1
fi
echo "ok: systemd-analyze verify ptd.service: exit 0, no output"
