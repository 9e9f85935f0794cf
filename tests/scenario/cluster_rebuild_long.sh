#!/usr/bin/env bash
# A rebuild that outlasts the trainer's request deadline: node b of a 2+1
# job is lost (cluster_node_loss, its first case, 32 MiB of state per
# rank), b's restarted trainer waits at most 600 ms for each answer of its
# SMP (PT_TIMEOUT_MS=600), and the survivors' SMPs are stopped for 1.5 s as
# b's SMP learns it must rebuild, so that the rebuild takes longer than
# that deadline. b's SMP answers the trainer's waiting pt_restore() with
# the bytes received so far before each deadline, libpt asks again, and the
# one restore completes: b's trainer restores the step once, never fails
# its restore, and the job ends with every digest equal to a fault-free
# run. The rebuild must outlast the deadline here (else this scenario
# proves nothing, and says so). Before: pt_restore() failed with ETIMEDOUT
# at its deadline (10 s by default, which a rebuild of more than 1-2 GB
# outlasts), b's part failed, and the job went to another epoch.
set -u
. "$(dirname "$0")/../lib.sh"

WAIT_MS=600
out=$T_DIR/loss.out
inner=rebuild_long_$$
NL_ONLY_LOSS=1 NL_STATE_MB=32 NL_STEPS=60 NL_B_TIMEOUT_MS=$WAIT_MS NL_STALL_MS=1500 NL_VERBOSE=1 \
  T_KEEP_DIR=1 T_NAME=$inner bash "$(dirname "$0")/cluster_node_loss.sh" >"$out" 2>&1
rc=$?
dir=$(ls -d /tmp/pt-"$inner".* 2>/dev/null | head -n 1)
[ $rc -eq 0 ] || { tail -n 30 "$out"; fail "the loss of node b failed (logs in $dir)"; }
log=$dir/node.b.log
if grep -E "pt-train: cannot restore|HELLO to the SMP .* failed" "$log"; then
  fail "b's trainer failed to restore (logs in $dir)"
fi
n=$(grep -c "pt: restored step" "$log")
[ "$n" -eq 1 ] || fail "b's trainers restored $n times after the loss, not once (logs in $dir)"
line=$(grep -hE "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in [0-9]+ ms" "$log" | head -n 1)
ms=$(sed -n 's/.* bytes in \([0-9]*\) ms.*/\1/p' <<<"$line")
[ -n "$ms" ] || fail "no rebuild line in node b's log (logs in $dir)"
[ "$ms" -gt $WAIT_MS ] || fail "the rebuild took $ms ms, within the trainer's $WAIT_MS ms deadline: nothing was checked (logs in $dir)"
grep -q "pt: restore waits: step [0-9]* is being rebuilt from coding group 0: [0-9]* of about [0-9]* bytes received" "$log" \
  || fail "b's trainer logged no progress of the rebuild it waited for (logs in $dir)"
say "$(grep -h 'pt: restore waits' "$log" | tail -n 1 | sed 's/.*pt: //')"
rm -rf "$dir"
say "ok: a rebuild of $ms ms behind a $WAIT_MS ms request deadline, one restore: ${line#*: }"
