/*
 * rpc_frame.c — the pure framing layer of rpc.h: frame header encoding and
 * checking, the frame type <-> protobuf-c message table, packing a message
 * into one frame, unpacking a body, the incremental stream parser, and the
 * checks of the transport's own frames (handshake messages, bulk headers).
 * Nothing here does I/O; the libFuzzer target tests/fuzz/fuzz_frame.c drives
 * this file alone.
 *
 * Frame header (24 bytes, every field little-endian):
 *
 *   offset  bytes  field
 *   0       4      magic 0x46525450 (the bytes "PTRF")
 *   4       2      version (RPC_VERSION)
 *   6       2      type (enum rpc_type)
 *   8       4      body length
 *   12      4      flags (sent as 0; ignored on receipt, reserved)
 *   16      8      request id
 *
 * Invariants:
 *   - a header is checked completely (magic, version, known type, length
 *     against the receiver's maximum) before any byte of its body is
 *     allocated, so a hostile length can never make us allocate;
 *   - a parser that returned an error stays failed: the stream position is
 *     lost and only closing the connection makes sense.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "rpc/rpc.h"

/* ---- frame type table ---------------------------------------------------- */

struct type_entry {
  const char *name;
  const ProtobufCMessageDescriptor *desc;
};

static const struct type_entry type_table[RPC_TYPE_MAX_ + 1] = {
    [RPC_HELLO] = {"HELLO", &pt__hello__descriptor},
    [RPC_HELLO_REPLY] = {"HELLO_REPLY", &pt__hello_reply__descriptor},
    [RPC_SLOT_ACQUIRE] = {"SLOT_ACQUIRE", &pt__slot_acquire__descriptor},
    [RPC_SLOT_REPLY] = {"SLOT_REPLY", &pt__slot_reply__descriptor},
    [RPC_SEAL] = {"SEAL", &pt__seal__descriptor},
    [RPC_REPLY] = {"REPLY", &pt__reply__descriptor},
    [RPC_RESTORE_QUERY] = {"RESTORE_QUERY", &pt__restore_query__descriptor},
    [RPC_RESTORE_REPLY] = {"RESTORE_REPLY", &pt__restore_reply__descriptor},
    [RPC_BYE] = {"BYE", &pt__bye__descriptor},
    [RPC_SUBSCRIBE] = {"SUBSCRIBE", &pt__subscribe__descriptor},
    [RPC_STATE_QUERY] = {"STATE_QUERY", &pt__state_query__descriptor},
    [RPC_STATE_REPLY] = {"STATE_REPLY", &pt__state_reply__descriptor},
    [RPC_EVENT] = {"EVENT", &pt__event__descriptor},
    [RPC_COMMIT] = {"COMMIT", &pt__commit__descriptor},
    [RPC_SET_RESTORE] = {"SET_RESTORE", &pt__set_restore__descriptor},
    [RPC_STATUS_QUERY] = {"STATUS_QUERY", &pt__status_query__descriptor},
    [RPC_STATUS_REPLY] = {"STATUS_REPLY", &pt__status_reply__descriptor},
    [RPC_STOP] = {"STOP", &pt__stop__descriptor},
    [RPC_PIN] = {"PIN", &pt__pin__descriptor},
    [RPC_UNPIN] = {"UNPIN", &pt__unpin__descriptor},
    [RPC_TRAINER_SET] = {"TRAINER_SET", &pt__trainer_set__descriptor},
    [RPC_AUTH_HELLO] = {"AUTH_HELLO", &pt__auth_hello__descriptor},
    [RPC_AUTH_CHALLENGE] = {"AUTH_CHALLENGE", &pt__auth_challenge__descriptor},
    [RPC_AUTH_PROOF] = {"AUTH_PROOF", &pt__auth_proof__descriptor},
    [RPC_BULK] = {"BULK", &pt__bulk_header__descriptor},
    [RPC_RELEASE] = {"RELEASE", &pt__release__descriptor},
    [RPC_NODE_REGISTER] = {"NODE_REGISTER", &pt__node_register__descriptor},
    [RPC_NODE_REGISTER_REPLY] = {"NODE_REGISTER_REPLY",
                                 &pt__node_register_reply__descriptor},
    [RPC_HEARTBEAT] = {"HEARTBEAT", &pt__heartbeat__descriptor},
    [RPC_NODES_QUERY] = {"NODES_QUERY", &pt__nodes_query__descriptor},
    [RPC_NODES_REPLY] = {"NODES_REPLY", &pt__nodes_reply__descriptor},
    [RPC_JOB_START] = {"JOB_START", &pt__job_start__descriptor},
    [RPC_JOB_STOP] = {"JOB_STOP", &pt__job_stop__descriptor},
    [RPC_JOB_RESTORE] = {"JOB_RESTORE", &pt__job_restore__descriptor},
    [RPC_JOB_REPLY] = {"JOB_REPLY", &pt__job_reply__descriptor},
    [RPC_JOBS_QUERY] = {"JOBS_QUERY", &pt__jobs_query__descriptor},
    [RPC_JOBS_REPLY] = {"JOBS_REPLY", &pt__jobs_reply__descriptor},
    [RPC_JOB_ASSIGN] = {"JOB_ASSIGN", &pt__job_assign__descriptor},
    [RPC_JOB_HALT] = {"JOB_HALT", &pt__job_halt__descriptor},
    [RPC_JOB_PART_STATE] = {"JOB_PART_STATE", &pt__job_part_state__descriptor},
    [RPC_STEP_SEALED] = {"STEP_SEALED", &pt__step_sealed__descriptor},
    [RPC_JOB_PIN] = {"JOB_PIN", &pt__job_pin__descriptor},
    [RPC_JOB_VOTE] = {"JOB_VOTE", &pt__job_vote__descriptor},
    [RPC_JOB_COMMIT] = {"JOB_COMMIT", &pt__job_commit__descriptor},
    [RPC_JOB_UNPIN] = {"JOB_UNPIN", &pt__job_unpin__descriptor},
    [RPC_FAULT] = {"FAULT", &pt__fault__descriptor},
    [RPC_FAULT_REPLY] = {"FAULT_REPLY", &pt__fault_reply__descriptor},
    [RPC_STEP_PERSISTED] = {"STEP_PERSISTED", &pt__step_persisted__descriptor},
    [RPC_JOB_PERSISTED] = {"JOB_PERSISTED", &pt__job_persisted__descriptor},
    [RPC_DISK_PROBE] = {"DISK_PROBE", &pt__disk_probe__descriptor},
    [RPC_DISK_PROBE_REPLY] = {"DISK_PROBE_REPLY",
                              &pt__disk_probe_reply__descriptor},
    [RPC_JOB_PEERS] = {"JOB_PEERS", &pt__job_peers__descriptor},
    [RPC_PEERS_SET] = {"PEERS_SET", &pt__peers_set__descriptor},
    [RPC_PEER_HELLO] = {"PEER_HELLO", &pt__peer_hello__descriptor},
    [RPC_PEER_READY] = {"PEER_READY", &pt__peer_ready__descriptor},
    [RPC_PEER_ACK] = {"PEER_ACK", &pt__peer_ack__descriptor},
    [RPC_PEER_META] = {"PEER_META", &pt__peer_meta__descriptor},
    [RPC_PEER_FETCH] = {"PEER_FETCH", &pt__peer_fetch__descriptor},
    [RPC_PEER_SKIP] = {"PEER_SKIP", &pt__peer_skip__descriptor},
    [RPC_RECOVER] = {"RECOVER", &pt__recover__descriptor},
    [RPC_RECOVER_QUERY] = {"RECOVER_QUERY", &pt__recover_query__descriptor},
};

const ProtobufCMessageDescriptor *rpc_type_descriptor(uint32_t type)
{
  if (type == 0 || type > RPC_TYPE_MAX_)
    return NULL;
  return type_table[type].desc;
}

const char *rpc_type_name(uint32_t type)
{
  if (type == 0 || type > RPC_TYPE_MAX_ || type_table[type].name == NULL)
    return "UNKNOWN"; /* the table has gaps between its ranges */
  return type_table[type].name;
}

/* ---- header -------------------------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
  return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

static uint64_t get_le64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

void rpc_hdr_encode(uint8_t out[RPC_HDR_BYTES], const struct rpc_hdr *h)
{
  put_le32(out + 0, RPC_MAGIC);
  put_le16(out + 4, (uint16_t)RPC_VERSION);
  put_le16(out + 6, (uint16_t)h->type);
  put_le32(out + 8, h->length);
  put_le32(out + 12, h->flags);
  put_le64(out + 16, h->request_id);
}

int rpc_hdr_decode(const uint8_t in[RPC_HDR_BYTES], uint32_t max_body,
                   struct rpc_hdr *h)
{
  if (get_le32(in + 0) != RPC_MAGIC || get_le16(in + 4) != RPC_VERSION)
    return PT_EPROTO;
  uint32_t type = get_le16(in + 6);
  if (rpc_type_descriptor(type) == NULL)
    return PT_EPROTO;
  uint32_t length = get_le32(in + 8);
  if (length > max_body)
    return PT_ETOOBIG;
  h->type = type;
  h->length = length;
  h->flags = get_le32(in + 12);
  h->request_id = get_le64(in + 16);
  return PT_OK;
}

/* ---- pack / unpack ----------------------------------------------------- */

int rpc_frame_size(uint32_t type, const ProtobufCMessage *msg, size_t *len)
{
  const ProtobufCMessageDescriptor *desc = rpc_type_descriptor(type);
  size_t body = 0;

  if (desc == NULL)
    return -EINVAL;
  if (msg != NULL) {
    /* A message of another type, or one missing a required field (which
     * protobuf-c would dereference as NULL while packing), is a caller bug. */
    if (msg->descriptor != desc || !protobuf_c_message_check(msg))
      return -EINVAL;
    body = protobuf_c_message_get_packed_size(msg);
  }
  /* The length field, and libuv's buffer lengths, are 32-bit. */
  if (body > UINT32_MAX - RPC_HDR_BYTES)
    return PT_ETOOBIG;
  *len = RPC_HDR_BYTES + body;
  return PT_OK;
}

int rpc_frame_write(uint8_t *out, size_t len, uint32_t type,
                    uint64_t request_id, const ProtobufCMessage *msg)
{
  size_t body = len - RPC_HDR_BYTES;
  struct rpc_hdr h = {
      .type = type, .length = (uint32_t)body, .flags = 0, .request_id = request_id};

  rpc_hdr_encode(out, &h);
  if (msg != NULL && protobuf_c_message_pack(msg, out + RPC_HDR_BYTES) != body)
    return -EINVAL;
  return PT_OK;
}

int rpc_frame_pack(uint8_t **out, size_t *len, uint32_t type,
                   uint64_t request_id, const ProtobufCMessage *msg)
{
  size_t n;
  int rc;

  *out = NULL;
  *len = 0;
  rc = rpc_frame_size(type, msg, &n);
  if (rc != PT_OK)
    return rc;
  uint8_t *buf = malloc(n);
  if (buf == NULL)
    return -ENOMEM;
  rc = rpc_frame_write(buf, n, type, request_id, msg);
  if (rc != PT_OK) {
    free(buf);
    return rc;
  }
  *out = buf;
  *len = n;
  return PT_OK;
}

int rpc_body_unpack(uint32_t type, const uint8_t *body, size_t len,
                    ProtobufCMessage **msg)
{
  static const uint8_t empty[1];
  const ProtobufCMessageDescriptor *desc = rpc_type_descriptor(type);

  *msg = NULL;
  if (desc == NULL)
    return PT_EPROTO;
  if (body == NULL)
    body = empty;
  /* protobuf-c checks every length against len and refuses messages that
   * lack a required field; it has no size limit of its own, which is why
   * the caller checked len against its maximum in the header. */
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, body);
  if (m == NULL)
    return PT_EPROTO;
  *msg = m;
  return PT_OK;
}

/* ---- incremental parser ---------------------------------------------------- */

void rpc_parser_init(struct rpc_parser *p, uint32_t max_body)
{
  memset(p, 0, sizeof(*p));
  p->max_body = max_body;
}

void rpc_parser_set_trailer(struct rpc_parser *p, uint32_t n)
{
  p->trailer = n;
}

/* Bytes after the header of the frame being collected: body and trailer. */
static size_t frame_rest(const struct rpc_parser *p)
{
  return (size_t)p->cur.length + p->cur_trailer;
}

void rpc_parser_release(struct rpc_parser *p)
{
  free(p->body);
  p->body = NULL;
  p->hdr_have = 0;
  p->body_have = 0;
  p->body_cap = 0;
}

/* Delivers the frame whose header is p->cur and body is body. The parser is
 * reset to "between frames" before the callback runs, so the callback may
 * release the parser without leaving a dangling body behind. */
static int deliver(struct rpc_parser *p, const uint8_t *body, uint8_t *owned,
                   rpc_frame_cb on_frame, void *arg)
{
  static const uint8_t empty[1];
  struct rpc_hdr h = p->cur;

  p->hdr_have = 0;
  p->body = NULL;
  p->body_have = 0;
  p->body_cap = 0;
  int rc = on_frame(arg, &h, body != NULL ? body : empty);
  free(owned);
  if (rc != 0)
    p->failed = true; /* the rest of this feed is dropped: stream lost */
  return rc;
}

int rpc_parser_feed(struct rpc_parser *p, const uint8_t *data, size_t len,
                    rpc_frame_cb on_frame, void *arg)
{
  if (p->failed)
    return PT_EPROTO;

  for (;;) {
    if (p->hdr_have < RPC_HDR_BYTES) {
      if (len == 0)
        return PT_OK;
      size_t n = RPC_HDR_BYTES - p->hdr_have;
      if (n > len)
        n = len;
      memcpy(p->hdr + p->hdr_have, data, n);
      p->hdr_have += n;
      data += n;
      len -= n;
      if (p->hdr_have < RPC_HDR_BYTES)
        return PT_OK;
      int rc = rpc_hdr_decode(p->hdr, p->max_body, &p->cur);
      if (rc != PT_OK) {
        p->failed = true;
        return rc;
      }
      p->body_have = 0;
      p->cur_trailer = p->trailer;
      if (frame_rest(p) == 0) {
        rc = deliver(p, NULL, NULL, on_frame, arg);
        if (rc != 0)
          return rc;
        continue;
      }
      if (len >= frame_rest(p)) {
        /* The whole body is in this piece: hand it over in place. */
        const uint8_t *body = data;
        size_t blen = frame_rest(p);
        data += blen;
        len -= blen;
        rc = deliver(p, body, NULL, on_frame, arg);
        if (rc != 0)
          return rc;
        continue;
      }
      p->body_cap = 0;
    }

    /* Collecting a body that spans pieces. The buffer grows (doubling)
     * with the bytes that arrive rather than being allocated to the
     * announced length at once: a peer holds only as much memory as it
     * actually sent, whatever length it announced. */
    if (len == 0)
      return PT_OK;
    size_t n = frame_rest(p) - p->body_have;
    if (n > len)
      n = len;
    if (p->body_have + n > p->body_cap) {
      size_t cap = p->body_cap != 0 ? p->body_cap : RPC_BODY_CHUNK;
      while (cap < p->body_have + n)
        cap *= 2;
      if (cap > frame_rest(p))
        cap = frame_rest(p);
      uint8_t *nb = realloc(p->body, cap);
      if (nb == NULL) {
        p->failed = true;
        return -ENOMEM;
      }
      p->body = nb;
      p->body_cap = cap;
    }
    memcpy(p->body + p->body_have, data, n);
    p->body_have += n;
    data += n;
    len -= n;
    if (p->body_have < frame_rest(p))
      return PT_OK;
    uint8_t *body = p->body;
    int rc = deliver(p, body, body, on_frame, arg);
    if (rc != 0)
      return rc;
  }
}

size_t rpc_parser_want(const struct rpc_parser *p)
{
  if (p->hdr_have < RPC_HDR_BYTES)
    return RPC_HDR_BYTES - p->hdr_have;
  return frame_rest(p) - p->body_have;
}

void rpc_parser_where(const struct rpc_parser *p, char *out, size_t cap)
{
  const uint8_t *h = p->hdr;

  if (cap == 0)
    return;
  out[0] = '\0';
  if (p->hdr_have == 0) {
    if (p->failed) /* a whole frame that its receiver refused */
      snprintf(out, cap, "at frame %s of %" PRIu32 " bytes",
               rpc_type_name(p->cur.type), p->cur.length);
    return;
  }
  if (p->hdr_have < RPC_HDR_BYTES) {
    snprintf(out, cap, "inside a frame header, %zu of its %u bytes in",
             p->hdr_have, RPC_HDR_BYTES);
    return;
  }
  if (!p->failed) {
    if (p->body_have > p->cur.length)
      snprintf(out, cap, "inside the tag of frame %s, %zu of its %" PRIu32
               " bytes in", rpc_type_name(p->cur.type),
               p->body_have - p->cur.length, p->cur_trailer);
    else
      snprintf(out, cap, "inside frame %s, %zu of its %" PRIu32
               " body bytes in", rpc_type_name(p->cur.type), p->body_have,
               p->cur.length);
    return;
  }
  uint32_t type = get_le16(h + 6), len = get_le32(h + 8);
  if (get_le32(h) != RPC_MAGIC)
    snprintf(out, cap, "a frame header with magic 0x%08" PRIx32 ", not "
             "0x%08x", get_le32(h), RPC_MAGIC);
  else if (get_le16(h + 4) != RPC_VERSION)
    snprintf(out, cap, "a frame header of version %u; this side speaks %u",
             (unsigned)get_le16(h + 4), RPC_VERSION);
  else if (rpc_type_descriptor(type) == NULL)
    snprintf(out, cap, "a frame of unknown type %" PRIu32, type);
  else if (len > p->max_body)
    snprintf(out, cap, "frame %s of %" PRIu32 " bytes, over the limit of "
             "%" PRIu32, rpc_type_name(type), len, p->max_body);
  else
    snprintf(out, cap, "at frame %s of %" PRIu32 " bytes",
             rpc_type_name(type), len);
}

/* ---- the transport's frames ---------------------------------------------- */

static bool node_id_ok(const char *id)
{
  return id != NULL && strlen(id) <= RPC_NODE_ID_MAX;
}

int rpc_auth_msg_check(uint32_t type, const ProtobufCMessage *msg)
{
  if (msg == NULL || msg->descriptor != rpc_type_descriptor(type))
    return PT_EPROTO;
  switch (type) {
  case RPC_AUTH_HELLO: {
    const Pt__AuthHello *m = (const Pt__AuthHello *)msg;
    if (m->version != RPC_AUTH_VERSION || !node_id_ok(m->node_id) ||
        m->nonce.len != RPC_AUTH_NONCE_BYTES)
      return PT_EPROTO;
    return PT_OK;
  }
  case RPC_AUTH_CHALLENGE: {
    const Pt__AuthChallenge *m = (const Pt__AuthChallenge *)msg;
    if (!node_id_ok(m->node_id) || m->nonce.len != RPC_AUTH_NONCE_BYTES ||
        m->mac.len != RPC_AUTH_MAC_BYTES)
      return PT_EPROTO;
    return PT_OK;
  }
  case RPC_AUTH_PROOF: {
    const Pt__AuthProof *m = (const Pt__AuthProof *)msg;
    return m->mac.len == RPC_AUTH_MAC_BYTES ? PT_OK : PT_EPROTO;
  }
  default:
    return PT_EPROTO;
  }
}

int rpc_bulk_hdr_decode(const uint8_t *body, size_t len, uint64_t max_payload,
                        struct rpc_bulk_hdr *h)
{
  ProtobufCMessage *msg;
  int rc = rpc_body_unpack(RPC_BULK, body, len, &msg);

  if (rc != PT_OK)
    return rc;
  const Pt__BulkHeader *m = (const Pt__BulkHeader *)msg;
  h->kind = m->kind;
  h->tag = m->tag;
  h->offset = m->offset;
  h->length = m->length;
  h->crc32c = m->crc32c;
  protobuf_c_message_free_unpacked(msg, NULL);
  return h->length > max_payload ? PT_ETOOBIG : PT_OK;
}
