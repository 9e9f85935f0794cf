#!/usr/bin/env bash
# ptctl waits out a full backlog: with the node stopped (SIGSTOP) and its
# control socket's listen backlog filled, `ptctl status` used to fail at once
# with "Resource temporarily unavailable"; it now asks again until its
# --timeout, and answers once the node drains the backlog (SIGCONT).
set -u
. "$(dirname "$0")/../lib.sh"

t_node_start "$T_DIR/sd" 1 -- --steps 100000 --state-mb 1 --batch 4 --log-every 100000
t_wait_log 'commit step' 60
sock="$T_DIR/sd/ptd.sock"
[ -S "$sock" ] || fail "no control socket at $sock"
kill -STOP "$T_NODE_PID"
# Fill the backlog: non-blocking connects until one is refused with EAGAIN.
python3 - "$sock" "$T_DIR/filled" <<'PY' &
import errno, socket, sys, time
conns = []
for i in range(100000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:
        s.close()
        break
    except OSError as e:
        if e.errno == errno.EAGAIN:
            s.close(); break
        raise
    conns.append(s)
open(sys.argv[2], "w").write(str(len(conns)))
time.sleep(20)
PY
filler=$!
for _ in $(seq 100); do [ -s "$T_DIR/filled" ] && break; sleep 0.1; done
[ -s "$T_DIR/filled" ] || { kill -CONT "$T_NODE_PID"; fail "the backlog was never full"; }
say "backlog full after $(cat "$T_DIR/filled") connections"
( sleep 1; kill -CONT "$T_NODE_PID" ) &
t0=$(date +%s%N)
"$PTCTL" --state-dir "$T_DIR/sd" --timeout 8000 status >"$T_DIR/status.out" 2>&1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill "$filler" 2>/dev/null; wait "$filler" 2>/dev/null
[ "$rc" = 0 ] || { cat "$T_DIR/status.out"; fail "ptctl status exited $rc over a full backlog"; }
[ "$ms" -ge 900 ] || fail "ptctl answered in $ms ms while the node was stopped: the backlog was not full"
say "ok: ptctl status answered after $ms ms, once the node drained its backlog"
"$PTCTL" --state-dir "$T_DIR/sd" stop >/dev/null 2>&1
t_node_wait 60
