#!/usr/bin/env bash
# Garbage, oversized, truncated and wrong-type frames on an SMP socket and on
# the control socket while a job runs: each bad connection is closed, an error
# is logged, the daemons keep serving, and the job ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 80 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 10)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
python3 - "$T_DIR/sd/smp.0.sock" "$T_DIR/sd/ptd.sock" <<'PY' || fail "a bad frame was not handled"
import os, socket, struct, sys
MAGIC, VER = 0x46525450, 1
def hdr(t, n, rid=1, magic=MAGIC, ver=VER):
    return struct.pack("<IHHIIQ", magic, ver, t, n, 0, rid)
cases = {
    "garbage": os.urandom(4096),
    "bad magic": hdr(16, 0, magic=0xdeadbeef),
    "bad version": hdr(16, 0, ver=99),
    "oversized": hdr(1, 0x7fffffff),
    "unknown type": hdr(999, 0),
    "truncated": hdr(1, 100) + b"\x0a\x03abc",
    "undecodable body": hdr(1, 16) + b"\xff" * 16,
    "wrong type for the socket": hdr(17, 0),
}
for path in sys.argv[1:]:
    for name, data in cases.items():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(data)
            if name == "truncated":
                s.shutdown(socket.SHUT_WR)
            got = s.recv(65536)
            # the daemon may answer an error frame, but must then close
            while got:
                got = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            print(f"{path}: {name}: connection not closed within 5 s"); sys.exit(1)
        s.close()
    print(f"{path}: {len(cases)} bad connections closed")
PY
"$PTCTL" --state-dir "$T_DIR/sd" status >/dev/null || fail "control socket stopped serving"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -Eq 'rpc: closing connection' "$T_DIR/node.log" || fail "no error logged for the bad connections"
t_check_digests $RANKS
