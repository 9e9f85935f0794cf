#!/usr/bin/env python3
"""tests/ctl_journal.py — reads and damages a controller's journal
(STATE_DIR/journal) for tests/scenario/cluster_journal.sh (stdlib only).

The format is common/journal.h's: a 16-byte header ("PTJOURN1", version
1), then records: payload length (le32), type (le32), CRC32C (le32) of the
length, type and payload, the payload. The controller's types and payloads
are daemon/controller/ctl_journal.c's (rpc/pt.proto, "controller journal
records"): 1 JOB, 2 EPOCH, 3 COMMIT (job 1, epoch 2, step 3), 4 END,
5 NODE.

  ctl_journal.py records FILE        one line per record:
                                     "INDEX OFFSET LENGTH TYPE [JOB EPOCH STEP]"
  ctl_journal.py tear FILE BYTES     cuts BYTES off the last record; prints
                                     "torn OFFSET TYPE STEP" (STEP of a COMMIT,
                                     else -) and "last_commit STEP" (the
                                     newest whole COMMIT left; - when none)
  ctl_journal.py flip FILE length|payload
                                     flips one bit in the record in the middle
                                     (in its length field, or in its payload);
                                     prints "flipped RECORD OFFSET BYTE_OFFSET"
"""
import struct
import sys

HDR, REC_HDR = 16, 12
TYPES = {1: "JOB", 2: "EPOCH", 3: "COMMIT", 4: "END", 5: "NODE"}


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return v, i


def fields(b):
    out, i = {}, 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        else:
            raise ValueError(f"wire type {wt}")
        out[f] = v
    return out


def records(data):
    if data[:8] != b"PTJOURN1":
        sys.exit("not a pt journal")
    off, out = HDR, []
    while off + REC_HDR <= len(data):
        n, t, _ = struct.unpack_from("<III", data, off)
        if off + REC_HDR + n > len(data):
            break
        payload = data[off + REC_HDR:off + REC_HDR + n]
        rec = {"off": off, "len": n, "type": t, "step": None}
        if t == 3:
            f = fields(payload)
            rec.update(job=f[1].decode(), epoch=f[2], step=f[3])
        out.append(rec)
        off += REC_HDR + n
    if off != len(data):
        sys.exit(f"journal has {len(data) - off} bytes after its last whole "
                 f"record")
    return out


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    data = bytearray(open(path, "rb").read())
    recs = records(data)
    if cmd == "records":
        for i, r in enumerate(recs):
            extra = (f" {r['job']} {r['epoch']} {r['step']}"
                     if r["type"] == 3 else "")
            print(f"{i} {r['off']} {r['len']} {TYPES.get(r['type'], r['type'])}"
                  f"{extra}")
    elif cmd == "tear":
        cut = int(sys.argv[3])
        last = recs[-1]
        if not 0 < cut < REC_HDR + last["len"]:
            sys.exit(f"cannot cut {cut} bytes off a record of "
                     f"{REC_HDR + last['len']}")
        with open(path, "r+b") as f:
            f.truncate(len(data) - cut)
        whole = [r["step"] for r in recs[:-1] if r["type"] == 3]
        print(f"torn {last['off']} {TYPES.get(last['type'], last['type'])} "
              f"{last['step'] if last['step'] is not None else '-'}")
        print(f"last_commit {whole[-1] if whole else '-'}")
    elif cmd == "flip":
        if len(recs) < 3:
            sys.exit(f"only {len(recs)} records: no middle one")
        i = len(recs) // 2
        r = recs[i]
        if sys.argv[3] == "length":
            at = r["off"] + 1  # its length, 256 x 0x10 = 4 KiB more
        else:
            at = r["off"] + REC_HDR + r["len"] // 2
        data[at] ^= 0x10
        open(path, "wb").write(bytes(data))
        print(f"flipped {i + 1} {r['off']} {at}")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
