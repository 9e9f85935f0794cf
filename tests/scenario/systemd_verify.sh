#!/usr/bin/env bash
# systemd/ptd.service and systemd/ptd-controller.service pass
# `systemd-analyze verify` without a single line of output: systemd-analyze
# exits 0 on unknown keys and bad values, so any output at all counts as a
# failure. @BINDIR@ is replaced, as `make install`
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
for unit in ptd.service ptd-controller.service; do
  sed -e "s|@BINDIR@|$BUILD/bin|g" "systemd/$unit" >"$tmp/$unit"
  if grep -q '@[A-Z]*@' "$tmp/$unit"; then
    echo "FAIL: placeholders left in $unit:"; grep -n '@[A-Z]*@' "$tmp/$unit"; exit 1
  fi
  out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$tmp/$unit" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify $unit exited $rc and said:"
    printf '%s\n' "$out"
    exit 1
  fi
  echo "ok: systemd-analyze verify $unit: exit 0, no output"
done
# The controller's unit is a notify service with a watchdog, like ptd's.
for key in Type=notify WatchdogSec= EnvironmentFile=-/etc/default/ptd-controller; do
  grep -q "^$key" systemd/ptd-controller.service \
    || { echo "FAIL: ptd-controller.service lacks $key"; exit 1; }
done
