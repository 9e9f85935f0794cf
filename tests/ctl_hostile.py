#!/usr/bin/env python3
"""tests/ctl_hostile.py — hostile clients on a ptd controller's TCP port,
for tests/scenario/cluster_hostile.sh (stdlib only).

  ctl_hostile.py PHASE --port P --key FILE --log CTL_LOG --pid CTL_PID
                 --ptctl PTCTL

Every PHASE checks, after each hostile connection, that the controller
closed it (within 5 s), that its pid is alive, and that `ptctl status
--json` still answers; it prints one line per case and, last, "refusals N"
(the connections it had refused before the handshake, which the
controller logs rate-limited: one line per 10 s, the rest counted in the
next line's "(N more like it dropped ...)" or, when none follows, in a line
of their own within 10 s more).

  postauth  the handshake done with the cluster key (as ptctl, or as a
            node), then oversized, truncated, garbage, bad-version,
            unknown-type, undecodable, out-of-role and re-handshake frames
            and a bulk frame, a frame with a flipped tag byte, one with no
            tag, a replayed frame and the controller's own reply sent
            back: each closed with its own log line naming the
            connection's port (these are not rate-limited);
  preauth   the same kinds before the handshake, a wrong proof, a
            slow-loris (part of a HELLO header, then silence: closed at the
            handshake deadline, 10 s) and, beside it, an authenticated
            node that sends part of a frame and stalls (closed when it has
            not registered 10 s after its last byte, with a line); then
            many silent connections at once: the controller holds at most
            64 handshakes and drops the oldest, and ptctl still gets in.

The frame header and the handshake are rpc/rpc.h's and rpc/rpc_auth.c's:
header "<IHHIIQ" (magic 0x46525450, version 1, type, body length, flags,
request id); AUTH_HELLO (22, handshake version 2), AUTH_CHALLENGE (23),
AUTH_PROOF (24) with HMAC-SHA512-256 (HMAC-SHA512 cut to 32 bytes) over
"pt-rpc-auth-1", the direction byte, both nonces, and each side's role
(le32) and node id. Every frame after the handshake carries a 16-byte tag
(tests/rpc_tag.py, rpc/rpc_tag.c).
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import rpc_tag

MAGIC, VER = 0x46525450, 1
AUTH_VERSION = 2      # rpc.h RPC_AUTH_VERSION
AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF, BULK = 22, 23, 24, 25
HEARTBEAT, NODES_QUERY, NODES_REPLY = 29, 30, 31
JOBS_QUERY = 36
ROLE_NODE, ROLE_CONTROLLER, ROLE_CTL = 1, 2, 3
CTL_MAX_BODY = 65536  # daemon/controller/ctl_conn.c
AUTH_MAX_BODY = 1024  # rpc.h RPC_AUTH_MAX_BODY
MAX_HANDSHAKES = 64   # rpc.h RPC_AUTH_PENDING_DEFAULT
AUTH_DEADLINE_S = 10  # rpc.h RPC_AUTH_TIMEOUT_MS
REGISTER_S = 10       # ctl_conn.c CTL_REGISTER_MS

A = None
failed = False


def fail(msg):
    global failed
    print(f"FAIL: {msg}", flush=True)
    failed = True


def hdr(t, n, rid=1, magic=MAGIC, ver=VER):
    return struct.pack("<IHHIIQ", magic, ver, t, n, 0, rid)


def frame(t, body=b"", rid=1):
    return hdr(t, len(body), rid) + body


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_uint(field, v):
    return varint(field << 3) + varint(v)


def pb_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_parse(b):
    """{field: value} of a flat message (varints and length-delimited)."""
    out, i = {}, 0
    while i < len(b):
        key, i = read_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        out[f] = v
    return out


def read_varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return v, i


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        got = s.recv(n - len(b))
        if not got:
            raise ConnectionError("closed")
        b += got
    return b


def recv_raw(s):
    """One frame as it came: (type, header, body)."""
    h = recv_exact(s, 24)
    magic, ver, t, n, _, rid = struct.unpack("<IHHIIQ", h)
    if magic != MAGIC:
        raise ValueError("bad magic from the controller")
    return t, h, recv_exact(s, n)


def recv_frame(s, sess=None):
    """(type, body); after the handshake (sess) its tag checked."""
    t, h, body = recv_raw(s)
    if sess is not None and not sess.check(h + body, recv_exact(s, 16)):
        raise ValueError(f"frame {sess.rx_seq - 1} from the controller "
                         f"failed its tag")
    return t, body


def mac(key, d, nc, ns, role_c, id_c, role_s, id_s):
    m = b"pt-rpc-auth-1" + d + nc + ns
    m += struct.pack("<I", role_c) + bytes([len(id_c)]) + id_c
    m += struct.pack("<I", role_s) + bytes([len(id_s)]) + id_s
    return hmac.new(key, m, hashlib.sha512).digest()[:32]


def connect():
    s = socket.create_connection(("127.0.0.1", A.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def hello_frame(role, node_id, nonce):
    body = pb_uint(1, AUTH_VERSION) + pb_uint(2, role) + \
        pb_bytes(3, node_id) + pb_bytes(4, nonce)
    return frame(AUTH_HELLO, body)


def handshake(s, role, node_id, key=None, proof=None):
    """The dialler's side; returns once the proof is sent, with the
    session whose tags every frame after it carries."""
    key = key if key is not None else A.keybytes
    nc = os.urandom(32)
    s.sendall(hello_frame(role, node_id, nc))
    t, body = recv_frame(s)
    if t != AUTH_CHALLENGE:
        raise ValueError(f"got type {t}, not AUTH_CHALLENGE")
    m = pb_parse(body)
    role_s, id_s, ns, mac_s = m[1], m[2], m[3], m[4]
    if role_s != ROLE_CONTROLLER:
        raise ValueError(f"peer role {role_s}")
    want = mac(key, b"S", nc, ns, role, node_id, role_s, id_s)
    if not hmac.compare_digest(want, mac_s):
        raise ValueError("the controller's MAC does not check")
    p = proof if proof is not None else mac(key, b"C", nc, ns, role,
                                            node_id, role_s, id_s)
    s.sendall(frame(AUTH_PROOF, pb_bytes(1, p)))
    return rpc_tag.Session(key, nc, ns)


def closed_by_peer(s, secs=5.0):
    """True when the controller closes s within secs (EOF or reset)."""
    s.settimeout(0.2)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            got = s.recv(65536)
            if not got:
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def log_text():
    with open(A.log, errors="replace") as f:
        return f.read()


def wait_log(pattern, secs=5.0):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if re.search(pattern, log_text()):
            return True
        time.sleep(0.05)
    return False


def ptctl_status():
    """The controller alive and answering, or a failure."""
    try:
        os.kill(A.pid, 0)
    except OSError:
        fail("the controller is gone")
        return
    r = subprocess.run([A.ptctl, "--controller", f"127.0.0.1:{A.port}",
                        "--key", A.key, "--timeout", "5000", "status",
                        "--json"], capture_output=True, text=True, timeout=15)
    if r.returncode != 0:
        fail(f"ptctl status: exit {r.returncode}: {r.stderr.strip()}")
        return
    try:
        json.loads(r.stdout)["jobs"]
    except (ValueError, KeyError) as e:
        fail(f"ptctl status --json: {e}: {r.stdout[:200]}")


def cpu_s():
    """The controller's CPU time so far (user + system), in seconds."""
    with open(f"/proc/{A.pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def sanity():
    """The handshake here is the real one: a NODES_QUERY is answered."""
    rpc_tag.selftest()
    s = connect()
    sess = handshake(s, ROLE_CTL, b"hostile")
    s.sendall(sess.seal(frame(NODES_QUERY, b"", rid=7)))
    t, _ = recv_frame(s, sess)  # its tag checks: our tags are the C side's
    s.sendall(sess.seal(frame(NODES_QUERY, b"", rid=8)))
    t2, _ = recv_frame(s, sess)
    s.close()
    if t != NODES_REPLY or t2 != NODES_REPLY:
        fail(f"NODES_QUERY after the handshake answered with type {t}, {t2}")
        sys.exit(1)
    print("sanity: authenticated, tagged NODES_QUERY answered twice",
          flush=True)


def flipped_tag(sess, s):
    """A NODES_QUERY whose tag has one bit flipped."""
    f = bytearray(sess.seal(frame(NODES_QUERY, b"", rid=3)))
    f[-1] ^= 0x01
    s.sendall(bytes(f))


def replayed(sess, s):
    """A NODES_QUERY, answered, then the same bytes again."""
    f = sess.seal(frame(NODES_QUERY, b"", rid=4))
    s.sendall(f)
    recv_frame(s, sess)
    s.sendall(f)


def reflected(sess, s):
    """The controller's reply, as it came, sent back to it."""
    s.sendall(sess.seal(frame(NODES_QUERY, b"", rid=5)))
    _, h, body = recv_raw(s)
    s.sendall(h + body + recv_exact(s, 16))


# ---- after the handshake ------------------------------------------------

class Tagged:
    """A frame to be sent with the conn's tag."""

    def __init__(self, f):
        self.frame = f


def postauth():
    sanity()
    # Each line names the connection (its port), what it proved it is,
    # and what was wrong with the stream.
    e = (r"rpc: closing connection from 127\.0\.0\.1:{port} \(role 3, node id "
         r"'hostile'\): ")
    cases = [
        # name, role, bytes, what the controller's line says
        ("oversized", ROLE_CTL, hdr(JOBS_QUERY, CTL_MAX_BODY + 1),
         e + r"message too large \(frame JOBS_QUERY of 65537 bytes, over "
         r"the limit of 65536\)"),
        ("oversized, body sent", ROLE_CTL,
         hdr(JOBS_QUERY, 4 * CTL_MAX_BODY) + b"\0" * (4 * CTL_MAX_BODY),
         e + r"message too large \(frame JOBS_QUERY of 262144 bytes"),
        ("truncated", ROLE_CTL, hdr(NODES_QUERY, 100) + b"\x0a\x03abc",
         e + r"protocol error \(inside frame NODES_QUERY, 5 of its 100 "
         r"body bytes in\)"),
        ("truncated header", ROLE_CTL, hdr(NODES_QUERY, 0)[:10],
         e + r"protocol error \(inside a frame header, 10 of its 24 bytes "
         r"in\)"),
        ("garbage", ROLE_CTL, b"\x17" * 64 + os.urandom(4000),
         e + r"protocol error \(a frame header with magic 0x17171717"),
        ("bad version", ROLE_CTL, hdr(NODES_QUERY, 0, ver=99),
         e + r"protocol error \(a frame header of version 99; this side speaks 1\)"),
        ("unknown type", ROLE_CTL, hdr(999, 0),
         e + r"protocol error \(a frame of unknown type 999\)"),
        # Tagged (a Tagged one is sealed with the conn's session): what is
        # wrong with them is their body, their type or the peer's role.
        ("undecodable body", ROLE_CTL,
         Tagged(frame(NODES_QUERY, b"\xff" * 16)),
         e + r"protocol error \(at frame NODES_QUERY of 16 bytes\)"),
        ("a second handshake", ROLE_CTL,
         Tagged(hello_frame(ROLE_CTL, b"again", os.urandom(32))),
         e + r"protocol error \(at frame AUTH_HELLO of "),
        ("a bulk frame", ROLE_CTL, Tagged(frame(BULK, b"")),
         e + r"protocol error \(at frame BULK of 0 bytes\)"),
        ("a node's frame from ptctl", ROLE_CTL,
         Tagged(frame(HEARTBEAT, pb_uint(1, 1))),
         r"closing ctl 127\.0\.0\.1:{port} \('hostile'\): HEARTBEAT is not "
         r"a ptctl request"),
        ("a node's query before NODE_REGISTER", ROLE_NODE,
         Tagged(frame(NODES_QUERY, b"")),
         r"closing node 127\.0\.0\.1:{port} \('hostile'\): sent NODES_QUERY "
         r"before NODE_REGISTER"),
        # Tags that do not check.
        ("a flipped tag byte", ROLE_CTL, flipped_tag,
         r"rpc: frame 0 from 127\.0\.0\.1:{port} failed its authentication "
         r"tag \(a NODES_QUERY frame of 0 body bytes\)"),
        ("no tag (a version-1 peer's frames)", ROLE_CTL,
         frame(NODES_QUERY, b"") * 2,
         r"rpc: frame 0 from 127\.0\.0\.1:{port} failed its authentication "
         r"tag"),
        ("a replayed frame", ROLE_CTL, replayed,
         r"rpc: frame 1 from 127\.0\.0\.1:{port} failed its authentication "
         r"tag"),
        ("its own reply sent back", ROLE_CTL, reflected,
         r"rpc: frame 1 from 127\.0\.0\.1:{port} failed its authentication "
         r"tag \(a NODES_REPLY frame"),
    ]
    for name, role, data, pattern in cases:
        s = connect()
        port = s.getsockname()[1]
        sess = handshake(s, role, b"hostile")
        try:
            if callable(data):
                data(sess, s)
            elif isinstance(data, Tagged):
                s.sendall(sess.seal(data.frame))
            elif name.startswith("truncated"):
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            else:
                s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed at the header, before the rest went
        if not closed_by_peer(s):
            fail(f"{name}: connection {port} not closed within 5 s")
        s.close()
        if not wait_log(pattern.format(port=port)):
            fail(f"{name}: no line /{pattern.format(port=port)}/ in the "
                 f"controller's log")
        ptctl_status()
        print(f"postauth: {name}: closed, logged, controller answers",
              flush=True)


# ---- before the handshake -------------------------------------------------

def preauth():
    refused = 0
    nc = os.urandom(32)
    hello = hello_frame(ROLE_CTL, b"hostile", nc)
    cases = [
        ("garbage", os.urandom(4096)),
        ("bad magic", hdr(AUTH_HELLO, 0, magic=0xDEADBEEF)),
        ("bad version", hdr(AUTH_HELLO, 0, ver=99)),
        ("oversized", hdr(AUTH_HELLO, AUTH_MAX_BODY + 1)),
        ("oversized, 2 GiB", hdr(AUTH_HELLO, 0x7FFFFFFF)),
        ("truncated", hello[: len(hello) // 2]),
        ("a frame before the handshake", frame(NODES_QUERY, b"")),
        ("undecodable hello", frame(AUTH_HELLO, b"\xff" * 16)),
        ("hello of another version",
         frame(AUTH_HELLO, pb_uint(1, 9) + pb_uint(2, ROLE_CTL) +
               pb_bytes(3, b"x") + pb_bytes(4, nc))),
        ("hello of version 1 (frames without tags)",
         frame(AUTH_HELLO, pb_uint(1, 1) + pb_uint(2, ROLE_CTL) +
               pb_bytes(3, b"x") + pb_bytes(4, nc))),
    ]

    # The slow-loris pair, beside the rest: part of a HELLO header and
    # silence; an authenticated node with part of a frame and silence.
    loris = {}

    def slow(tag, authed):
        try:
            s = connect()
            loris[tag + ".port"] = s.getsockname()[1]
            if authed:
                handshake(s, ROLE_NODE, b"loris")
            s.sendall(hdr(NODES_QUERY if authed else AUTH_HELLO, 50)[:10])
            t0 = time.monotonic()
            ok = closed_by_peer(s, secs=(AUTH_DEADLINE_S if not authed else
                                         REGISTER_S) + 5)
            loris[tag] = time.monotonic() - t0 if ok else None
            s.close()
        except Exception as e:  # reported below
            loris[tag] = f"{type(e).__name__}: {e}"
    threads = [threading.Thread(target=slow, args=("pre", False)),
               threading.Thread(target=slow, args=("post", True))]
    for t in threads:
        t.start()

    for name, data in cases:
        s = connect()
        port = s.getsockname()[1]
        try:
            s.sendall(data)
            if name == "truncated":
                s.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            pass
        if not closed_by_peer(s):
            fail(f"{name}: connection {port} not closed within 5 s")
        s.close()
        refused += 1
        ptctl_status()
        print(f"preauth: {name}: closed, controller answers", flush=True)
    # A proof that does not check (a replay, or a forger without the key).
    s = connect()
    handshake(s, ROLE_CTL, b"hostile", proof=b"\0" * 32)
    if not closed_by_peer(s):
        fail("a wrong proof: not closed within 5 s")
    s.close()
    refused += 1
    ptctl_status()
    print("preauth: a wrong proof: closed, controller answers", flush=True)

    # Holding them costs the controller nothing: no busy loop on a stalled
    # peer (its CPU time while they wait out their deadlines).
    c0, w0 = cpu_s(), time.monotonic()
    for t in threads:
        t.join(timeout=30)
    used, waited = cpu_s() - c0, time.monotonic() - w0
    if used > 0.25 * waited + 0.2:
        fail(f"the controller used {used:.2f} s of CPU in {waited:.1f} s "
             f"beside two stalled connections")
    print(f"preauth: controller CPU beside the stalled ones: {used:.2f} s in "
          f"{waited:.1f} s", flush=True)
    for tag, what, limit in (("pre", "slow-loris before the handshake",
                              AUTH_DEADLINE_S),
                             ("post", "authenticated node stalled in a "
                              "frame, unregistered", REGISTER_S)):
        v = loris.get(tag)
        if not isinstance(v, float):
            fail(f"{what}: {'not closed' if v is None else v}")
        elif not limit - 1.5 <= v <= limit + 3:
            fail(f"{what}: closed after {v:.1f} s, expected {limit} s")
        else:
            print(f"preauth: {what}: closed after {v:.1f} s", flush=True)
    refused += 1  # the slow-loris
    port = loris.get("post.port")
    pat = (r"closing node 127\.0\.0\.1:%s \('loris'\): it did not register "
           r"within %d ms" % (port, REGISTER_S * 1000))
    if not wait_log(pat, 2):
        fail(f"no line /{pat}/ in the controller's log")
    ptctl_status()

    # Many at once, saying nothing: the oldest beyond 64 are dropped at
    # once, and ptctl, which holds the key, still gets in.
    n = 300
    conns = [connect() for _ in range(n)]
    time.sleep(1.0)
    dropped = 0
    for s in conns:
        s.settimeout(0)
        try:
            if s.recv(1) == b"":
                dropped += 1
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            dropped += 1
    t0 = time.monotonic()
    ptctl_status()
    took = time.monotonic() - t0
    if dropped < n - MAX_HANDSHAKES:
        fail(f"{n} silent connections: only {dropped} dropped, expected "
             f">= {n - MAX_HANDSHAKES}")
    if took > 3:
        fail(f"ptctl status took {took:.1f} s beside {n} silent connections")
    print(f"preauth: {n} silent connections: {dropped} dropped at once; "
          f"ptctl answered in {took:.2f} s beside them", flush=True)
    for s in conns:
        s.close()
    refused += dropped
    print(f"refusals {refused}", flush=True)


def main():
    global A
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["postauth", "preauth"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--ptctl", required=True)
    A = p.parse_args()
    with open(A.key, "rb") as f:
        A.keybytes = f.read()
    {"postauth": postauth, "preauth": preauth}[A.phase]()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
