/*
 * rpc_sock_session.c — the blocking calls of rpc_sock.c with frame tags
 * (rpc.h, "blocking I/O with tags"), for ptctl and tests over TCP after
 * rpc_sock_session_handshake. libpt does not link this file (it needs
 * libsodium, and the trainer speaks to its SMP over a Unix socket, where
 * frames carry no tag).
 *
 * A frame goes out as one write of header, body and tag; one comes in as
 * its header (checked before anything is allocated), then body and tag
 * together, checked before the body is unpacked. Invariants: the tag of
 * every frame is checked before a byte of it is believed; a session whose
 * check failed (or whose stream broke) is lost, as rpc_sock.c's are.
 *
 * rpc_sock_call lives here too: the call loop is written once, in
 * rpc_sock_session_call, and an untagged session is the plain calls.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "rpc/rpc.h"

int rpc_sock_session_start(struct rpc_sock_session *s, int fd,
                           const struct rpc_handshake *hs)
{
  memset(s, 0, sizeof(*s));
  s->fd = fd;
  if (hs == NULL)
    return PT_OK;
  int rc = rpc_handshake_session(hs, &s->keys);
  if (rc == PT_OK)
    s->tagged = true;
  return rc;
}

void rpc_sock_session_release(struct rpc_sock_session *s)
{
  rpc_session_wipe(&s->keys);
  s->tagged = false;
}

int rpc_sock_session_send(struct rpc_sock_session *s, uint32_t type,
                          uint64_t request_id, const ProtobufCMessage *msg,
                          uint64_t deadline_ms)
{
  size_t len;
  int rc;

  if (!s->tagged)
    return rpc_sock_send(s->fd, type, request_id, msg, deadline_ms);
  rc = rpc_frame_size(type, msg, &len);
  if (rc != PT_OK)
    return rc;
  uint8_t *frame = malloc(len + RPC_TAG_BYTES);
  if (frame == NULL)
    return -ENOMEM;
  rc = rpc_frame_write(frame, len, type, request_id, msg);
  if (rc == PT_OK) {
    rpc_tag_seal(&s->keys, frame, len, frame + len);
    rc = rpc_sock_write_all(s->fd, frame, len + RPC_TAG_BYTES, deadline_ms);
  }
  free(frame);
  return rc;
}

int rpc_sock_session_send_bulk(struct rpc_sock_session *s,
                               const struct rpc_bulk_hdr *h,
                               const void *payload, uint64_t deadline_ms)
{
  Pt__BulkHeader m = PT__BULK_HEADER__INIT;
  struct rpc_tag_ctx t;
  uint8_t tag[RPC_TAG_BYTES];

  m.kind = h->kind;
  m.tag = h->tag;
  m.offset = h->offset;
  m.length = h->length;
  m.crc32c = h->crc32c;
  int rc = rpc_sock_session_send(s, RPC_BULK, 0, &m.base, deadline_ms);
  if (rc != PT_OK)
    return rc;
  rc = rpc_sock_write_all(s->fd, payload, (size_t)h->length, deadline_ms);
  if (rc != PT_OK || !s->tagged)
    return rc;
  rpc_tag_begin(&t, s->keys.tx_key, s->keys.tx_seq++);
  rpc_tag_update(&t, payload, (size_t)h->length);
  rpc_tag_final(&t, tag);
  return rpc_sock_write_all(s->fd, tag, sizeof(tag), deadline_ms);
}

int rpc_sock_session_recv(struct rpc_sock_session *s, uint32_t max_body,
                          uint64_t deadline_ms, struct rpc_hdr *h,
                          ProtobufCMessage **msg)
{
  uint8_t hdr[RPC_HDR_BYTES];
  int rc;

  if (!s->tagged)
    return rpc_sock_recv(s->fd, max_body, deadline_ms, h, msg);
  *msg = NULL;
  if (max_body == 0)
    max_body = RPC_MAX_BODY_DEFAULT;
  rc = rpc_sock_read_all(s->fd, hdr, sizeof(hdr), deadline_ms);
  if (rc < 0)
    return rc;
  rc = rpc_hdr_decode(hdr, max_body, h);
  if (rc < 0)
    return rc;
  uint8_t *body = malloc((size_t)h->length + RPC_TAG_BYTES);
  if (body == NULL)
    return -ENOMEM;
  rc = rpc_sock_read_all(s->fd, body, (size_t)h->length + RPC_TAG_BYTES,
                         deadline_ms);
  if (rc == PT_OK && !rpc_tag_open(&s->keys, h, body, body + h->length))
    rc = -EACCES;
  if (rc == PT_OK)
    rc = rpc_body_unpack(h->type, body, h->length, msg);
  free(body);
  return rc;
}

/* The one call loop, tagged or not (rpc_sock_session_send and _recv fall
 * through to the plain calls on an untagged session). */
int rpc_sock_session_call(struct rpc_sock_session *s, uint32_t type,
                          const ProtobufCMessage *req, uint32_t reply_type,
                          int timeout_ms, ProtobufCMessage **reply)
{
  uint64_t id = rpc_sock_next_id();
  uint64_t deadline =
      rpc_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  int rc;

  *reply = NULL;
  rc = rpc_sock_session_send(s, type, id, req, deadline);
  if (rc < 0)
    return rc;
  for (;;) {
    struct rpc_hdr h;
    ProtobufCMessage *msg;

    rc = rpc_sock_session_recv(s, RPC_MAX_BODY_DEFAULT, deadline, &h, &msg);
    if (rc < 0)
      return rc;
    if (h.type == RPC_EVENT || h.request_id != id) {
      protobuf_c_message_free_unpacked(msg, NULL);
      continue;
    }
    if (h.type != reply_type) {
      protobuf_c_message_free_unpacked(msg, NULL);
      return PT_EPROTO;
    }
    *reply = msg;
    return PT_OK;
  }
}

int rpc_sock_call(int fd, uint32_t type, const ProtobufCMessage *req,
                  uint32_t reply_type, int timeout_ms, ProtobufCMessage **reply)
{
  struct rpc_sock_session s = {.fd = fd, .tagged = false};

  return rpc_sock_session_call(&s, type, req, reply_type, timeout_ms, reply);
}
