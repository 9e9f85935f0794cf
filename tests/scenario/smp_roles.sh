#!/usr/bin/env bash
# Who may speak to whom, under a real ptd node: on an SMP's socket a
# connection without a role may not COMMIT, SET_RESTORE, RECOVER or
# RECOVER_QUERY, a SUBSCRIBE
# without the node's secret is refused (each with PT_EROLE, logged, the
# connection closed), a HELLO from outside the session of the trainer the
# node started is refused with PT_EROLE and logged (a newline in its job
# name forges no log line; unit test client_text_escaped checks that such
# text is logged escaped), and
# 40 idle clients on the control socket do not lock ptctl out. The node's
# own SUBSCRIBE (with the secret of <state-dir>/node.secret) keeps working:
# commits go on and the job ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 80 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 10)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
[ "$(stat -c %a "$T_DIR/sd/node.secret")" = 600 ] || fail "node.secret is not mode 0600"
python3 - "$T_DIR/sd/smp.0.sock" "$T_DIR/sd/ptd.sock" "$PTCTL" "$T_DIR/sd" <<'PY' || fail "a forbidden request was not refused"
import os, socket, struct, subprocess, sys
smp, ctl, ptctl, sd = sys.argv[1:]
MAGIC, VER, EROLE = 0x46525450, 1, -1021
def varint(v):
    out = b""
    while True:
        b = v & 0x7f; v >>= 7
        if v: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(n, wt, payload):
    return varint(n << 3 | wt) + (varint(payload) if wt == 0 else varint(len(payload)) + payload)
def frame(t, body, rid=1):
    return struct.pack("<IHHIIQ", MAGIC, VER, t, len(body), 0, rid) + body
def recv_frame(s):
    h = b""
    while len(h) < 24:
        got = s.recv(24 - len(h))
        if not got: raise EOFError
        h += got
    _, _, t, n, _, _ = struct.unpack("<IHHIIQ", h)
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return t, body
def status_of(body):  # field 1, sint32 (zigzag)
    assert body[0] == 0x08, body[:4]
    v, shift, i = 0, 0, 1
    while True:
        v |= (body[i] & 0x7f) << shift; shift += 7
        if not body[i] & 0x80: break
        i += 1
    return (v >> 1) ^ -(v & 1)
def closed(s):
    try:
        while s.recv(65536): pass
    except ConnectionResetError: pass
    return True
def ask(t, body, want_close):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)
    s.connect(smp); s.sendall(frame(t, body))
    _, rep = recv_frame(s)
    st = status_of(rep)
    if want_close: closed(s)
    return st, s
RPC_HELLO, RPC_SUBSCRIBE, RPC_COMMIT, RPC_SET_RESTORE = 1, 10, 14, 15
RPC_RECOVER, RPC_RECOVER_QUERY = 68, 69
for name, t, body in [("COMMIT", RPC_COMMIT, field(1, 0, 1)),
                      ("SET_RESTORE{none}", RPC_SET_RESTORE, b""),
                      ("RECOVER", RPC_RECOVER, field(1, 0, 7)),
                      ("RECOVER_QUERY", RPC_RECOVER_QUERY, b""),
                      ("SUBSCRIBE", RPC_SUBSCRIBE,
                       field(1, 2, b"intruder") + field(2, 2, bytes(32)))]:
    st, s = ask(t, body, True)
    if st != EROLE: print(f"{name}: status {st}, not PT_EROLE"); sys.exit(1)
    s.close()
region = field(1, 2, b"w") + field(2, 0, 4096) + field(3, 0, 0)
hello = (field(1, 2, b"x\n<3>forged line") + field(2, 0, 0) + field(3, 0, 2) +
         field(4, 0, os.getpid()) + field(5, 2, region))
st, s = ask(RPC_HELLO, hello, False)
# from outside the session of the trainer the node started: refused first
if st != EROLE: print(f"a HELLO from outside the trainer's session: status {st}, not PT_EROLE"); sys.exit(1)
s.close()
idle = []
for i in range(40):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(ctl); idle.append(c)
for i in range(3):
    r = subprocess.run([ptctl, "--state-dir", sd, "status"], capture_output=True, timeout=10)
    if r.returncode != 0: print("ptctl status failed with 40 idle clients:", r.stderr); sys.exit(1)
print("refused: COMMIT, SET_RESTORE, RECOVER, RECOVER_QUERY, SUBSCRIBE; ptctl served past 40 idle clients")
PY
n=$(t_count_log 'commit step')
t_wait_count 'commit step' "$n" 30
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -q 'refusing COMMIT from pid [0-9]* on a role-less connection' "$T_DIR/node.log" || fail "no refusal of COMMIT logged"
grep -q 'refusing SET_RESTORE' "$T_DIR/node.log" || fail "no refusal of SET_RESTORE logged"
grep -q 'refusing RECOVER from pid [0-9]* on a role-less' "$T_DIR/node.log" || fail "no refusal of RECOVER logged"
grep -q 'refusing RECOVER_QUERY from pid [0-9]* on a role-less' "$T_DIR/node.log" || fail "no refusal of RECOVER_QUERY logged"
grep -q 'refusing SUBSCRIBE from pid [0-9]*: its secret is wrong' "$T_DIR/node.log" || fail "no refusal of SUBSCRIBE logged"
grep -q 'hello refused: hello from pid [0-9]* (session [0-9-]*): only the session of trainer pid' "$T_DIR/node.log" \
  || fail "no refusal of the HELLO from outside the trainer's session logged"
! grep -q '^<3>forged' "$T_DIR/node.log" || fail "a client forged a log line"
t_check_digests $RANKS
