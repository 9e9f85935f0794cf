#!/usr/bin/env bash
# The persistent tier of a standalone node (--persist-dir): every 5th commit
# goes to disk beside training, at a rate slow enough that a flush is nearly
# always under way. Then the whole node is lost, memory too (ptd, SMPs and
# trainers SIGKILLed in the middle of a flush, the shm objects removed),
# and one rank's file of the newest complete step is damaged on disk.
# Started again, the node must: remove the dead writers' leftovers (the
# incomplete step and its temporary file); try the newest complete step,
# whose damaged file fails its checksums on that rank and is never used;
# restore the complete step before it from disk on every rank, every block
# verified; and end with every digest equal to a fault-free run. (The
# disk here is slow on purpose, so the steps redone are the flush's pace,
# not --persist-every: persist_fast.sh bounds them.)
# Then: a full persist directory (a small tmpfs) makes every flush fail
# with a clear message while training goes on and ends bit-exact; and a
# read-only one refuses the node's start, saying why.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2 EVERY=5
ARGS=(--steps 260 --state-mb 8 --batch 2 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
P=$T_DIR/persist
mkdir -m 700 "$P"
POPTS=(--slots 3 --persist-dir "$P" --persist-every $EVERY --persist-keep 2)
t_node_start "$T_DIR/sd" $RANKS "${POPTS[@]}" --persist-rate 12M -- "${ARGS[@]}"
t_wait_count 'step [0-9]+ is on disk, complete' 2 60

# The node lost in the middle of a flush: a temporary file is there.
deadline=$(( $(date +%s) + 20 ))
until compgen -G "$P/$T_JOB/step-*/.rank-*.tmp" >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no flush seen under way"
  sleep 0.01
done
kill -KILL "$T_NODE_PID"
pkill -KILL -f -- "--job $T_JOB( |$)"
pkill -KILL -f -- "pt-train.*$T_DIR"
sleep 0.3
T_NODE_PID=
rm -f /dev/shm/"$T_PREFIX"pt."$T_JOB".*
committed=$(grep -Eo 'ptd node: commit step [0-9]+' "$T_DIR/node.log" | tail -1 | grep -Eo '[0-9]+$')
mapfile -t complete < <(for d in "$P/$T_JOB"/step-*; do [ -f "$d/MANIFEST" ] && basename "$d"; done | sort)
[ ${#complete[@]} -eq 2 ] || fail "expected 2 complete steps kept on disk, found ${#complete[@]}: ${complete[*]}"
newest=$((10#${complete[1]#step-})) older=$((10#${complete[0]#step-}))
ls -a "$P/$T_JOB"/step-* >"$T_DIR/before.txt"
say "killed with step $committed committed; complete on disk: $older, $newest"

# One byte of rank 1's file of the newest complete step, in its data.
python3 - "$P/$T_JOB/${complete[1]}/rank-1.pts" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(192)
    hbytes, = struct.unpack_from("<I", h, 12)
    f.seek(hbytes + 4096 + 17)
    b = f.read(1)
    f.seek(hbytes + 4096 + 17)
    f.write(bytes([b[0] ^ 0x10]))
PY

t_node_start "$T_DIR/sd" $RANKS "${POPTS[@]}" --backoff-ms 50 -- "${ARGS[@]}"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -Eq "removed [0-9]+ leftovers" "$T_DIR/node.log" \
  || fail "the incomplete step of the lost node was not cleaned"
grep -q "restore from disk: step $newest is the newest complete step" "$T_DIR/node.log" \
  || fail "step $newest was not tried from disk first"
grep -Eq "rank 1 could not restore step $newest from disk: .*does not match its checksum" "$T_DIR/node.log" \
  || fail "the damaged file of step $newest was not found"
grep -q "restore from disk: step $older is the newest complete step" "$T_DIR/node.log" \
  || fail "the complete step before it ($older) was not restored from disk"
n=$(grep -Ec "step $older read from disk into slot [0-9]+: .*every block verified" "$T_DIR/node.log")
[ "$n" -ge $RANKS ] || fail "only $n ranks read step $older from disk"
[ "$(grep -c "^restored step $older$" "$T_DIR/node.log")" -ge $RANKS ] \
  || fail "the trainers did not restore step $older"
t_check_digests $RANKS
say "ok: lost at step $committed; damaged step $newest refused; restored step $older from disk"

# A full persist directory: every flush fails, training goes on.
if mkdir "$T_DIR/full" && mount -t tmpfs -o size=4m,mode=0700 tmpfs "$T_DIR/full" 2>/dev/null; then
  trap 'umount "$T_DIR/full" 2>/dev/null; t_cleanup' EXIT
  : >"$T_DIR/node.log"
  rm -f "$T_DIR"/out.*
  t_node_start "$T_DIR/sd2" $RANKS --slots 3 --persist-dir "$T_DIR/full" --persist-every 20 \
    -- "${ARGS[@]}"
  t_node_wait 120
  [ "$T_NODE_RC" = 0 ] || fail "with a full persist dir, ptd node exited with $T_NODE_RC"
  grep -Eq "not persisted: cannot reserve [0-9]+ bytes for 'rank-[01].pts': No space left" "$T_DIR/node.log" \
    || fail "a full disk was not said"
  grep -q "stays incomplete on disk" "$T_DIR/node.log" || fail "the node did not say the step stays incomplete"
  [ -z "$(find "$T_DIR/full" -name MANIFEST)" ] || fail "a step was called complete on a full disk"
  t_check_digests $RANKS
  say "ok: a full persist directory is said, training ends bit-exact"
  # Read-only: refused at start, with the reason.
  mount -o remount,ro "$T_DIR/full"
  rm -rf "$T_DIR/sd3"
  "$PTD" node --ranks 1 --job "$T_JOB-ro" --state-dir "$T_DIR/sd3" --shm-prefix "$T_PREFIX" \
    --persist-dir "$T_DIR/full" -- "$TRAIN" --steps 5 >"$T_DIR/ro.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] || fail "a read-only persist dir was accepted"
  grep -q "Read-only file system" "$T_DIR/ro.log" || { cat "$T_DIR/ro.log"; fail "the refusal does not say why"; }
  say "ok: a read-only persist directory refuses the start (exit $rc)"
else
  say "not checked: a full and a read-only persist directory need a tmpfs mount (root)"
fi
