# tests/cluster.sh — a test cluster on one machine, for the scenarios:
# source it after tests/lib.sh.
#
#   c_ctl_start [CONTROLLER_OPTS...]  a ptd controller on 127.0.0.1, a free
#                                     port (port 0, read back from its log),
#                                     a fresh cluster key and state dir
#   c_ptctl ARGS...                   ptctl against it (--controller, --key)
#   c_ctl_stop                        SIGTERM, exit status in C_CTL_RC
#   c_ctl_wait_log RE [SECONDS]       waits for RE in the controller's log
#
# What it sets: C_KEY (the key file), C_CTL_DIR (state dir), C_CTL_LOG,
# C_CTL_PID, C_CTL_PORT, C_CTL_ADDR (127.0.0.1:PORT). Everything it started
# is stopped on exit (the EXIT trap runs c_cleanup, then lib.sh's
# t_cleanup). The next step adds nodes (c_node_start) on top of these.

: "${T_DIR:?source tests/lib.sh first}"
C_KEY=$T_DIR/cluster.key
C_CTL_DIR=$T_DIR/controller
C_CTL_LOG=$T_DIR/controller.log
C_CTL_PID=
C_CTL_PORT=
C_CTL_ADDR=
C_CTL_RC=

c_cleanup() {
  if [ -n "$C_CTL_PID" ] && kill -0 "$C_CTL_PID" 2>/dev/null; then
    kill -TERM "$C_CTL_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$C_CTL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$C_CTL_PID" 2>/dev/null
  fi
  C_CTL_PID=
}
trap 'c_cleanup; t_cleanup' EXIT

# A failure shows the controller's log too.
c_fail() {
  [ -f "$C_CTL_LOG" ] && tail -n 40 "$C_CTL_LOG" | sed 's/^/controller: /'
  fail "$@"
}

c_ctl_wait_log() {
  local re=$1 deadline=$(( $(date +%s) + ${2:-10} ))
  until grep -Eq -- "$re" "$C_CTL_LOG" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "timed out waiting for /$re/ in the controller's log"
    sleep 0.05
  done
}

c_ctl_start() {
  [ -f "$C_KEY" ] || "$PTD" keygen "$C_KEY" || fail "ptd keygen failed"
  : >"$C_CTL_LOG"
  "$PTD" controller --listen 127.0.0.1:0 --state-dir "$C_CTL_DIR" --key "$C_KEY" \
    --log-level "${T_LOG_LEVEL:-7}" "$@" >>"$C_CTL_LOG" 2>&1 &
  C_CTL_PID=$!
  local deadline=$(( $(date +%s) + 10 ))
  until C_CTL_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$C_CTL_LOG" | tail -n 1) \
        && [ -n "$C_CTL_PORT" ]; do
    kill -0 "$C_CTL_PID" 2>/dev/null || c_fail "ptd controller exited at start"
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "ptd controller did not listen within 10 s"
    sleep 0.05
  done
  C_CTL_ADDR=127.0.0.1:$C_CTL_PORT
}

c_ptctl() { "$PTCTL" --controller "$C_CTL_ADDR" --key "$C_KEY" "$@"; }

c_ctl_stop() {
  [ -n "$C_CTL_PID" ] || return 0
  kill -TERM "$C_CTL_PID" 2>/dev/null
  local deadline=$(( $(date +%s) + 10 ))
  while kill -0 "$C_CTL_PID" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "ptd controller still running 10 s after SIGTERM"
    sleep 0.05
  done
  wait "$C_CTL_PID"; C_CTL_RC=$?
  C_CTL_PID=
}
