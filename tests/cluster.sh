# tests/cluster.sh — a test cluster on one machine, for the scenarios:
# source it after tests/lib.sh.
#
#   c_ctl_start [CONTROLLER_OPTS...]  a ptd controller on 127.0.0.1, a free
#                                     port (port 0, read back from its log;
#                                     C_CTL_PORT_WANT=P asks for port P, to
#                                     start it again where nodes look), a
#                                     fresh cluster key and state dir
#   c_ptctl ARGS...                   ptctl against it (--controller, --key)
#   c_ctl_stop                        SIGTERM, exit status in C_CTL_RC
#   c_ctl_wait_log RE [SECONDS]       waits for RE in the controller's log
#   c_node_start ID [NODE_OPTS...]    a cluster-mode ptd node: node id ID,
#                                     state dir $T_DIR/node.ID, log
#                                     $T_DIR/node.ID.log; pid in C_NODE_PID[ID]
#   c_nodes_term                      SIGTERM to every node (they stop their
#                                     parts' ranks), waits for them
#   c_node_kill ID [SIGNAL]           signals it (default KILL) and reaps it;
#                                     exit status in C_NODE_RC[ID]
#   c_node_state ID                   its state in `ptctl nodes --json`
#                                     (alive, unreachable, dead; "" if none)
#   c_wait_node_state ID STATE [S]    waits until c_node_state ID is STATE
#   c_job_field JOB KEY               a field of JOB in `ptctl status JOB
#                                     --json` ("" when absent)
#   c_wait_job_state JOB STATE S      waits S seconds at most until the
#                                     job's state is STATE (on failure the
#                                     nodes' logs are shown)
#   c_wait_committed JOB MIN [S]      waits (S, default 60) until JOB's
#                                     committed step is MIN or more; echoes it
#   c_node_pids ID [trainer|smp|all]  the pids of node ID's running trainers,
#                                     SMPs or both (default), from its
#                                     control socket
#   c_job_ranks_on ID JOB             the global ranks node ID holds in the
#                                     coded job JOB (its groups' members)
#   c_lose_node ID JOB [PIDS]         node ID lost whole: its ptd, SMPs and
#                                     trainers (PIDS, read before, or read
#                                     now) SIGKILLed, its objects of JOB
#                                     removed; sets LOST_RANKS
#   c_flip_parity OBJ STEP            flips a byte of the parity row of
#                                     STEP (its slot COMMITTED) in object
#                                     OBJ; prints the slot
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
declare -A C_NODE_PID=() C_NODE_RC=()

c_cleanup() {
  local id
  for id in "${!C_NODE_PID[@]}"; do
    kill -KILL "${C_NODE_PID[$id]}" 2>/dev/null
    wait "${C_NODE_PID[$id]}" 2>/dev/null
  done
  if [ -n "$C_CTL_PID" ] && kill -0 "$C_CTL_PID" 2>/dev/null; then
    kill -TERM "$C_CTL_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$C_CTL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$C_CTL_PID" 2>/dev/null
  fi
  C_CTL_PID=
  # What the nodes' parts left: SMPs outlive a killed node by design (a
  # restarted one re-adopts them), and so do trainers; every one of them
  # names a socket or a file in a node's state dir under $T_DIR. Then
  # their objects, named by the jobs' names under the test's shm prefix.
  pkill -KILL -f -- "$T_DIR/node\." 2>/dev/null
  rm -f /dev/shm/"$T_PREFIX"* 2>/dev/null
}
trap 'c_cleanup; t_cleanup' EXIT

# SIGTERM to every node still running, so that each stops the ranks of its
# job part (SIGKILL, as c_cleanup sends, would leave them running), within
# 15 s. For scenarios that run jobs: trap 'c_nodes_term; c_cleanup; ...'.
c_nodes_term() {
  local id pid
  for id in "${!C_NODE_PID[@]}"; do kill -TERM "${C_NODE_PID[$id]}" 2>/dev/null; done
  for id in "${!C_NODE_PID[@]}"; do
    pid=${C_NODE_PID[$id]}
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

# A failure shows the controller's log too.
c_fail() {
  [ -f "$C_CTL_LOG" ] && tail -n 40 "$C_CTL_LOG" | sed 's/^/controller: /'
  # what each node said last, and why steps were not protected or committed
  local f
  for f in "$T_DIR"/node.*.log; do
    [ -f "$f" ] || continue
    grep -hE 'not protected|not pinned|refus|did not end|failed' "$f" | tail -n 8 | sed "s|^|$(basename "$f" .log): |"
    tail -n 5 "$f" | sed "s|^|$(basename "$f" .log): |"
  done
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
  "$PTD" controller --listen "127.0.0.1:${C_CTL_PORT_WANT:-0}" --state-dir "$C_CTL_DIR" --key "$C_KEY" \
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

c_node_start() {
  local id=$1; shift
  "$PTD" node --controller "$C_CTL_ADDR" --node-id "$id" --key "$C_KEY" \
    --state-dir "$T_DIR/node.$id" --advertise 127.0.0.1 \
    --log-level "${T_LOG_LEVEL:-7}" "$@" >>"$T_DIR/node.$id.log" 2>&1 &
  C_NODE_PID[$id]=$!
}

c_node_kill() {
  local id=$1 sig=${2:-KILL} pid=${C_NODE_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -"$sig" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null; C_NODE_RC[$id]=$?
  unset "C_NODE_PID[$id]"
}

c_node_state() {
  c_ptctl nodes --json 2>/dev/null | python3 -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    if n["node"] == sys.argv[1]:
        print(n["state"])
' "$1"
}

c_wait_node_state() {
  local id=$1 want=$2 deadline=$(( $(date +%s) + ${3:-10} )) got
  until got=$(c_node_state "$id") && [ "$got" = "$want" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "node '$id' is '$got', not '$want', after ${3:-10} s"
    sleep 0.05
  done
}

c_job_field() {
  c_ptctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j["job"] == sys.argv[1]:
        v = j.get(sys.argv[2])
        print("" if v is None else v)
' "$1" "$2"
}

c_wait_job_state() {
  local deadline=$(( $(date +%s) + $3 )) got f
  until got=$(c_job_field "$1" state) && [ "$got" = "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || {
      for f in "$T_DIR"/node.*.log; do
        [ -f "$f" ] && tail -n 30 "$f" | sed "s|^|$(basename "$f" .log): |"
      done
      c_fail "job '$1' is '$got', not '$2', after $3 s"
    }
    sleep 0.1
  done
}

c_wait_committed() {
  local deadline=$(( $(date +%s) + ${3:-60} )) c
  until c=$(c_job_field "$1" committed_step) && [ -n "$c" ] && [ "$c" -ge "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "job '$1' committed nothing past step $2 within ${3:-60} s (at '$c')"
    sleep 0.1
  done
  echo "$c"
}

c_node_pids() {
  "$PTCTL" --state-dir "$T_DIR/node.$1" status --json 2>/dev/null | python3 -c '
import json, sys
keys = {"trainer": ("trainer_pid",), "smp": ("smp_pid",)}.get(sys.argv[1], ("smp_pid", "trainer_pid"))
print(" ".join(str(r[k]) for r in json.load(sys.stdin)["ranks"] for k in keys if r[k] > 0))' "${2:-all}"
}

c_job_ranks_on() {
  c_ptctl status "$2" --json 2>/dev/null | python3 -c '
import json, sys
job = [x for x in json.load(sys.stdin)["jobs"] if x["job"] == sys.argv[1]][0]
print(" ".join(str(m["rank"]) for g in job["groups"] for m in g["members"]
               if m["node"] == sys.argv[2]))' "$2" "$1"
}

c_lose_node() {
  local id=$1 job=$2 procs=${3:-} p r
  [ -n "$procs" ] || procs=$(c_node_pids "$id")
  LOST_RANKS=$(c_job_ranks_on "$id" "$job")
  [ -n "$procs" ] && [ -n "$LOST_RANKS" ] || c_fail "node $id shows no processes ('$procs') or ranks ('$LOST_RANKS')"
  c_node_kill "$id" KILL
  for p in $procs; do kill -KILL "$p" 2>/dev/null; done
  for p in $procs; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  for r in $LOST_RANKS; do rm -f "/dev/shm/${T_PREFIX}pt.$job.$r" "/dev/shm/${T_PREFIX}pt.$job.$r.meta"; done
  say "node $id lost: processes $procs killed, objects of ranks $LOST_RANKS removed"
}

c_flip_parity() {
  python3 - "$1" "$2" <<'EOF_PY'
import struct, sys
path, step = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    h = f.read(4096)
    nslots, = struct.unpack_from("<I", h, 96)
    slot_table, = struct.unpack_from("<Q", h, 136)
    par_off, par_bytes = struct.unpack_from("<QQ", h, 160)
    par_stride, = struct.unpack_from("<Q", h, 224)
    assert par_bytes > 0, "no parity area"
    for i in range(nslots):
        f.seek(slot_table + 64 * i)
        rec = f.read(64)
        state, = struct.unpack_from("<I", rec, 0)
        s, = struct.unpack_from("<Q", rec, 8)
        if s == step and (state & 0x7fffffff) == 5:
            at = par_off + i * par_stride + 100
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x5a]))
            print(i)
            break
    else:
        sys.exit("no committed slot of step %d" % step)
EOF_PY
}
