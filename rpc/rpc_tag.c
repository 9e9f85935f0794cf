/*
 * rpc_tag.c — the tags of frames after a TCP handshake (rpc.h, "Frame
 * tags"): the session keys, and Poly1305 under one-time keys, without I/O.
 * rpc_conn.c and rpc_bulk.c tag and check over libuv, rpc_sock_session.c
 * over blocking sockets.
 *
 * Session key of a direction (32 bytes):
 *
 *   crypto_generichash(out 32, key = the cluster key,
 *                      "pt-rpc-session-1" || nonce_c || nonce_s || dir)
 *
 * dir 'C' for the dialler's frames, 'S' for the acceptor's. Both nonces are
 * fresh per handshake (each side draws its own), so no two connections
 * share a key, whatever either peer replays.
 *
 * One-time key of unit n (a frame, or a bulk payload): the first 32 bytes
 * of crypto_stream_chacha20_ietf under the session key with the 12-byte
 * nonce 0x00000000 || le64(n), block counter 0: RFC 8439's Poly1305 key
 * generation, so the tag is ChaCha20-Poly1305's over the unit's bytes
 * (without its padding and lengths: the header already carries the body's
 * length, the proved bulk header the payload's). Invariants:
 *   - a one-time key serves exactly one unit: n advances with every unit
 *     tagged or checked, per direction, and a session is never reused;
 *   - tags are compared in constant time (crypto_verify_16);
 *   - keys are wiped with the conn (rpc_session_wipe).
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "pt.h"
#include "rpc/rpc.h"

#define SESSION_LABEL "pt-rpc-session-1"
#define SESSION_LABEL_BYTES (sizeof(SESSION_LABEL) - 1)

_Static_assert(sizeof(crypto_onetimeauth_state) <=
                   sizeof(((struct rpc_tag_ctx *)0)->opaque),
               "rpc_tag_ctx too small for crypto_onetimeauth_state");
_Static_assert(RPC_TAG_BYTES == crypto_onetimeauth_BYTES, "tag size");
_Static_assert(RPC_SESSION_KEY_BYTES == crypto_stream_chacha20_ietf_KEYBYTES,
               "session key size");
_Static_assert(RPC_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
                   RPC_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
               "cluster key as a BLAKE2b key");

static void derive(const struct rpc_handshake *hs, char dir,
                   uint8_t out[RPC_SESSION_KEY_BYTES])
{
  crypto_generichash_state st;
  uint8_t d = (uint8_t)dir;

  crypto_generichash_init(&st, hs->self.key, RPC_KEY_BYTES,
                          RPC_SESSION_KEY_BYTES);
  crypto_generichash_update(&st, (const uint8_t *)SESSION_LABEL,
                            SESSION_LABEL_BYTES);
  crypto_generichash_update(&st, hs->nonce_c, RPC_AUTH_NONCE_BYTES);
  crypto_generichash_update(&st, hs->nonce_s, RPC_AUTH_NONCE_BYTES);
  crypto_generichash_update(&st, &d, 1);
  crypto_generichash_final(&st, out, RPC_SESSION_KEY_BYTES);
  sodium_memzero(&st, sizeof(st));
}

int rpc_handshake_session(const struct rpc_handshake *hs,
                          struct rpc_session *s)
{
  memset(s, 0, sizeof(*s));
  if (!rpc_handshake_is_done(hs))
    return -EINVAL;
  derive(hs, hs->dialler ? 'C' : 'S', s->tx_key);
  derive(hs, hs->dialler ? 'S' : 'C', s->rx_key);
  return PT_OK;
}

void rpc_session_wipe(struct rpc_session *s)
{
  sodium_memzero(s, sizeof(*s));
}

void rpc_tag_begin(struct rpc_tag_ctx *t,
                   const uint8_t key[RPC_SESSION_KEY_BYTES], uint64_t seq)
{
  uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
  uint8_t otk[crypto_onetimeauth_KEYBYTES];

  for (int i = 0; i < 8; i++)
    nonce[4 + i] = (uint8_t)(seq >> (8 * i));
  crypto_stream_chacha20_ietf(otk, sizeof(otk), nonce, key);
  crypto_onetimeauth_init((crypto_onetimeauth_state *)(void *)t->opaque, otk);
  sodium_memzero(otk, sizeof(otk));
}

void rpc_tag_update(struct rpc_tag_ctx *t, const void *p, size_t n)
{
  if (n > 0)
    crypto_onetimeauth_update((crypto_onetimeauth_state *)(void *)t->opaque,
                              p, n);
}

void rpc_tag_final(struct rpc_tag_ctx *t, uint8_t tag[RPC_TAG_BYTES])
{
  crypto_onetimeauth_final((crypto_onetimeauth_state *)(void *)t->opaque,
                           tag);
  sodium_memzero(t, sizeof(*t));
}

bool rpc_tag_check(struct rpc_tag_ctx *t, const uint8_t tag[RPC_TAG_BYTES])
{
  uint8_t want[RPC_TAG_BYTES];

  rpc_tag_final(t, want);
  bool ok = crypto_verify_16(want, tag) == 0;
  sodium_memzero(want, sizeof(want));
  return ok;
}

void rpc_tag_seal(struct rpc_session *s, const uint8_t *frame, size_t len,
                  uint8_t tag[RPC_TAG_BYTES])
{
  struct rpc_tag_ctx t;

  rpc_tag_begin(&t, s->tx_key, s->tx_seq++);
  rpc_tag_update(&t, frame, len);
  rpc_tag_final(&t, tag);
}

bool rpc_tag_open(struct rpc_session *s, const struct rpc_hdr *h,
                  const uint8_t *body, const uint8_t tag[RPC_TAG_BYTES])
{
  struct rpc_tag_ctx t;
  uint8_t hdr[RPC_HDR_BYTES];

  /* The header as it came: decoding keeps every field, and the magic and
   * version it checked are the only ones there are. */
  rpc_hdr_encode(hdr, h);
  rpc_tag_begin(&t, s->rx_key, s->rx_seq++);
  rpc_tag_update(&t, hdr, sizeof(hdr));
  rpc_tag_update(&t, body, h->length);
  return rpc_tag_check(&t, tag);
}
