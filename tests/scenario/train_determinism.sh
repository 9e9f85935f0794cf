#!/usr/bin/env bash
# The reference trainer is deterministic to the bit, learns, and gives the
# same final state with pt as without it:
#  - two --no-pt runs give the same digest; another seed or another rank a
#    different one;
#  - the loss at the last step is below the loss at step 1;
#  - --state-mb sizes the registered state, and bad flags exit 2;
#  - under ptd node with a snapshot every step, every rank's digest equals
#    its --no-pt run; a job stopped at step 30 with its snapshots kept and
#    run again to step 60 restores step 30 on every rank and ends with the
#    digest of an uninterrupted 60-step run.
set -u
. "$(dirname "$0")/../lib.sh"

[ -x "$TRAIN" ] || fail "$TRAIN is not built"

digest_of() { # digest_of OUTFILE ARGS... : runs without pt, prints the digest
  local out=$1; shift
  "$TRAIN" --no-pt "$@" >"$out" 2>&1 || fail "pt-train --no-pt $* exited with $?: $(tail -n 3 "$out")"
  sed -n 's/^digest \([0-9a-f]\{16\}\)$/\1/p' "$out"
}

# 1. determinism and sensitivity to the seed and the rank
SMALL=(--steps 60 --hidden 64 --batch 8)
d1=$(digest_of "$T_DIR/a.log" "${SMALL[@]}")
d2=$(digest_of "$T_DIR/b.log" "${SMALL[@]}")
[ -n "$d1" ] || fail "no digest line in the output"
[ "$d1" = "$d2" ] || fail "two identical runs differ: $d1 vs $d2"
d3=$(digest_of "$T_DIR/c.log" "${SMALL[@]}" --seed 2)
[ "$d3" != "$d1" ] || fail "--seed 2 gives the same digest as --seed 1"
d4=$(RANK=1 digest_of "$T_DIR/d.log" "${SMALL[@]}")
[ "$d4" != "$d1" ] || fail "rank 1 gives the same digest as rank 0 (ranks must draw different data)"
d5=$(digest_of "$T_DIR/e.log" "${SMALL[@]}" --rank 1)
[ "$d5" = "$d4" ] || fail "--rank 1 and RANK=1 differ"
grep -q 'summary steps=60 snapshots=0 skipped=0 failed=0 restored_from=none' "$T_DIR/a.log" \
  || fail "unexpected summary: $(grep summary "$T_DIR/a.log")"
say "determinism ok: $d1 (seed 2: $d3, rank 1: $d4)"

# 2. the model learns at the default size
"$TRAIN" --no-pt --log-every 1 >"$T_DIR/learn.log" 2>&1 || fail "default run failed"
python3 - "$T_DIR/learn.log" <<'PY' || fail "the loss did not go down"
import re, sys
loss = [float(m.group(2)) for m in (re.match(r"step (\d+) loss ([0-9.]+)$", l) for l in open(sys.argv[1])) if m]
assert len(loss) == 200, f"expected 200 loss lines, got {len(loss)}"
first, last10 = loss[0], sum(loss[-10:]) / 10
print(f"loss: step 1 {first:.3f}, mean of the last 10 steps {last10:.3f}")
sys.exit(0 if loss[-1] < first and last10 < 0.75 * first else 1)
PY

# 3. sizing and flag errors
"$TRAIN" --no-pt --state-mb 8 --steps 0 >"$T_DIR/size.log" 2>&1 || fail "--state-mb 8 failed"
grep -q 'state 8.0 MiB' "$T_DIR/size.log" || fail "--state-mb 8 gave: $(head -n 1 "$T_DIR/size.log")"
for bad in "--steps x" "--hidden 0" "--bogus" "--lr -1" "--steps" "extra"; do
  # shellcheck disable=SC2086
  "$TRAIN" --no-pt $bad >"$T_DIR/bad.log" 2>&1
  rc=$?
  [ $rc = 2 ] || fail "pt-train $bad exited $rc, expected 2"
  grep -q '^pt-train: ' "$T_DIR/bad.log" || fail "pt-train $bad printed no message"
done
env -u PT_SMP_SOCKET "$TRAIN" --steps 1 >"$T_DIR/nosock.log" 2>&1
rc=$?
[ $rc = 78 ] || fail "without PT_SMP_SOCKET and --no-pt: exit $rc, expected 78"
say "flags ok"

# 4. under ptd node: the same digests, and a resumed job ends as an uninterrupted one
if [ ! -x "$PTD" ]; then
  say "note: $PTD is not built; the ptd node part was not run"
  exit 0
fi
RANKS=2
NODE=(--hidden 96 --batch 8 --log-every 1)
t_reference $RANKS --steps 40 "${NODE[@]}"
t_node_start "$T_DIR/sd1" $RANKS -- --steps 40 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
n=$(grep -c 'summary steps=40 snapshots=40 skipped=0 failed=0 restored_from=none' "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS summaries with 40 snapshots each: $(grep summary "$T_DIR/node.log")"
ls /dev/shm/"$T_PREFIX"pt."$T_JOB".* >/dev/null 2>&1 && fail "ptd node left shm objects after success"

rm -f "$T_DIR"/ref.* "$T_DIR"/out.*
t_reference $RANKS --steps 60 "${NODE[@]}"
t_node_start "$T_DIR/sd2" $RANKS --keep -- --steps 30 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node (first half) exited with $T_NODE_RC"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd3" $RANKS -- --steps 60 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node (second half) exited with $T_NODE_RC"
n=$(grep -c '^restored step 30$' "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS trainers to print 'restored step 30', saw $n"
grep -q 'summary steps=30 .* restored_from=30' "$T_DIR/node.log" || fail "no summary of 30 resumed steps"
t_check_digests $RANKS
say "ok"
