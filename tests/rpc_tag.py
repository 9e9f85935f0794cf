"""tests/rpc_tag.py — the frame tags of rpc/rpc_tag.c for the Python test
helpers that speak the wire themselves (tests/ctl_hostile.py), stdlib only:
RFC 8439's ChaCha20 block function and Poly1305 in pure Python (slow, and
fine for the small frames of a test).

After the handshake each direction has a session key:
  BLAKE2b-256 keyed with the cluster key over
  b"pt-rpc-session-1" + nonce_c + nonce_s + (b"C" dialler's | b"S" acceptor's)
and every unit it sends (a frame: header and body; a bulk payload) carries
16 bytes after it: Poly1305 of the unit under the first 32 bytes of the
ChaCha20 block (counter 0) of the session key and the nonce
4 zero bytes + le64(n), n the unit's number in that direction from 0.
"""
import hashlib
import hmac
import struct

_M = 0xFFFFFFFF
TAG_BYTES = 16


def _qr(x, a, b, c, d):
    x[a] = (x[a] + x[b]) & _M
    x[d] ^= x[a]
    x[d] = ((x[d] << 16) | (x[d] >> 16)) & _M
    x[c] = (x[c] + x[d]) & _M
    x[b] ^= x[c]
    x[b] = ((x[b] << 12) | (x[b] >> 20)) & _M
    x[a] = (x[a] + x[b]) & _M
    x[d] ^= x[a]
    x[d] = ((x[d] << 8) | (x[d] >> 24)) & _M
    x[c] = (x[c] + x[d]) & _M
    x[b] ^= x[c]
    x[b] = ((x[b] << 7) | (x[b] >> 25)) & _M


def chacha20_block(key, counter, nonce):
    """RFC 8439 2.3: 64 bytes of keystream."""
    st = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    st += list(struct.unpack("<8I", key)) + [counter]
    st += list(struct.unpack("<3I", nonce))
    x = st[:]
    for _ in range(10):
        _qr(x, 0, 4, 8, 12)
        _qr(x, 1, 5, 9, 13)
        _qr(x, 2, 6, 10, 14)
        _qr(x, 3, 7, 11, 15)
        _qr(x, 0, 5, 10, 15)
        _qr(x, 1, 6, 11, 12)
        _qr(x, 2, 7, 8, 13)
        _qr(x, 3, 4, 9, 14)
    return struct.pack("<16I", *[(x[i] + st[i]) & _M for i in range(16)])


def poly1305(k, m):
    """RFC 8439 2.5: the 16-byte tag of m under the one-time key k."""
    r = int.from_bytes(k[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(k[16:32], "little")
    p, a = (1 << 130) - 5, 0
    for i in range(0, len(m), 16):
        a = ((a + int.from_bytes(m[i:i + 16] + b"\x01", "little")) * r) % p
    return ((a + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def tag(key, n, data):
    otk = chacha20_block(key, 0, b"\0" * 4 + struct.pack("<Q", n))[:32]
    return poly1305(otk, data)


def session_key(cluster_key, nonce_c, nonce_s, d):
    return hashlib.blake2b(b"pt-rpc-session-1" + nonce_c + nonce_s + d,
                           digest_size=32, key=cluster_key).digest()


class Session:
    """One conn's two directions, as the dialler (or the acceptor)."""

    def __init__(self, cluster_key, nonce_c, nonce_s, dialler=True):
        c = session_key(cluster_key, nonce_c, nonce_s, b"C")
        s = session_key(cluster_key, nonce_c, nonce_s, b"S")
        self.tx_key, self.rx_key = (c, s) if dialler else (s, c)
        self.tx_seq = self.rx_seq = 0

    def seal(self, unit):
        """unit + its tag, as our next unit out."""
        t = tag(self.tx_key, self.tx_seq, unit)
        self.tx_seq += 1
        return unit + t

    def check(self, unit, t):
        """True when t is the tag of unit as the peer's next unit."""
        want = tag(self.rx_key, self.rx_seq, unit)
        self.rx_seq += 1
        return hmac.compare_digest(want, t)


def selftest():
    """RFC 8439's vectors (2.5.2 and 2.6.2): raises when one fails."""
    k = bytes.fromhex("85d6be7857556d337f4452fe42d506a8"
                      "0103808afb0db2fd4abff6af4149f51b")
    want = bytes.fromhex("a8061dc1305136c6c22b8baf0c0127a9")
    if poly1305(k, b"Cryptographic Forum Research Group") != want:
        raise AssertionError("poly1305: RFC 8439 2.5.2")
    key = bytes(range(0x80, 0xA0))
    otk = chacha20_block(key, 0, bytes.fromhex("000000000001020304050607"))
    want = bytes.fromhex("8ad5a08b905f81cc815040274ab29471"
                         "a833b637e3fd0da508dbb8e2fdd1a646")
    if otk[:32] != want:
        raise AssertionError("chacha20 key generation: RFC 8439 2.6.2")
