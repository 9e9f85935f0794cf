#!/usr/bin/env bash
# A trainer behind a wrapper script that always exits 0: at the first start
# the wrapper kills its pt-train with SIGKILL at step 40 of 120 and exits 0.
# Exit 0 is not "finished": only a trainer that said Bye(done) to its SMP is.
# ptd node must restart the job, not end it "completed" (which would delete
# every snapshot), and the run must end as the fault-free one.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 120 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 15)
t_reference $RANKS "${ARGS[@]}"

cat >"$T_DIR/wrap.sh" <<WRAP
#!/usr/bin/env bash
# exits 0 whatever pt-train did
log="$T_DIR/wrap.\$PT_RANK.\$PT_RESTART.log"
"$TRAIN" "\$@" >"\$log" 2>&1 &
child=\$!
if [ "\$PT_RESTART" = 0 ]; then
  for _ in \$(seq 600); do
    grep -q '^step 40 loss' "\$log" 2>/dev/null && break
    kill -0 \$child 2>/dev/null || break
    sleep 0.02
  done
  kill -KILL \$child 2>/dev/null && echo "wrapper: killed pt-train rank \$PT_RANK at step 40"
fi
wait \$child
cat "\$log"
exit 0
WRAP
chmod +x "$T_DIR/wrap.sh"
TRAIN=$T_DIR/wrap.sh
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_node_wait 90
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -q 'wrapper: killed pt-train' "$T_DIR/node.log" || fail "the wrapper killed nothing"
grep -q 'restarting job' "$T_DIR/node.log" \
  || fail "a trainer that exited 0 without finishing did not cause a restart"
t_check_digests $RANKS
say "ok: the job restarted after the wrapper's exit 0 and completed"
