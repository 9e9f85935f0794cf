#!/usr/bin/env bash
# `make demo` (tests/demo_cluster.sh) runs as the README says: a trainer,
# then the controller killed, then a whole node lost (a spare takes its
# place and rebuilds) in the middle of a coded job across three nodes, and
# every rank's final digest equal to a fault-free run; it says so last.
set -u
cd "$(dirname "$0")/../.."
: "${BUILD:=build}"
out=$(mktemp /tmp/pt-demo-cluster.XXXXXX)
trap 'rm -f "$out"' EXIT
t0=$(date +%s)
timeout 170 tests/demo_cluster.sh "$BUILD" >"$out" 2>&1
rc=$?
secs=$(( $(date +%s) - t0 ))
if [ $rc -ne 0 ] || ! tail -n 1 "$out" | grep -q '^demo: OK'; then
  tail -n 40 "$out"
  echo "demo_cluster: FAIL: tests/demo_cluster.sh exited $rc after ${secs}s"
  exit 1
fi
grep -qE 'epochs +[3-9]' "$out" || { echo "demo_cluster: FAIL: fewer than 2 restarts"; tail -n 14 "$out"; exit 1; }
grep -q 'spare d rebuilt step' "$out" || { echo "demo_cluster: FAIL: no rebuild on the spare"; tail -n 14 "$out"; exit 1; }
[ $secs -lt 120 ] || { echo "demo_cluster: FAIL: the demo took ${secs}s, over two minutes"; exit 1; }
echo "demo_cluster: ok in ${secs}s"
