#!/usr/bin/env bash
# A --memory-budget too small for the trainers' regions is refused at their
# HELLO (PT_EBUDGET). The node hears it from the SMP and fails the job at
# once (exit 1, naming the bytes needed and the budget), without restarts,
# even when the trainer does not exit 78 for it (here a wrapper exits 1).
set -u
. "$(dirname "$0")/../lib.sh"

cat >"$T_DIR/wrap.sh" <<WRAP
#!/usr/bin/env bash
"$TRAIN" "\$@"
echo "wrapper: pt-train exited \$?; exiting 1"
exit 1
WRAP
chmod +x "$T_DIR/wrap.sh"
TRAIN=$T_DIR/wrap.sh
t_node_start "$T_DIR/sd" 2 --memory-budget 64M --backoff-ms 50 -- --steps 20 --state-mb 48 --log-every 1
t_node_wait 60
[ "$T_NODE_RC" = 1 ] || fail "expected exit 1, got $T_NODE_RC"
grep -q 'pt-train: rank' "$T_DIR/node.log" || fail "the trainer did not run"
grep -Eq "job failed: smp rank [01] refused its trainer: .*needs [0-9]+ bytes, more than the memory budget of [0-9]+ bytes" \
  "$T_DIR/node.log" || fail "no message naming the bytes needed and the budget"
! grep -q 'restarting job' "$T_DIR/node.log" || fail "a budget refusal was retried"
! grep -q '^step 1 loss' "$T_DIR/node.log" || fail "training started"
say "ok: $(grep -o 'job failed: .*' "$T_DIR/node.log" | head -1)"
