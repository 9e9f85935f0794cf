#!/usr/bin/env bash
# tests/run.sh — runs pt's suite and closes with "N passed, N failed, N skipped".
#
#   unit       every build/tests/test_* binary (Check: each test forks, has a
#              timeout); each Check test counts once
#   asan       the same binaries built with ASan+UBSan (--asan-build DIR)
#   scenario   every tests/scenario/*.sh; exit 0 pass, 77 skip (the script
#              prints why), anything else fails. Each runs under a deadline.
#
# Usage: tests/run.sh [--build DIR] [--asan-build DIR] [--only unit|asan|scenario]
set -u
cd "$(dirname "$0")/.."
BUILD=build ASAN_BUILD= ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --asan-build) ASAN_BUILD=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
export BUILD=$(cd "$BUILD" && pwd)
passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/pt-tests.XXXXXX)

run_check_bin() { # $1 label, $2 binary
  local label=$1 bin=$2 name out rc checks fails errs
  name=$(basename "$bin")
  out="$logdir/$label-$name.log"
  CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-60} CK_FORK=yes timeout 900 "$bin" >"$out" 2>&1
  rc=$?
  local line
  line=$(grep -E '^[0-9]+%: Checks: [0-9]+' "$out" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAIL $label/$name (exit $rc, no Check summary)"; tail -n 20 "$out"
    failed=$((failed + 1)); failures+=("$label/$name"); return
  fi
  checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
  fails=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
  errs=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
  local bad=$((fails + errs))
  passed=$((passed + checks - bad)); failed=$((failed + bad))
  if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "FAIL $label/$name: $line (exit $rc)"
    grep -E ':[EF]:' "$out" | head -n 20
    [ "$bad" -eq 0 ] && failed=$((failed + 1))
    failures+=("$label/$name")
  else
    echo "ok   $label/$name: $checks checks"
  fi
}

if [ -z "$ONLY" ] || [ "$ONLY" = unit ]; then
  for b in "$BUILD"/tests/test_*; do
    [ -x "$b" ] && run_check_bin unit "$b"
  done
fi
if { [ -z "$ONLY" ] && [ -n "$ASAN_BUILD" ]; } || [ "$ONLY" = asan ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  for b in "${ASAN_BUILD:-build-asan}"/tests/test_*; do
    [ -x "$b" ] && run_check_bin asan "$b"
  done
fi
if [ -z "$ONLY" ] || [ "$ONLY" = scenario ]; then
  for s in tests/scenario/*.sh; do
    [ -f "$s" ] || continue
    name=$(basename "$s" .sh)
    out="$logdir/scenario-$name.log"
    start=$(date +%s)
    # 600 s each, or what the script says in a "# test-timeout: S" line
    # (python_client downloads torch from PyPI on a fresh machine)
    limit=$(sed -n 's/^# test-timeout: \([0-9][0-9]*\)$/\1/p' "$s" | head -n 1)
    timeout -k 10 "${limit:-600}" bash "$s" >"$out" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
      echo "ok   scenario/$name (${secs}s)"; passed=$((passed + 1))
    elif [ $rc -eq 77 ]; then
      echo "skip scenario/$name: $(tail -n 1 "$out")"; skipped=$((skipped + 1))
    else
      echo "FAIL scenario/$name (exit $rc, ${secs}s)"; tail -n 150 "$out"
      failed=$((failed + 1)); failures+=("scenario/$name")
    fi
  done
fi
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]} (logs in $logdir)"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ $((passed + skipped)) -gt 0 ]
