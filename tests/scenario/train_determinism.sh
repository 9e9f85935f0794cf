#!/usr/bin/env bash
# The reference trainer is deterministic to the bit, learns, and gives the
# same final state with pt as without it:
#  - two --no-pt runs give the same digest; another seed or another rank a
#    different one;
#  - the loss at the last step is below the loss at step 1;
#  - --state-mb sizes the registered state, and bad flags exit 2;
#  - data parallel, without pt: ranks launched together average their
#    gradients (their parameters end the same bits, their full digests differ,
#    the loss they print at step 1 is the mean of the ranks' own losses), the
#    same digests again when the ranks start in another order and at other
#    times; a rank of another configuration is refused (exit 78), and a dead
#    or stopped rank makes the others exit 1 within the deadline;
#  - under ptd node with a snapshot every step, every rank's digest equals
#    its --no-pt run and the ranks' parameters are equal, and every step was
#    snapshotted or skipped; a job stopped at step 30 with its snapshots kept
#    and run again to step 60 restores step 30 on every rank (or, when a
#    rank skipped step 30, the newest step every rank holds) and ends with
#    the digest of an uninterrupted 60-step run.
set -u
. "$(dirname "$0")/../lib.sh"

[ -x "$TRAIN" ] || fail "$TRAIN is not built"
# Runs below are one rank alone unless they say otherwise.
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB

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

# 4. data parallel without pt: every rank runs at once (lib.sh's T_PORT)
ddp_run() { # ddp_run TAG RANKS "ORDER" DELAY0 ARGS... : logs $T_DIR/TAG.<rank>.log
  local tag=$1 ranks=$2 order=$3 delay0=$4; shift 4
  local r pids=()
  for r in $order; do
    [ "$r" = 0 ] && sleep "$delay0"
    RANK=$r WORLD_SIZE=$ranks "$TRAIN" --no-pt --master-port "$T_PORT" "$@" \
      >"$T_DIR/$tag.$r.log" 2>&1 &
    pids[r]=$!
  done
  for ((r = 0; r < ranks; r++)); do
    wait "${pids[r]}" || fail "$tag: rank $r exited with $?: $(tail -n 2 "$T_DIR/$tag.$r.log")"
  done
}
field() { sed -n "s/^$1 \([0-9a-f]\{16\}\)\$/\1/p" "$2"; } # field digest|param_digest LOG

ddp_run p2 2 "0 1" 0 "${SMALL[@]}" --log-every 1
p0=$(field param_digest "$T_DIR/p2.0.log"); p1=$(field param_digest "$T_DIR/p2.1.log")
[ -n "$p0" ] || fail "no param_digest line: $(tail -n 3 "$T_DIR/p2.0.log")"
[ "$p0" = "$p1" ] || fail "2 ranks end with different parameters: $p0 vs $p1"
[ "$(field digest "$T_DIR/p2.0.log")" != "$(field digest "$T_DIR/p2.1.log")" ] \
  || fail "2 ranks end with the same full digest (their data must differ)"
p_alone=$(field param_digest "$T_DIR/a.log")
[ "$p0" != "$p_alone" ] || fail "2 ranks end with the parameters of rank 0 alone: nothing was averaged"
cmp -s <(grep '^step ' "$T_DIR/p2.0.log") <(grep '^step ' "$T_DIR/p2.1.log") \
  || fail "the 2 ranks printed different losses"
python3 - "$T_DIR/p2.0.log" "$T_DIR/a.log" "$T_DIR/e.log" <<'PY' || fail "the loss printed is not the mean of the ranks' losses"
import re, sys
def step1(path):
    for line in open(path):
        m = re.match(r"step 1 loss ([0-9.]+)$", line)
        if m: return float(m.group(1))
ddp, r0, r1 = (step1(p) for p in sys.argv[1:])
# At step 1 both ranks hold the initial parameters, so each rank's own loss
# is that of the rank trained alone; the printed loss must be their mean.
print(f"step 1 loss: rank 0 alone {r0}, rank 1 alone {r1}, 2 ranks {ddp}")
sys.exit(0 if abs(ddp - (r0 + r1) / 2) < 2e-6 and abs(r0 - r1) > 1e-4 else 1)
PY
# Three ranks, twice: started in rank order at once, then in reverse order
# with rank 0 last; the sums are made in rank order whatever arrives first.
ddp_run q1 3 "0 1 2" 0 "${SMALL[@]}"
ddp_run q2 3 "2 1 0" 0.5 "${SMALL[@]}"
for r in 0 1 2; do
  a=$(field digest "$T_DIR/q1.$r.log"); b=$(field digest "$T_DIR/q2.$r.log")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "3 ranks, rank $r: digest $a in one run, $b in another"
done
q=$(field param_digest "$T_DIR/q1.0.log")
for r in 1 2; do
  [ "$(field param_digest "$T_DIR/q1.$r.log")" = "$q" ] || fail "3 ranks: rank $r's parameters differ from rank 0's"
done
say "data parallel ok: 2 ranks params $p0, 3 ranks params $q, the same in two runs"

# Mismatched configuration: refused. A dead or stopped peer: exit 1, soon.
RANK=0 WORLD_SIZE=2 "$TRAIN" --no-pt --master-port "$T_PORT" --comm-timeout-s 2 "${SMALL[@]}" \
  >"$T_DIR/m0.log" 2>&1 &
m0=$!
RANK=1 WORLD_SIZE=2 "$TRAIN" --no-pt --master-port "$T_PORT" --comm-timeout-s 2 "${SMALL[@]}" \
  --seed 2 >"$T_DIR/m1.log" 2>&1
rc=$?
[ $rc = 78 ] || fail "a rank of another configuration exited $rc, expected 78: $(tail -n 2 "$T_DIR/m1.log")"
grep -q 'runs another configuration' "$T_DIR/m1.log" || fail "no reason given: $(tail -n 2 "$T_DIR/m1.log")"
wait $m0; rc=$?
[ $rc = 1 ] || fail "rank 0 without its rank 1 exited $rc, expected 1"
grep -q 'rank 1 did not join within 2 s' "$T_DIR/m0.log" || fail "rank 0 said: $(tail -n 2 "$T_DIR/m0.log")"

for sig in KILL STOP; do
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 "$TRAIN" --no-pt --master-port "$T_PORT" --comm-timeout-s 2 \
      --steps 100000 --hidden 32 --batch 4 --log-every 1 >"$T_DIR/k$sig.$r.log" 2>&1 &
    k[r]=$!
  done
  until grep -q '^step 20 ' "$T_DIR/k$sig.0.log" 2>/dev/null; do
    kill -0 "${k[0]}" 2>/dev/null || fail "rank 0 ended early: $(tail -n 2 "$T_DIR/k$sig.0.log")"
    sleep 0.05
  done
  kill -$sig "${k[1]}"
  t0=$(date +%s)
  [ $sig = KILL ] && wait "${k[1]}" 2>/dev/null
  wait "${k[0]}"; rc=$?
  dt=$(( $(date +%s) - t0 ))
  if [ $sig = STOP ]; then kill -KILL "${k[1]}"; wait "${k[1]}" 2>/dev/null; fi
  [ $rc = 1 ] || fail "after SIG$sig of rank 1, rank 0 exited $rc, expected 1"
  [ $dt -le 5 ] || fail "after SIG$sig of rank 1, rank 0 took ${dt}s to give up"
  grep -Eq 'all-reduce of step [0-9]+: rank 1 (closed the connection|sent nothing within 2 s)' \
    "$T_DIR/k$sig.0.log" || fail "after SIG$sig of rank 1, rank 0 said: $(tail -n 2 "$T_DIR/k$sig.0.log")"
done
say "mismatch and dead peers ok"

# 5. under ptd node: the same digests, and a resumed job ends as an uninterrupted one
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
n=$(grep -c "^param_digest $(field param_digest "$T_DIR/ref.0.log")\$" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS ranks with rank 0's parameters: $(grep param_digest "$T_DIR/node.log")"
# Every step is snapshotted or skipped (a snapshot may be skipped while the
# previous step's commit runs), none fails.
n=$(sed -n 's/.*summary steps=40 snapshots=\([0-9][0-9]*\) skipped=\([0-9][0-9]*\) failed=0 restored_from=none$/\1 \2/p' \
  "$T_DIR/node.log" | awk '$1 + $2 == 40' | wc -l)
[ "$n" = $RANKS ] || fail "expected $RANKS summaries of 40 steps, each snapshotted or skipped: $(grep summary "$T_DIR/node.log")"
ls /dev/shm/"$T_PREFIX"pt."$T_JOB".* >/dev/null 2>&1 && fail "ptd node left shm objects after success"

rm -f "$T_DIR"/ref.* "$T_DIR"/out.*
: >"$T_DIR/node.log"
t_reference $RANKS --steps 60 "${NODE[@]}"
t_node_start "$T_DIR/sd2" $RANKS --keep -- --steps 30 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node (first half) exited with $T_NODE_RC"
mv "$T_DIR/node.log" "$T_DIR/first.log"
: >"$T_DIR/node.log"
# Resuming is explicit: the same state dir and --resume (a new state dir
# would refuse the kept objects).
t_node_start "$T_DIR/sd2" $RANKS --resume -- --steps 60 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node (second half) exited with $T_NODE_RC"
# The restore step is 30, the last step, unless a rank skipped step 30 (the
# commit of its previous step still running): then it is the newest step
# every rank holds, no older than the last step the first half committed.
want=30
if grep -q 'step 30 skipped' "$T_DIR/first.log"; then
  last_commit=$(sed -n 's/.*ptd node: commit step \([0-9][0-9]*\)$/\1/p' "$T_DIR/first.log" | tail -n 1)
  want=$(sed -n 's/.*ptd node: restore from step \([0-9][0-9]*\)$/\1/p' "$T_DIR/node.log" | tail -n 1)
  [ -n "$last_commit" ] && [ -n "$want" ] && [ "$want" -ge "$last_commit" ] && [ "$want" -lt 30 ] \
    || fail "step 30 was skipped; restore step '$want', last commit of the first half '$last_commit'"
  say "step 30 was skipped in the first half: restore from step $want"
fi
n=$(grep -c "^restored step $want\$" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS trainers to print 'restored step $want', saw $n"
grep -q "summary steps=$((60 - want)) .* restored_from=$want\$" "$T_DIR/node.log" \
  || fail "no summary of $((60 - want)) resumed steps"
t_check_digests $RANKS
say "ok"
