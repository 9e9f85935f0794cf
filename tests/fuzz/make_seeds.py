#!/usr/bin/env python3
"""make_seeds.py — writes tests/fuzz/seeds/: a few tiny, valid frames of
several types for the fuzz target to start from.

The frames are encoded here by hand (rpc/rpc.h header, protobuf wire format
of rpc/pt.proto), independently of the C code, so a seed the C parser
rejected would point at a disagreement about the format.
"""
import ctypes
import ctypes.util
import os
import struct

MAGIC, VERSION = 0x46525450, 1
HELLO, SLOT_REPLY, SEAL, REPLY, RESTORE_QUERY, STATE_REPLY, EVENT, STOP = 1, 4, 5, 6, 7, 12, 13, 18
AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF, BULK = 22, 23, 24, 25
RELEASE = 26


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


def zigzag(v):  # sint32
    return (v << 1) ^ (v >> 31)


def f_varint(field, v):
    return varint(field << 3 | 0) + varint(v)


def f_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def frame(ftype, req_id, body=b""):
    return struct.pack("<IHHIIQ", MAGIC, VERSION, ftype, len(body), 0, req_id) + body


region = f_bytes(1, b"w") + f_varint(2, 4096) + f_varint(3, 0)
hello = (f_bytes(1, b"job") + f_varint(2, 0) + f_varint(3, 2) + f_varint(4, 100)
         + f_bytes(5, region))
slot_reply = f_varint(1, zigzag(1)) + f_varint(5, 5)
seal = f_varint(1, 1) + f_varint(2, 2) + f_varint(3, 3) + f_varint(4, 1)
reply = f_varint(1, zigzag(-1009)) + f_bytes(2, b"x")
release = (f_varint(1, 1) + f_varint(2, 2) + f_varint(3, 3) + f_varint(4, zigzag(-5))
           + f_bytes(5, b"copy failed"))
slot_info = f_varint(1, 0) + f_varint(2, 3) + f_varint(3, 7) + f_varint(4, 1) + f_varint(5, 1)
state_reply = f_varint(1, 0) + f_varint(3, 1) + f_bytes(4, slot_info)
event = f_varint(1, 1) + f_varint(2, 0) + f_varint(3, 10)

def f_fixed32(field, v):
    return varint(field << 3 | 5) + struct.pack("<I", v)


auth_hello = f_varint(1, 1) + f_varint(2, 3) + f_bytes(3, b"cli") + f_bytes(4, bytes(range(32)))
auth_challenge = (f_varint(1, 7) + f_bytes(2, b"srv") + f_bytes(3, bytes(range(32, 64)))
                  + f_bytes(4, bytes(32)))
auth_proof = f_bytes(1, bytes(range(1, 33)))
bulk = f_varint(1, 2) + f_varint(2, 77) + f_varint(3, 4096) + f_varint(4, 16) + f_fixed32(5, 0x12345678)

# Bulk frames with their payloads, as a peer SMP would send them. The CRC is
# ISA-L's crc32_iscsi(payload, len, ~0), computed by the library itself.
isal = ctypes.CDLL(ctypes.util.find_library("isal") or "libisal.so.2")
isal.crc32_iscsi.restype = ctypes.c_uint32
isal.crc32_iscsi.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]


def crc32c(b):
    return isal.crc32_iscsi(b, len(b), 0xFFFFFFFF)


def bulk_frame(tag, payload, crc=None):
    crc = crc32c(payload) if crc is None else crc
    hdr = (f_varint(1, 1) + f_varint(2, tag) + f_varint(3, 0) + f_varint(4, len(payload))
           + f_fixed32(5, crc))
    return frame(BULK, 0, hdr) + payload


p1 = bytes((i * 7 + 3) & 0xFF for i in range(1500))
p2 = bytes((i * 13 + 1) & 0xFF for i in range(700))
p3 = bytes(range(200))

seeds = {
    # delivered (tag 0), CRC mismatch (tag 1), discarded by the receiver
    # (tag 3), then a control frame: the stream stays in step throughout
    "bulk_payloads.bin": bulk_frame(0, p1) + bulk_frame(1, p2, crc32c(p2) ^ 1)
    + bulk_frame(3, p3) + frame(STOP, 8),
    # a payload the peer's EOF cuts short
    "bulk_cut.bin": bulk_frame(2, p1)[:-600],
    # an empty payload, then one over the receiver's limit is not read
    "bulk_empty_then_big.bin": bulk_frame(4, b"") + frame(BULK, 0, f_varint(1, 1) + f_varint(2, 5)
                                                         + f_varint(3, 0) + f_varint(4, 1 << 40)
                                                         + f_fixed32(5, 0)),
    "auth_handshake.bin": frame(AUTH_HELLO, 0, auth_hello) + frame(AUTH_CHALLENGE, 0, auth_challenge)
    + frame(AUTH_PROOF, 0, auth_proof),
    "bulk_header.bin": frame(BULK, 0, bulk) + frame(STOP, 7),  # payload is not the parser's
    "hello.bin": frame(HELLO, 1, hello),
    "slot_reply.bin": frame(SLOT_REPLY, 2, slot_reply),
    "restore_query_empty.bin": frame(RESTORE_QUERY, 3),
    "event.bin": frame(EVENT, 0, event),
    "seal_then_reply.bin": frame(SEAL, 4, seal) + frame(REPLY, 4, reply),
    "state_reply.bin": frame(STATE_REPLY, 5, state_reply),
    "stop_empty.bin": frame(STOP, 6),
    "release_then_reply.bin": frame(RELEASE, 7, release) + frame(REPLY, 7, reply),
}

outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
os.makedirs(outdir, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)
