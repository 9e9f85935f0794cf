#!/usr/bin/env bash
# One byte flipped in the newest committed slot of one rank. The restart must
# detect it by checksum and restore the previous intact step on every rank, so
# the run still ends as the fault-free one; with every slot of that rank
# damaged, the job must stop with a clear error and never restore bad bytes.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2 STEPS=40
ARGS=(--steps $STEPS --state-mb 4 --batch 4 --log-every 1)
t_reference $RANKS "${ARGS[@]}"

# A complete run that keeps its snapshots: step STEPS and older committed
# steps stay in each rank's three slots. Three, not two: a rank that skipped
# step STEPS holds STEPS-1 as its newest committed step, and with two slots
# the other rank may then hold no older step that this one still has.
t_node_start "$T_DIR/sd" $RANKS --keep --slots 3 -- "${ARGS[@]}"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "first run exited with $T_NODE_RC"
obj=/dev/shm/${T_PREFIX}pt.$T_JOB.0
[ -f "$obj" ] || fail "no snapshot object $obj after a --keep run"

flip() { # flip one data byte in the slot holding the newest (or every) committed step
  python3 - "$obj" "$1" <<'PY'
import struct, sys
path, which = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    h = f.read(4096)
    nslots, = struct.unpack_from("<I", h, 96)
    stride, = struct.unpack_from("<Q", h, 120)
    slot_off, = struct.unpack_from("<Q", h, 136)
    data_off, = struct.unpack_from("<Q", h, 152)
    slots = []
    for i in range(nslots):
        f.seek(slot_off + 64 * i)
        state, _, step = struct.unpack("<IIQ", f.read(16))
        if state == 5:  # SNAP_COMMITTED (format version 4)
            slots.append((step, i))
    slots.sort()
    targets = slots[-1:] if which == "newest" else slots
    for step, i in targets:
        pos = data_off + i * stride + 4096 + 123
        f.seek(pos); b = f.read(1); f.seek(pos); f.write(bytes([b[0] ^ 0x20]))
        print(f"flipped a byte of slot {i} (step {step})")
PY
}
flip newest
: >"$T_DIR/node.log"; rm -f "$T_DIR"/out.*
t_node_start "$T_DIR/sd" $RANKS --keep --slots 3 --resume -- "${ARGS[@]}"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "restart after one damaged slot exited with $T_NODE_RC"
# The previous step every rank still holds intact: STEPS-1 normally, older
# when a commit of STEPS-1 lost its race with the next snapshot on a rank.
r=$(grep -Eo 'restore from step [0-9]+' "$T_DIR/node.log" | head -n 1 | grep -Eo '[0-9]+$')
[ -n "$r" ] || fail "no restore after one damaged slot"
[ "$r" -lt "$STEPS" ] && [ "$r" -gt 0 ] || fail "restored step $r; expected an intact step before the damaged $STEPS"
say "restored from step $r, the newest step intact on every rank"
grep -Eqi "rank 0.*(checksum|damaged|not intact)" "$T_DIR/node.log" \
  || fail "the damaged slot was not reported"
# The SMPs read newest step first: rank 1 stopped at its intact newest slot,
# so the node must have asked for every slot before settling on an older step.
grep -q "reading every snapshot slot" "$T_DIR/node.log" \
  || fail "the node restored an older step without reading every slot"
t_check_digests $RANKS

# The step numbers in rank 0's slot records changed (a record that fails its
# checksum holds nothing): the committed step no longer stands on every rank,
# and the job must stop rather than silently start over.
cp "$obj" "$T_DIR/obj.saved"
python3 - "$obj" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(4096)
    nslots, = struct.unpack_from("<I", h, 96)
    slot_off, = struct.unpack_from("<Q", h, 136)
    for i in range(nslots):
        f.seek(slot_off + 64 * i + 8)
        step, = struct.unpack("<Q", f.read(8))
        f.seek(slot_off + 64 * i + 8)
        f.write(struct.pack("<Q", step + 1000))
PY
: >"$T_DIR/node.log"; rm -f "$T_DIR"/out.*
t_node_start "$T_DIR/sd" $RANKS --keep --slots 3 --resume --max-restarts 1 -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 1 ] || fail "with rank 0's slot records forged the job should fail (exit 1), got $T_NODE_RC"
grep -Eq "committed step [0-9]+ is not held intact by every rank" "$T_DIR/node.log" \
  || fail "no clear error about the committed step that no longer stands"
! grep -q "no snapshot: starting fresh" "$T_DIR/node.log" || fail "the job started over silently"
! grep -q "^restored step" "$T_DIR/node.log" || fail "a forged step was restored"
say "forged slot records: the job stops, naming the committed step"
cp "$T_DIR/obj.saved" "$obj"

# Now damage every committed slot of rank 0: nothing intact to restore.
flip all
: >"$T_DIR/node.log"; rm -f "$T_DIR"/out.*
t_node_start "$T_DIR/sd" $RANKS --keep --slots 3 --resume --max-restarts 1 -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 1 ] || fail "with no intact snapshot the job should fail (exit 1), got $T_NODE_RC"
grep -Eqi "job failed.*(intact|checksum)" "$T_DIR/node.log" || fail "no clear error about the damaged snapshots"
! grep -q "^step 1 loss" "$T_DIR/node.log" || fail "training started over silently"
say "ok"
