#!/usr/bin/env bash
# tests/soak.sh — a long fault campaign on a loopback cluster: runs
# tests/scenario/fault_campaign.sh again and again, each time with the next
# seed and a longer job, until MINUTES have passed. Each round is a fresh
# controller and 3 nodes, a seeded campaign of every class this build can
# inject (ptctl fault campaign), the job's completion and every rank's
# digest against a fault-free run. Stops at the first round that fails
# (its log is printed) and exits 1; 0 when every round passed.
#
# Usage: tests/soak.sh [--build DIR] [--minutes N] [--seed S] [--count N]
#   (make soak MINUTES=30; SOAK_SEED, SOAK_COUNT too)
set -u
cd "$(dirname "$0")/.."
BUILD=build MINUTES=${MINUTES:-30} SEED=${SOAK_SEED:-1} COUNT=${SOAK_COUNT:-16}
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case $MINUTES in ''|*[!0-9]*) echo "soak.sh: MINUTES '$MINUTES': expected whole minutes" >&2; exit 2 ;; esac
export BUILD=$(cd "$BUILD" && pwd)
end=$(( $(date +%s) + MINUTES * 60 ))
log=$(mktemp /tmp/pt-soak.XXXXXX)
rounds=0 injections=0
# About 0.1 s of steps per injection beyond the campaign's own waits: a
# job long enough to outlive COUNT injections (stop waits ~2 s each).
steps=$(( 400 + COUNT * 100 ))
while [ "$(date +%s)" -lt "$end" ]; do
  start=$(date +%s)
  FAULT_SEED=$SEED FAULT_COUNT=$COUNT STEPS=$steps \
    timeout -k 10 900 bash tests/scenario/fault_campaign.sh >"$log" 2>&1
  rc=$?
  rounds=$((rounds + 1))
  if [ $rc -ne 0 ]; then
    cat "$log"
    echo "soak: FAIL: round $rounds (seed $SEED) exited $rc after $(( $(date +%s) - start )) s"
    echo "soak: $rounds rounds, $injections injections before it"
    rm -f "$log"
    exit 1
  fi
  injections=$((injections + COUNT))
  grep -E '^campaign: (CLASS|trainer|smp|ptd|controller|stop|corrupt) ' "$log" | sed 's/^campaign: /  /'
  echo "soak: round $rounds (seed $SEED, $COUNT injections, $steps steps) ok in $(( $(date +%s) - start )) s"
  SEED=$((SEED + 1))
done
rm -f "$log"
echo "soak: $rounds rounds, $injections injections, every one resumed; digests equal the fault-free run"
