/*
 * test_rpc_frame.c — the pure framing layer of rpc/rpc.h: header layout and
 * checks, the type table, pack/unpack round trips, garbage bodies, and the
 * incremental parser fed in every possible split, and what it says of
 * where a stream stands when a peer is closed.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

/* ---- helpers --------------------------------------------------------------- */

/* A frame the parser delivered, copied out of the callback. */
struct got {
  struct rpc_hdr h;
  uint8_t *body;
};

struct sink {
  struct got *v;
  size_t n, cap;
  int stop_after; /* return stop_rc from the nth frame (1-based); 0: never */
  int stop_rc;
};

static int sink_cb(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct sink *s = arg;

  ck_assert_ptr_nonnull(body);
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 16;
    s->v = realloc(s->v, s->cap * sizeof(*s->v));
    ck_assert_ptr_nonnull(s->v);
  }
  s->v[s->n].h = *h;
  s->v[s->n].body = malloc(h->length + 1);
  memcpy(s->v[s->n].body, body, h->length);
  s->n++;
  if (s->stop_after > 0 && (int)s->n == s->stop_after)
    return s->stop_rc;
  return 0;
}

static void sink_free(struct sink *s)
{
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i].body);
  free(s->v);
  memset(s, 0, sizeof(*s));
}

/* A stream of frames, with a record of what each one was. */
struct stream {
  uint8_t *buf;
  size_t len;
  struct got want[64];
  size_t nwant;
};

static void stream_add(struct stream *st, uint32_t type, uint64_t id,
                       const ProtobufCMessage *msg)
{
  uint8_t *f;
  size_t flen;

  ck_assert_int_eq(rpc_frame_pack(&f, &flen, type, id, msg), PT_OK);
  st->buf = realloc(st->buf, st->len + flen);
  memcpy(st->buf + st->len, f, flen);
  ck_assert_uint_lt(st->nwant, 64);
  struct got *g = &st->want[st->nwant++];
  g->h.type = type;
  g->h.length = (uint32_t)(flen - RPC_HDR_BYTES);
  g->h.flags = 0;
  g->h.request_id = id;
  g->body = st->buf + st->len + RPC_HDR_BYTES; /* fixed up below */
  st->len += flen;
  free(f);
  /* realloc may have moved the buffer: recompute every body pointer. */
  size_t off = 0;
  for (size_t i = 0; i < st->nwant; i++) {
    st->want[i].body = st->buf + off + RPC_HDR_BYTES;
    off += RPC_HDR_BYTES + st->want[i].h.length;
  }
}

/* A few frames of several types, empty bodies among them. */
static void stream_sample(struct stream *st)
{
  Pt__Region r0 = PT__REGION__INIT, r1 = PT__REGION__INIT;
  Pt__Region *regions[2] = {&r0, &r1};
  Pt__Hello hello = PT__HELLO__INIT;
  Pt__Seal seal = PT__SEAL__INIT;
  Pt__Reply reply = PT__REPLY__INIT;
  Pt__Event ev = PT__EVENT__INIT;

  memset(st, 0, sizeof(*st));
  r0.name = "params";
  r0.bytes = 1u << 30;
  r1.name = "adam.m";
  r1.bytes = 12345;
  r1.kind = 1;
  hello.job = "job7";
  hello.rank = 3;
  hello.world = 8;
  hello.pid = 4242;
  hello.n_regions = 2;
  hello.regions = regions;
  seal.slot = 2;
  seal.generation = 99;
  seal.step = 1000;
  seal.ok = true;
  reply.status = PT_EREGIONS;
  reply.message = "region table differs";
  ev.kind = PT__EVENT_KIND__EVENT_SEALED;
  ev.rank = 1;
  ev.has_step = true;
  ev.step = 77;

  stream_add(st, RPC_HELLO, 1, &hello.base);
  stream_add(st, RPC_RESTORE_QUERY, 2, NULL); /* empty body */
  stream_add(st, RPC_SEAL, UINT64_MAX, &seal.base);
  stream_add(st, RPC_STOP, 3, NULL);          /* empty body */
  stream_add(st, RPC_REPLY, 4, &reply.base);
  stream_add(st, RPC_EVENT, 0, &ev.base);
}

static void check_frames(const struct sink *s, const struct stream *st)
{
  ck_assert_uint_eq(s->n, st->nwant);
  for (size_t i = 0; i < s->n; i++) {
    ck_assert_uint_eq(s->v[i].h.type, st->want[i].h.type);
    ck_assert_uint_eq(s->v[i].h.length, st->want[i].h.length);
    ck_assert_uint_eq(s->v[i].h.request_id, st->want[i].h.request_id);
    ck_assert_uint_eq(s->v[i].h.flags, 0);
    ck_assert_mem_eq(s->v[i].body, st->want[i].body, st->want[i].h.length);
  }
}

/* ---- header ---------------------------------------------------------------- */

START_TEST(hdr_layout_and_round_trip)
{
  uint8_t b[RPC_HDR_BYTES];
  struct rpc_hdr h = {.type = RPC_STATE_REPLY, .length = 0x01020304,
                      .flags = 0xa0b0c0d0, .request_id = 0x1122334455667788ull};
  struct rpc_hdr out;

  rpc_hdr_encode(b, &h);
  /* The byte layout of rpc.h, written out by hand. */
  static const uint8_t want[RPC_HDR_BYTES] = {
      'P', 'T', 'R', 'F', 1, 0, 12, 0, 0x04, 0x03, 0x02, 0x01,
      0xd0, 0xc0, 0xb0, 0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
  ck_assert_mem_eq(b, want, RPC_HDR_BYTES);

  ck_assert_int_eq(rpc_hdr_decode(b, UINT32_MAX, &out), PT_OK);
  ck_assert_uint_eq(out.type, h.type);
  ck_assert_uint_eq(out.length, h.length);
  ck_assert_uint_eq(out.flags, h.flags);
  ck_assert_uint_eq(out.request_id, h.request_id);

  /* Every known type survives the trip; length == max is allowed. The
   * table has gaps between its ranges: a type in one is refused. */
  for (uint32_t t = 1; t <= RPC_TYPE_MAX_; t++) {
    struct rpc_hdr in = {.type = t, .length = 100, .request_id = t * 7};
    rpc_hdr_encode(b, &in);
    if (rpc_type_descriptor(t) == NULL) {
      ck_assert_int_ne(rpc_hdr_decode(b, 100, &out), PT_OK);
      ck_assert_str_eq(rpc_type_name(t), "UNKNOWN");
      continue;
    }
    ck_assert_int_eq(rpc_hdr_decode(b, 100, &out), PT_OK);
    ck_assert_uint_eq(out.type, t);
    ck_assert_uint_eq(out.request_id, t * 7);
  }
}
END_TEST

START_TEST(hdr_rejects_bad_fields)
{
  uint8_t good[RPC_HDR_BYTES], b[RPC_HDR_BYTES];
  struct rpc_hdr h = {.type = RPC_HELLO, .length = 10, .request_id = 5};
  struct rpc_hdr out;

  rpc_hdr_encode(good, &h);
  for (int i = 0; i < 4; i++) { /* any magic byte wrong */
    memcpy(b, good, sizeof(b));
    b[i] ^= 0x20;
    ck_assert_int_eq(rpc_hdr_decode(b, 1024, &out), PT_EPROTO);
  }
  memcpy(b, good, sizeof(b));
  b[4] = 2; /* version 2 */
  ck_assert_int_eq(rpc_hdr_decode(b, 1024, &out), PT_EPROTO);
  memcpy(b, good, sizeof(b));
  b[5] = 1; /* version 257 */
  ck_assert_int_eq(rpc_hdr_decode(b, 1024, &out), PT_EPROTO);
  static const uint16_t bad_types[] = {0, RPC_TYPE_MAX_ + 1, 0x100, 0xffff};
  for (size_t i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++) {
    memcpy(b, good, sizeof(b));
    b[6] = (uint8_t)bad_types[i];
    b[7] = (uint8_t)(bad_types[i] >> 8);
    ck_assert_int_eq(rpc_hdr_decode(b, 1024, &out), PT_EPROTO);
  }
  h.length = 1025;
  rpc_hdr_encode(b, &h);
  ck_assert_int_eq(rpc_hdr_decode(b, 1024, &out), PT_ETOOBIG);
  h.length = UINT32_MAX;
  rpc_hdr_encode(b, &h);
  ck_assert_int_eq(rpc_hdr_decode(b, RPC_MAX_BODY_DEFAULT, &out), PT_ETOOBIG);
}
END_TEST

START_TEST(type_table)
{
  /* The mapping written in rpc.h's enum comments. */
  static const struct {
    uint32_t type;
    const ProtobufCMessageDescriptor *desc;
  } map[] = {
      {RPC_HELLO, &pt__hello__descriptor},
      {RPC_HELLO_REPLY, &pt__hello_reply__descriptor},
      {RPC_SLOT_ACQUIRE, &pt__slot_acquire__descriptor},
      {RPC_SLOT_REPLY, &pt__slot_reply__descriptor},
      {RPC_SEAL, &pt__seal__descriptor},
      {RPC_REPLY, &pt__reply__descriptor},
      {RPC_RESTORE_QUERY, &pt__restore_query__descriptor},
      {RPC_RESTORE_REPLY, &pt__restore_reply__descriptor},
      {RPC_BYE, &pt__bye__descriptor},
      {RPC_SUBSCRIBE, &pt__subscribe__descriptor},
      {RPC_STATE_QUERY, &pt__state_query__descriptor},
      {RPC_STATE_REPLY, &pt__state_reply__descriptor},
      {RPC_EVENT, &pt__event__descriptor},
      {RPC_COMMIT, &pt__commit__descriptor},
      {RPC_SET_RESTORE, &pt__set_restore__descriptor},
      {RPC_STATUS_QUERY, &pt__status_query__descriptor},
      {RPC_STATUS_REPLY, &pt__status_reply__descriptor},
      {RPC_STOP, &pt__stop__descriptor},
      {RPC_PIN, &pt__pin__descriptor},
      {RPC_UNPIN, &pt__unpin__descriptor},
      {RPC_TRAINER_SET, &pt__trainer_set__descriptor},
      {RPC_AUTH_HELLO, &pt__auth_hello__descriptor},
      {RPC_AUTH_CHALLENGE, &pt__auth_challenge__descriptor},
      {RPC_AUTH_PROOF, &pt__auth_proof__descriptor},
      {RPC_BULK, &pt__bulk_header__descriptor},
      {RPC_RELEASE, &pt__release__descriptor},
      {RPC_NODE_REGISTER, &pt__node_register__descriptor},
      {RPC_NODE_REGISTER_REPLY, &pt__node_register_reply__descriptor},
      {RPC_HEARTBEAT, &pt__heartbeat__descriptor},
      {RPC_NODES_QUERY, &pt__nodes_query__descriptor},
      {RPC_NODES_REPLY, &pt__nodes_reply__descriptor},
      {RPC_JOB_START, &pt__job_start__descriptor},
      {RPC_JOB_STOP, &pt__job_stop__descriptor},
      {RPC_JOB_RESTORE, &pt__job_restore__descriptor},
      {RPC_JOB_REPLY, &pt__job_reply__descriptor},
      {RPC_JOBS_QUERY, &pt__jobs_query__descriptor},
      {RPC_JOBS_REPLY, &pt__jobs_reply__descriptor},
      {RPC_JOB_ASSIGN, &pt__job_assign__descriptor},
      {RPC_JOB_HALT, &pt__job_halt__descriptor},
      {RPC_JOB_PART_STATE, &pt__job_part_state__descriptor},
      {RPC_STEP_SEALED, &pt__step_sealed__descriptor},
      {RPC_JOB_PIN, &pt__job_pin__descriptor},
      {RPC_JOB_VOTE, &pt__job_vote__descriptor},
      {RPC_JOB_COMMIT, &pt__job_commit__descriptor},
      {RPC_JOB_UNPIN, &pt__job_unpin__descriptor},
      {RPC_FAULT, &pt__fault__descriptor},
      {RPC_FAULT_REPLY, &pt__fault_reply__descriptor},
      {RPC_STEP_PERSISTED, &pt__step_persisted__descriptor},
      {RPC_JOB_PERSISTED, &pt__job_persisted__descriptor},
      {RPC_DISK_PROBE, &pt__disk_probe__descriptor},
      {RPC_DISK_PROBE_REPLY, &pt__disk_probe_reply__descriptor},
      {RPC_JOB_PEERS, &pt__job_peers__descriptor},
      {RPC_PEERS_SET, &pt__peers_set__descriptor},
      {RPC_PEER_HELLO, &pt__peer_hello__descriptor},
      {RPC_PEER_READY, &pt__peer_ready__descriptor},
      {RPC_PEER_ACK, &pt__peer_ack__descriptor},
      {RPC_PEER_META, &pt__peer_meta__descriptor},
      {RPC_PEER_FETCH, &pt__peer_fetch__descriptor},
      {RPC_PEER_SKIP, &pt__peer_skip__descriptor},
      {RPC_RECOVER, &pt__recover__descriptor},
      {RPC_RECOVER_QUERY, &pt__recover_query__descriptor},
  };
  size_t known = 0;
  for (uint32_t t = 1; t <= RPC_TYPE_MAX_; t++)
    known += rpc_type_descriptor(t) != NULL;
  ck_assert_uint_eq(sizeof(map) / sizeof(map[0]), known);
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
    ck_assert_ptr_eq(rpc_type_descriptor(map[i].type), map[i].desc);
    ck_assert_ptr_nonnull(rpc_type_name(map[i].type));
    ck_assert_str_ne(rpc_type_name(map[i].type), "UNKNOWN");
  }
  ck_assert_str_eq(rpc_type_name(RPC_HELLO), "HELLO");
  ck_assert_ptr_null(rpc_type_descriptor(0));
  ck_assert_ptr_null(rpc_type_descriptor(RPC_TYPE_MAX_ + 1));
  ck_assert_ptr_null(rpc_type_descriptor(UINT32_MAX));
  ck_assert_ptr_nonnull(rpc_type_name(0));
  ck_assert_ptr_nonnull(rpc_type_name(UINT32_MAX));
}
END_TEST

/* ---- pack / unpack ----------------------------------------------------------- */

/* Packs msg, checks the header, unpacks the body. OUT: the new message. */
static ProtobufCMessage *round_trip(uint32_t type, uint64_t id,
                                    const ProtobufCMessage *msg)
{
  uint8_t *f;
  size_t len;
  struct rpc_hdr h;
  ProtobufCMessage *out;

  ck_assert_int_eq(rpc_frame_pack(&f, &len, type, id, msg), PT_OK);
  ck_assert_uint_ge(len, RPC_HDR_BYTES);
  ck_assert_int_eq(rpc_hdr_decode(f, RPC_MAX_BODY_DEFAULT, &h), PT_OK);
  ck_assert_uint_eq(h.type, type);
  ck_assert_uint_eq(h.request_id, id);
  ck_assert_uint_eq(h.length, len - RPC_HDR_BYTES);
  if (msg != NULL)
    ck_assert_uint_eq(h.length, protobuf_c_message_get_packed_size(msg));
  ck_assert_int_eq(rpc_body_unpack(type, f + RPC_HDR_BYTES, h.length, &out),
                   PT_OK);
  free(f);
  ck_assert_ptr_eq(out->descriptor, rpc_type_descriptor(type));
  return out;
}

START_TEST(pack_unpack_hello)
{
  Pt__Region r0 = PT__REGION__INIT, r1 = PT__REGION__INIT;
  Pt__Region *regions[2] = {&r0, &r1};
  Pt__Hello m = PT__HELLO__INIT;

  r0.name = "params";
  r0.bytes = 3ull << 32;
  r1.name = "rng";
  r1.bytes = 5000;
  r1.kind = 1;
  m.job = "llama-70b";
  m.rank = 17;
  m.world = 64;
  m.pid = 31337;
  m.n_regions = 2;
  m.regions = regions;
  Pt__Hello *o = (Pt__Hello *)round_trip(RPC_HELLO, 42, &m.base);
  ck_assert_str_eq(o->job, "llama-70b");
  ck_assert_uint_eq(o->rank, 17);
  ck_assert_uint_eq(o->world, 64);
  ck_assert_int_eq(o->pid, 31337);
  ck_assert_uint_eq(o->n_regions, 2);
  ck_assert_str_eq(o->regions[0]->name, "params");
  ck_assert_uint_eq(o->regions[0]->bytes, 3ull << 32);
  ck_assert_uint_eq(o->regions[0]->kind, 0);
  ck_assert_str_eq(o->regions[1]->name, "rng");
  ck_assert_uint_eq(o->regions[1]->bytes, 5000);
  ck_assert_uint_eq(o->regions[1]->kind, 1);
  protobuf_c_message_free_unpacked(&o->base, NULL);
}
END_TEST

START_TEST(pack_unpack_state_reply)
{
  Pt__SlotInfo s[3];
  Pt__SlotInfo *sp[3];
  Pt__StateReply m = PT__STATE_REPLY__INIT;

  for (int i = 0; i < 3; i++) {
    pt__slot_info__init(&s[i]);
    s[i].slot = (uint32_t)i;
    s[i].state = (uint32_t)(i + 2);
    s[i].step = 100u * (uint64_t)i;
    s[i].generation = 7u + (uint64_t)i;
    s[i].has_intact = (i != 1);
    s[i].intact = (i == 2);
    sp[i] = &s[i];
  }
  m.status = -ENOENT;
  m.rank = 5;
  m.n_slots = 3;
  m.slots = sp;
  m.has_trainer_pid = true;
  m.trainer_pid = 99;
  m.has_bytes_held = true;
  m.bytes_held = 1ull << 40;
  Pt__StateReply *o = (Pt__StateReply *)round_trip(RPC_STATE_REPLY, 7, &m.base);
  ck_assert_int_eq(o->status, -ENOENT);
  ck_assert_uint_eq(o->rank, 5);
  ck_assert_uint_eq(o->n_slots, 3);
  for (int i = 0; i < 3; i++) {
    ck_assert_uint_eq(o->slots[i]->slot, (uint32_t)i);
    ck_assert_uint_eq(o->slots[i]->state, (uint32_t)(i + 2));
    ck_assert_uint_eq(o->slots[i]->step, 100u * (uint64_t)i);
    ck_assert_uint_eq(o->slots[i]->generation, 7u + (uint64_t)i);
    ck_assert(o->slots[i]->has_intact == (i != 1));
    ck_assert(o->slots[i]->intact == (i == 2));
  }
  ck_assert(o->has_trainer_pid);
  ck_assert_int_eq(o->trainer_pid, 99);
  ck_assert(o->has_bytes_held);
  ck_assert_uint_eq(o->bytes_held, 1ull << 40);
  ck_assert(!o->has_store);
  ck_assert_ptr_null(o->message);
  protobuf_c_message_free_unpacked(&o->base, NULL);
}
END_TEST

START_TEST(pack_unpack_small_types)
{
  Pt__SetRestore sr = PT__SET_RESTORE__INIT; /* no step: start fresh */
  Pt__SetRestore *osr = (Pt__SetRestore *)round_trip(RPC_SET_RESTORE, 1, &sr.base);
  ck_assert(!osr->has_step);
  protobuf_c_message_free_unpacked(&osr->base, NULL);

  sr.has_step = true;
  sr.step = 0; /* present, and zero */
  osr = (Pt__SetRestore *)round_trip(RPC_SET_RESTORE, 2, &sr.base);
  ck_assert(osr->has_step);
  ck_assert_uint_eq(osr->step, 0);
  protobuf_c_message_free_unpacked(&osr->base, NULL);

  Pt__SlotReply slr = PT__SLOT_REPLY__INIT;
  slr.status = PT_SKIPPED;
  slr.has_committed_step = true;
  slr.committed_step = UINT64_MAX;
  Pt__SlotReply *oslr = (Pt__SlotReply *)round_trip(RPC_SLOT_REPLY, 3, &slr.base);
  ck_assert_int_eq(oslr->status, PT_SKIPPED);
  ck_assert(!oslr->has_slot);
  ck_assert_uint_eq(oslr->committed_step, UINT64_MAX);
  protobuf_c_message_free_unpacked(&oslr->base, NULL);

  Pt__RankStatus rs = PT__RANK_STATUS__INIT, *rsp[1] = {&rs};
  Pt__StatusReply st = PT__STATUS_REPLY__INIT;
  rs.rank = 0;
  rs.trainer_pid = 10;
  rs.smp_pid = 11;
  rs.state = "running";
  rs.restarts = 2;
  st.status = 0;
  st.job = "j";
  st.state = "running";
  st.n_ranks = 1;
  st.ranks = rsp;
  st.bytes_held = 123;
  st.restarts = 2;
  st.commits = 9;
  st.restores = 1;
  st.node_pid = 1;
  Pt__StatusReply *ost = (Pt__StatusReply *)round_trip(RPC_STATUS_REPLY, 4, &st.base);
  ck_assert_str_eq(ost->ranks[0]->state, "running");
  ck_assert_uint_eq(ost->ranks[0]->restarts, 2);
  ck_assert_uint_eq(ost->commits, 9);
  ck_assert(!ost->has_committed_step);
  protobuf_c_message_free_unpacked(&ost->base, NULL);

  /* The two phases of a commit and its abandonment carry a step each. */
  Pt__Pin pr = PT__PIN__INIT;
  pr.step = UINT64_MAX - 3;
  Pt__Pin *opr = (Pt__Pin *)round_trip(RPC_PIN, 7, &pr.base);
  ck_assert_uint_eq(opr->step, UINT64_MAX - 3);
  protobuf_c_message_free_unpacked(&opr->base, NULL);
  Pt__Unpin ab = PT__UNPIN__INIT;
  ab.step = 41;
  Pt__Unpin *oab = (Pt__Unpin *)round_trip(RPC_UNPIN, 8, &ab.base);
  ck_assert_uint_eq(oab->step, 41);
  protobuf_c_message_free_unpacked(&oab->base, NULL);
  /* Both bodies are one step field: only the frame type tells them apart,
   * so packing a Protect as an ABORT frame is refused, and a Protect's body
   * read under the ABORT type is an Abort of the same step. */
  uint8_t *f;
  size_t flen;
  ck_assert_int_eq(rpc_frame_pack(&f, &flen, RPC_UNPIN, 9, &pr.base), -EINVAL);
  ck_assert_int_eq(rpc_frame_pack(&f, &flen, RPC_PIN, 9, &pr.base), PT_OK);
  ProtobufCMessage *um = NULL;
  ck_assert_int_eq(rpc_body_unpack(RPC_UNPIN, f + RPC_HDR_BYTES,
                                   flen - RPC_HDR_BYTES, &um), PT_OK);
  ck_assert_ptr_eq(um->descriptor, &pt__unpin__descriptor);
  ck_assert_uint_eq(((Pt__Unpin *)um)->step, UINT64_MAX - 3);
  protobuf_c_message_free_unpacked(um, NULL);
  free(f);

  /* Empty messages: NULL and an initialised message give the same frame. */
  ProtobufCMessage *e = round_trip(RPC_STATUS_QUERY, 5, NULL);
  protobuf_c_message_free_unpacked(e, NULL);
  Pt__Stop stop = PT__STOP__INIT;
  e = round_trip(RPC_STOP, 6, &stop.base);
  protobuf_c_message_free_unpacked(e, NULL);
}
END_TEST

START_TEST(pack_rejects_caller_bugs)
{
  uint8_t *f = (uint8_t *)1;
  size_t len = 1;
  Pt__Seal seal = PT__SEAL__INIT;
  Pt__Hello hello = PT__HELLO__INIT; /* job (required string) left NULL */

  ck_assert_int_eq(rpc_frame_pack(&f, &len, 0, 1, NULL), -EINVAL);
  ck_assert_ptr_null(f);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_TYPE_MAX_ + 1, 1, NULL), -EINVAL);
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_HELLO, 1, &seal.base), -EINVAL);
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_HELLO, 1, &hello.base), -EINVAL);
  ck_assert_ptr_null(f);
}
END_TEST

START_TEST(unpack_garbage_is_eproto)
{
  ProtobufCMessage *m = (ProtobufCMessage *)1;
  /* A varint that never ends. */
  static const uint8_t endless[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  /* Field 1, length-delimited, claims 100 bytes, has 2. */
  static const uint8_t short_str[] = {0x0a, 100, 'a', 'b'};
  /* Wire type 7 does not exist. */
  static const uint8_t bad_wire[] = {0x0f, 0x00};
  /* A valid Seal missing its required "ok" field. */
  static const uint8_t no_ok[] = {0x08, 1, 0x10, 2, 0x18, 3};

  ck_assert_int_eq(rpc_body_unpack(RPC_SEAL, endless, sizeof(endless), &m),
                   PT_EPROTO);
  ck_assert_ptr_null(m);
  ck_assert_int_eq(rpc_body_unpack(RPC_HELLO, short_str, sizeof(short_str), &m),
                   PT_EPROTO);
  ck_assert_int_eq(rpc_body_unpack(RPC_REPLY, bad_wire, sizeof(bad_wire), &m),
                   PT_EPROTO);
  ck_assert_int_eq(rpc_body_unpack(RPC_SEAL, no_ok, sizeof(no_ok), &m),
                   PT_EPROTO);
  /* The same with ok appended decodes: the test above failed for the
   * missing field, not for the bytes before it. */
  static const uint8_t with_ok[] = {0x08, 1, 0x10, 2, 0x18, 3, 0x20, 1};
  ck_assert_int_eq(rpc_body_unpack(RPC_SEAL, with_ok, sizeof(with_ok), &m),
                   PT_OK);
  ck_assert_uint_eq(((Pt__Seal *)m)->step, 3);
  ck_assert(((Pt__Seal *)m)->ok);
  protobuf_c_message_free_unpacked(m, NULL);

  /* Empty body for a message with required fields. */
  ck_assert_int_eq(rpc_body_unpack(RPC_HELLO, NULL, 0, &m), PT_EPROTO);
  /* Unknown type. */
  ck_assert_int_eq(rpc_body_unpack(0, with_ok, sizeof(with_ok), &m), PT_EPROTO);

  /* A Hello body read as a Seal: field 1 has the wrong wire type. */
  Pt__Hello hello = PT__HELLO__INIT;
  hello.job = "j";
  uint8_t *f;
  size_t len;
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_HELLO, 1, &hello.base), PT_OK);
  ck_assert_int_eq(rpc_body_unpack(RPC_SEAL, f + RPC_HDR_BYTES,
                                   len - RPC_HDR_BYTES, &m), PT_EPROTO);
  free(f);

  /* Random bytes: any outcome but a crash or leak (ASan run). Fixed seed. */
  uint32_t x = 12345;
  uint8_t buf[64];
  int ok = 0, bad = 0;
  for (int i = 0; i < 20000; i++) {
    size_t n = (size_t)(i % 64);
    for (size_t j = 0; j < n; j++) {
      x = x * 1664525u + 1013904223u;
      buf[j] = (uint8_t)(x >> 24);
    }
    uint32_t type = 1 + (uint32_t)i % RPC_TYPE_MAX_;
    int rc = rpc_body_unpack(type, buf, n, &m);
    if (rc == PT_OK) {
      ok++;
      protobuf_c_message_free_unpacked(m, NULL);
    } else {
      ck_assert_int_eq(rc, PT_EPROTO);
      ck_assert_ptr_null(m);
      bad++;
    }
  }
  ck_assert_int_gt(bad, 0);
  ck_assert_int_gt(ok, 0); /* empty messages accept anything well-formed */
}
END_TEST

/* ---- parser ---------------------------------------------------------------- */

START_TEST(parser_every_split)
{
  struct stream st;
  stream_sample(&st);

  /* Two pieces, split at every position (0 and len: one piece plus empty). */
  for (size_t i = 0; i <= st.len; i++) {
    struct rpc_parser p;
    struct sink s = {0};
    rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
    ck_assert_int_eq(rpc_parser_feed(&p, st.buf, i, sink_cb, &s), PT_OK);
    ck_assert_int_eq(rpc_parser_feed(&p, st.buf + i, st.len - i, sink_cb, &s),
                     PT_OK);
    check_frames(&s, &st);
    ck_assert_uint_eq(p.hdr_have, 0);
    ck_assert_ptr_null(p.body);
    rpc_parser_release(&p);
    sink_free(&s);
  }

  /* Three pieces, at every pair of positions. */
  for (size_t i = 0; i <= st.len; i++) {
    for (size_t j = i; j <= st.len; j += 3) {
      struct rpc_parser p;
      struct sink s = {0};
      rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
      ck_assert_int_eq(rpc_parser_feed(&p, st.buf, i, sink_cb, &s), PT_OK);
      ck_assert_int_eq(rpc_parser_feed(&p, st.buf + i, j - i, sink_cb, &s), PT_OK);
      ck_assert_int_eq(rpc_parser_feed(&p, st.buf + j, st.len - j, sink_cb, &s),
                       PT_OK);
      check_frames(&s, &st);
      rpc_parser_release(&p);
      sink_free(&s);
    }
  }

  /* One byte at a time. */
  struct rpc_parser p;
  struct sink s = {0};
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  for (size_t i = 0; i < st.len; i++)
    ck_assert_int_eq(rpc_parser_feed(&p, st.buf + i, 1, sink_cb, &s), PT_OK);
  check_frames(&s, &st);
  rpc_parser_release(&p);
  sink_free(&s);
  free(st.buf);
}
END_TEST

START_TEST(parser_many_frames_per_feed)
{
  enum { N = 5000 };
  Pt__Commit c = PT__COMMIT__INIT;
  uint8_t *buf = NULL;
  size_t len = 0;

  for (int i = 0; i < N; i++) {
    uint8_t *f;
    size_t flen;
    c.step = (uint64_t)i * 1000003u;
    /* Every third one an empty STOP. */
    ck_assert_int_eq(rpc_frame_pack(&f, &flen, i % 3 ? RPC_COMMIT : RPC_STOP,
                                    (uint64_t)i + 1, i % 3 ? &c.base : NULL),
                     PT_OK);
    buf = realloc(buf, len + flen);
    memcpy(buf + len, f, flen);
    len += flen;
    free(f);
  }
  struct rpc_parser p;
  struct sink s = {0};
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  ck_assert_int_eq(rpc_parser_feed(&p, buf, len, sink_cb, &s), PT_OK);
  ck_assert_uint_eq(s.n, N);
  for (int i = 0; i < N; i++) {
    ck_assert_uint_eq(s.v[i].h.request_id, (uint64_t)i + 1);
    if (i % 3 == 0) {
      ck_assert_uint_eq(s.v[i].h.type, RPC_STOP);
      ck_assert_uint_eq(s.v[i].h.length, 0);
      continue;
    }
    ProtobufCMessage *m;
    ck_assert_int_eq(rpc_body_unpack(s.v[i].h.type, s.v[i].body, s.v[i].h.length,
                                     &m), PT_OK);
    ck_assert_uint_eq(((Pt__Commit *)m)->step, (uint64_t)i * 1000003u);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  rpc_parser_release(&p);
  sink_free(&s);

  /* The same stream in uneven pieces of 1..97 bytes. */
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  size_t off = 0, step = 1;
  while (off < len) {
    size_t n = step < len - off ? step : len - off;
    ck_assert_int_eq(rpc_parser_feed(&p, buf + off, n, sink_cb, &s), PT_OK);
    off += n;
    step = step % 97 + 1;
  }
  ck_assert_uint_eq(s.n, N);
  ck_assert_uint_eq(s.v[N - 1].h.request_id, N);
  rpc_parser_release(&p);
  sink_free(&s);
  free(buf);
}
END_TEST

/* Trailers (a TCP conn's tags): from the frame after the one whose
 * callback sets it, every frame carries 16 bytes after its body, handed
 * over at body + length, whatever the pieces. */
struct trail {
  struct rpc_parser *p;
  int n;
};

static int trail_cb(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct trail *t = arg;

  ck_assert_uint_eq(h->request_id, (uint64_t)t->n + 1);
  if (t->n > 0)
    for (unsigned i = 0; i < RPC_TAG_BYTES; i++)
      ck_assert_uint_eq(body[h->length + i], (uint8_t)(0xa0 + t->n + i));
  if (t->n == 0)
    rpc_parser_set_trailer(t->p, RPC_TAG_BYTES);
  t->n++;
  return 0;
}

START_TEST(parser_trailer)
{
  enum { N = 40 };
  Pt__Commit c = PT__COMMIT__INIT;
  uint8_t *buf = NULL;
  size_t len = 0;

  for (int i = 0; i < N; i++) {
    uint8_t *f;
    size_t flen;
    c.step = (uint64_t)i * 77;
    ck_assert_int_eq(rpc_frame_pack(&f, &flen, i % 4 ? RPC_COMMIT : RPC_STOP,
                                    (uint64_t)i + 1, i % 4 ? &c.base : NULL),
                     PT_OK);
    buf = realloc(buf, len + flen + RPC_TAG_BYTES);
    memcpy(buf + len, f, flen);
    len += flen;
    if (i > 0) /* the first one has none: the trailer starts after it */
      for (unsigned k = 0; k < RPC_TAG_BYTES; k++)
        buf[len++] = (uint8_t)(0xa0 + i + k);
    free(f);
  }
  for (size_t step = 0; step <= 37; step += 37) {
    struct rpc_parser p;
    struct trail t = {.p = &p};
    rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
    if (step == 0) {
      ck_assert_int_eq(rpc_parser_feed(&p, buf, len, trail_cb, &t), PT_OK);
    } else {
      for (size_t off = 0, n = 1; off < len; off += n, n = n % step + 1) {
        if (n > len - off)
          n = len - off;
        ck_assert_int_eq(rpc_parser_feed(&p, buf + off, n, trail_cb, &t),
                         PT_OK);
      }
    }
    ck_assert_int_eq(t.n, N);
    ck_assert_uint_eq(rpc_parser_want(&p), RPC_HDR_BYTES);
    /* A STOP's header and half its tag: 8 bytes of the trailer wanted. */
    uint8_t f[RPC_HDR_BYTES + 8];
    struct rpc_hdr h = {.type = RPC_STOP, .request_id = 99};
    rpc_hdr_encode(f, &h);
    memset(f + RPC_HDR_BYTES, 0, 8);
    ck_assert_int_eq(rpc_parser_feed(&p, f, sizeof(f), trail_cb, &t), PT_OK);
    ck_assert_int_eq(t.n, N); /* not delivered yet */
    ck_assert_uint_eq(rpc_parser_want(&p), 8);
    char where[160];
    rpc_parser_where(&p, where, sizeof(where));
    ck_assert_str_eq(where, "inside the tag of frame STOP, 8 of its 16 "
                            "bytes in");
    rpc_parser_release(&p);
  }
  free(buf);
}
END_TEST

START_TEST(parser_rejects_before_allocating)
{
  uint8_t b[RPC_HDR_BYTES];
  struct rpc_hdr h = {.type = RPC_HELLO, .length = UINT32_MAX, .request_id = 1};
  struct rpc_parser p;
  struct sink s = {0};

  /* Oversized length: refused with no body buffer, no callback. */
  rpc_hdr_encode(b, &h);
  rpc_parser_init(&p, 4096);
  ck_assert_int_eq(rpc_parser_feed(&p, b, 23, sink_cb, &s), PT_OK);
  ck_assert_int_eq(rpc_parser_feed(&p, b + 23, 1, sink_cb, &s), PT_ETOOBIG);
  ck_assert_ptr_null(p.body);
  ck_assert(p.failed);
  ck_assert_uint_eq(s.n, 0);
  /* Failed for good, even on valid input. */
  struct stream st;
  stream_sample(&st);
  ck_assert_int_eq(rpc_parser_feed(&p, st.buf, st.len, sink_cb, &s), PT_EPROTO);
  ck_assert_uint_eq(s.n, 0);
  rpc_parser_release(&p);

  /* Exactly max_body is fine, and split bodies are then buffered; the
   * buffer is taken only when body bytes arrive, and grows with them. */
  h.length = 4096;
  rpc_hdr_encode(b, &h);
  rpc_parser_init(&p, 4096);
  ck_assert_int_eq(rpc_parser_feed(&p, b, sizeof(b), sink_cb, &s), PT_OK);
  ck_assert_ptr_null(p.body);
  uint8_t one = 0;
  ck_assert_int_eq(rpc_parser_feed(&p, &one, 1, sink_cb, &s), PT_OK);
  ck_assert_ptr_nonnull(p.body);
  ck_assert_uint_eq(p.body_cap, 4096); /* min(length, RPC_BODY_CHUNK) */
  rpc_parser_release(&p);
  ck_assert_ptr_null(p.body);

  /* A large announced body: a peer that sent one byte of it holds one
   * chunk, not the length it announced. */
  h.length = 8u << 20;
  rpc_hdr_encode(b, &h);
  rpc_parser_init(&p, 16u << 20);
  ck_assert_int_eq(rpc_parser_feed(&p, b, sizeof(b), sink_cb, &s), PT_OK);
  ck_assert_int_eq(rpc_parser_feed(&p, &one, 1, sink_cb, &s), PT_OK);
  ck_assert_uint_eq(p.body_cap, RPC_BODY_CHUNK);
  rpc_parser_release(&p);

  /* Bad magic, version and type after a good frame: the good one arrives,
   * then the error, with no body allocated for the bad header. */
  static const struct { int off; uint8_t val; int rc; } bad[] = {
      {0, 'X', PT_EPROTO}, {4, 9, PT_EPROTO}, {6, 0, PT_EPROTO},
      {6, RPC_TYPE_MAX_ + 1, PT_EPROTO}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t two[2 * RPC_HDR_BYTES + 8];
    struct rpc_hdr g = {.type = RPC_STOP, .request_id = 1};
    struct rpc_hdr x = {.type = RPC_COMMIT, .length = 8, .request_id = 2};
    rpc_hdr_encode(two, &g);
    rpc_hdr_encode(two + RPC_HDR_BYTES, &x);
    two[RPC_HDR_BYTES + bad[i].off] = bad[i].val;
    memset(two + 2 * RPC_HDR_BYTES, 0, 8);
    rpc_parser_init(&p, 4096);
    ck_assert_int_eq(rpc_parser_feed(&p, two, sizeof(two), sink_cb, &s), bad[i].rc);
    ck_assert_uint_eq(s.n, 1);
    ck_assert_uint_eq(s.v[0].h.type, RPC_STOP);
    ck_assert_ptr_null(p.body);
    ck_assert_int_eq(rpc_parser_feed(&p, two, RPC_HDR_BYTES, sink_cb, &s), PT_EPROTO);
    ck_assert_uint_eq(s.n, 1);
    rpc_parser_release(&p);
    sink_free(&s);
  }
  free(st.buf);
}
END_TEST

START_TEST(parser_callback_stops)
{
  struct stream st;
  struct rpc_parser p;
  struct sink s = {.stop_after = 2, .stop_rc = -ECANCELED};

  stream_sample(&st);
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  ck_assert_int_eq(rpc_parser_feed(&p, st.buf, st.len, sink_cb, &s), -ECANCELED);
  ck_assert_uint_eq(s.n, 2); /* nothing after the frame that said stop */
  ck_assert_int_eq(rpc_parser_feed(&p, st.buf, st.len, sink_cb, &s), PT_EPROTO);
  ck_assert_uint_eq(s.n, 2);
  rpc_parser_release(&p);
  sink_free(&s);

  /* Stopping on a frame whose body spanned two pieces frees that body. */
  s.stop_after = 1;
  s.stop_rc = 7;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  ck_assert_int_eq(rpc_parser_feed(&p, st.buf, RPC_HDR_BYTES + 3, sink_cb, &s),
                   PT_OK);
  ck_assert_ptr_nonnull(p.body);
  ck_assert_int_eq(rpc_parser_feed(&p, st.buf + RPC_HDR_BYTES + 3,
                                   st.len - RPC_HDR_BYTES - 3, sink_cb, &s), 7);
  ck_assert_uint_eq(s.n, 1);
  ck_assert_uint_eq(s.v[0].h.type, RPC_HELLO);
  ck_assert_ptr_null(p.body);
  rpc_parser_release(&p);
  sink_free(&s);
  free(st.buf);
}
END_TEST

/* What the line that closes a peer says of the stream (rpc_parser_where). */
static void where_after(const uint8_t *data, size_t len, uint32_t max_body,
                        int stop_rc, const char *want)
{
  struct rpc_parser p;
  struct sink s = {.stop_after = 1, .stop_rc = stop_rc};
  char out[160];

  rpc_parser_init(&p, max_body);
  (void)rpc_parser_feed(&p, data, len, sink_cb, &s);
  rpc_parser_where(&p, out, sizeof(out));
  ck_assert_msg(strcmp(out, want) == 0, "'%s', want '%s'", out, want);
  rpc_parser_release(&p);
  sink_free(&s);
}

START_TEST(parser_where)
{
  uint8_t h[RPC_HDR_BYTES + 8] = {0};
  struct rpc_hdr hd = {.type = RPC_STATUS_QUERY, .length = 8};

  rpc_hdr_encode(h, &hd);
  where_after(h, 0, 64, 0, "");
  where_after(h, 10, 64, 0, "inside a frame header, 10 of its 24 bytes in");
  where_after(h, RPC_HDR_BYTES + 3, 64, 0,
              "inside frame STATUS_QUERY, 3 of its 8 body bytes in");
  where_after(h, sizeof(h), 64, 0, ""); /* delivered: between frames */
  where_after(h, sizeof(h), 64, PT_EPROTO,
              "at frame STATUS_QUERY of 8 bytes"); /* refused by its receiver */
  where_after(h, sizeof(h), 7, 0,
              "frame STATUS_QUERY of 8 bytes, over the limit of 7");
  uint8_t bad[RPC_HDR_BYTES];
  memcpy(bad, h, sizeof(bad));
  bad[4] = 9; /* version */
  where_after(bad, sizeof(bad), 64, 0,
              "a frame header of version 9; this side speaks 1");
  memcpy(bad, h, sizeof(bad));
  bad[6] = 0xe7, bad[7] = 0x03; /* type 999 */
  where_after(bad, sizeof(bad), 64, 0, "a frame of unknown type 999");
  memset(bad, 0x17, sizeof(bad));
  where_after(bad, sizeof(bad), 64, 0,
              "a frame header with magic 0x17171717, not 0x46525450");
}
END_TEST

static Suite *rpc_frame_suite(void)
{
  Suite *s = suite_create("rpc_frame");
  TCase *tc = tcase_create("frame");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, hdr_layout_and_round_trip);
  tcase_add_test(tc, hdr_rejects_bad_fields);
  tcase_add_test(tc, type_table);
  tcase_add_test(tc, pack_unpack_hello);
  tcase_add_test(tc, pack_unpack_state_reply);
  tcase_add_test(tc, pack_unpack_small_types);
  tcase_add_test(tc, pack_rejects_caller_bugs);
  tcase_add_test(tc, unpack_garbage_is_eproto);
  tcase_add_test(tc, parser_every_split);
  tcase_add_test(tc, parser_many_frames_per_feed);
  tcase_add_test(tc, parser_trailer);
  tcase_add_test(tc, parser_rejects_before_allocating);
  tcase_add_test(tc, parser_callback_stops);
  tcase_add_test(tc, parser_where);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(rpc_frame_suite());
}
