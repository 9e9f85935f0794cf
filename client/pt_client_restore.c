/*
 * pt_client_restore.c — libpt: pt_restore(), which copies the step the node
 * names back into the registered regions, and the blob that each snapshot
 * stores beside them (pt_blob_set(), pt_blob_get()).
 * See pt_client_internal.h for the invariants.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pt_client_internal.h"

/* ---- restore ---- */

#define RESTORE_STALL_MS 15000u   /* progress answers with no new bytes for
                                   * this long: given up (the SMP gives up
                                   * after 9 s itself) */
#define RESTORE_PROGRESS_LOG_MS 10000u

/* RESTORE_QUERY until its answer is final: an SMP rebuilding the step from
 * its coding group answers -EINPROGRESS with the bytes received so far
 * before our request deadline, and we ask again for as long as bytes keep
 * coming (the SMP gives up once none came for its own deadline;
 * RESTORE_STALL_MS without progress bounds the wait here too). */
static int restore_query(pt_client *c, ProtobufCMessage **out)
{
  Pt__RestoreQuery req = PT__RESTORE_QUERY__INIT;
  uint64_t seen = 0, logged_ms = 0, t0 = rpc_now_ms(), moved_ms = t0;

  req.has_wait_ms = true;
  req.wait_ms = (uint32_t)c->timeout_ms;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int rc = client_session_call(c, RPC_RESTORE_QUERY, &req.base,
                                 RPC_RESTORE_REPLY, client_deadline_after(c),
                                 &m, NULL);
    if (rc != 0)
      return rc;
    const Pt__RestoreReply *r = (const Pt__RestoreReply *)m;
    if (r->status != -EINPROGRESS) {
      *out = m;
      return 0;
    }
    uint64_t done = r->has_done_bytes ? r->done_bytes : 0;
    uint64_t now = rpc_now_ms();
    if (done > seen) {
      seen = done;
      moved_ms = now;
    }
    if (now >= moved_ms + RESTORE_STALL_MS) {
      client_log(c, PT_LOG_ERROR, "pt: restore given up after %llu ms: the "
                 "SMP's rebuild of the step received nothing for %u ms (%s)",
                 (unsigned long long)(now - t0), RESTORE_STALL_MS,
                 r->message ? r->message : "no detail");
      protobuf_c_message_free_unpacked(m, NULL);
      return -ETIMEDOUT;
    }
    /* Nothing new (an SMP waiting for the node's restore point answers at
     * once): a short pause, not a busy loop of requests. */
    if (done == 0) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (logged_ms == 0 || now >= logged_ms + RESTORE_PROGRESS_LOG_MS) {
      client_log(c, PT_LOG_INFO, "pt: restore waits: %s",
                 r->message ? r->message : "the SMP is rebuilding the step");
      logged_ms = now;
    }
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

int pt_restore(pt_client *c, uint64_t *step)
{
  ProtobufCMessage *m = NULL;
  Pt__RestoreReply *r;
  struct snap_slot_info info;
  uint32_t slot;
  uint64_t gen, s, busy_step = 0;
  size_t bad_x = 0, bad_b = 0;
  int rc;

  if (c == NULL || step == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  if (client_pending_settle(c, &busy_step, UINT64_MAX) != 0) {
    client_log(c, PT_LOG_ERROR,
               "pt: restore refused: the copy of step %llu is in flight "
               "(call pt_fence first)", (unsigned long long)busy_step);
    return PT_EINFLIGHT;
  }
  if ((rc = client_table_freeze(c)) != 0)
    return rc;

  rc = restore_query(c, &m);
  if (rc != 0)
    return rc;
  r = (Pt__RestoreReply *)m;
  rc = r->status;
  if (rc == PT_ENOSNAP) {
    client_log(c, PT_LOG_INFO, "pt: no snapshot to restore: a fresh start");
    c->restore_called = true;
    c->has_committed = false; /* the node chose a fresh start */
    goto out_free;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP cannot name a step to restore: %s",
               r->message ? r->message : pt_strerror(rc));
    goto out_free;
  }
  if (!r->has_slot || !r->has_generation || !r->has_step ||
      r->slot >= snap_store_nslots(c->store)) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP's restore reply is malformed");
    rc = PT_EPROTO;
    goto out_free;
  }
  slot = r->slot;
  gen = r->generation;
  s = r->step;

  snap_slot_get(c->store, slot, &info);
  if (!info.record_ok) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u of '%s' fails its record checksum (its step, "
               "generation or state was changed): step %llu is not restored",
               slot, c->shm_name, (unsigned long long)s);
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  if (!snap_state_holds_data(info.state) || info.generation != gen ||
      info.step != s) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u no longer holds step %llu (state %s, step %llu)",
               slot, (unsigned long long)s, snap_state_name(info.state),
               (unsigned long long)info.step);
    rc = PT_ESTALE;
    goto out_free;
  }
  const char *data = snap_slot_data(c->store, slot);
  uint32_t *crcs = snap_slot_crcs(c->store, slot);
  snap_populate_hint(c->populate, data, snap_store_slot_bytes(c->store));
  for (size_t i = 0; i < c->nregions; i++) {
    const struct snap_region *sr = snap_store_region(c->store, (uint32_t)i);
    c->xfers[i] = (struct kern_xfer){
      .dst = c->regions[i].ptr,
      .src = data + sr->offset,
      .bytes = c->regions[i].bytes,
      .crcs = crcs + sr->first_block,
      .src_mem = KERN_MEM_HOST,
      .dst_mem = c->regions[i].kind == PT_MEM_DEVICE ? KERN_MEM_DEVICE
                                                      : KERN_MEM_HOST,
    };
  }
  c->rblob_ok = false; /* whatever a failure leaves, it is no blob */
  rc = kern_restore(c->engine, c->xfers, c->nregions, &bad_x, &bad_b);
  if (rc == PT_ECHECKSUM) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu is damaged: region '%s' block %zu fails its "
               "checksum; the regions must not be used",
               (unsigned long long)s,
               bad_x < c->nregions ? c->regions[bad_x].name : "?", bad_b);
    goto out_free;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: restore of step %llu failed: %s",
               (unsigned long long)s, pt_strerror(rc));
    goto out_free;
  }
  /* The blob, into a private buffer first, then checked there. */
  if (info.blob_bytes > snap_store_blob_max(c->store)) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu records a blob of %u bytes, more than %u",
               (unsigned long long)s, info.blob_bytes,
               snap_store_blob_max(c->store));
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  if (c->rblob == NULL && (c->rblob = malloc(PT_BLOB_MAX)) == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  memcpy(c->rblob, snap_slot_blob(c->store, slot), info.blob_bytes);
  if (crc32c(c->rblob, info.blob_bytes) != info.blob_crc) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu is damaged: its blob of %u bytes fails its "
               "checksum; the regions must not be used",
               (unsigned long long)s, info.blob_bytes);
    c->rblob_ok = false;
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  /* The slot must still be the one we read: a writer reusing it meanwhile
   * would have changed its generation. */
  snap_slot_get(c->store, slot, &info);
  if (!info.record_ok || !snap_state_holds_data(info.state) ||
      info.generation != gen) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u was reassigned while step %llu was read",
               slot, (unsigned long long)s);
    rc = PT_ESTALE;
    goto out_free;
  }
  *step = s;
  c->restore_called = true;
  c->rblob_len = info.blob_bytes;
  c->rblob_ok = true;
  /* The restored blob is also the one the next snapshots store, until
   * pt_blob_set() replaces it. */
  if (c->blob == NULL && (c->blob = malloc(PT_BLOB_MAX)) == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  memcpy(c->blob, c->rblob, c->rblob_len);
  c->blob_len = c->rblob_len;
  c->has_last_step = true;
  c->last_step = s;
  c->has_committed = true;
  c->committed_step = s;
  client_log(c, PT_LOG_INFO, "pt: restored step %llu from '%s' slot %u",
             (unsigned long long)s, c->shm_name, slot);

out_free:
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* ---- the blob ---- */

/* ---- recovery in place ---- */

#define RECOVER_POLL_MS 20

int pt_recover_pending(pt_client *c, int timeout_ms, uint64_t *generation)
{
  Pt__RecoverQuery req = PT__RECOVER_QUERY__INIT;
  uint64_t until;

  if (c == NULL || timeout_ms < 0)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  if (!c->recover_in_place) {
    client_log(c, PT_LOG_ERROR, "pt: pt_recover_pending() needs a client "
               "opened with recover_in_place");
    return PT_ESTATE;
  }
  /* No HELLO yet: no SMP knows this trainer, so none was asked. */
  if (!c->had_session)
    return PT_OK;
  until = rpc_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int rc = client_session_call(c, RPC_RECOVER_QUERY, &req.base, RPC_REPLY,
                                 client_deadline_after(c), &m, NULL);
    if (rc != 0)
      return rc;
    const Pt__Reply *r = (const Pt__Reply *)m;
    rc = r->status;
    if (rc == PT_RECOVER && generation != NULL)
      *generation = r->has_generation ? r->generation : 0;
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != PT_OK)
      return rc; /* PT_RECOVER, or the SMP's refusal */
    uint64_t now = rpc_now_ms();
    if (now >= until)
      return PT_OK;
    uint64_t d = until - now < RECOVER_POLL_MS ? until - now : RECOVER_POLL_MS;
    struct timespec ts = {0, (long)d * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

int pt_blob_set(pt_client *c, const void *data, size_t len)
{
  if (c == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  if (data == NULL && len > 0) {
    client_log(c, PT_LOG_ERROR, "pt: blob of %zu bytes without data", len);
    return -EINVAL;
  }
  if (len > PT_BLOB_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: blob of %zu bytes: at most %zu allowed",
               len, (size_t)PT_BLOB_MAX);
    return PT_ETOOBIG;
  }
  if (len > 0 && c->blob == NULL && (c->blob = malloc(PT_BLOB_MAX)) == NULL)
    return -ENOMEM;
  if (len > 0)
    memcpy(c->blob, data, len);
  c->blob_len = len;
  return PT_OK;
}

int pt_blob_get(pt_client *c, void *buf, size_t cap, size_t *len)
{
  if (c == NULL || len == NULL || (buf == NULL && cap > 0))
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  if (!c->rblob_ok) {
    *len = 0;
    return PT_ENOSNAP;
  }
  *len = c->rblob_len;
  if (cap < c->rblob_len)
    return -ENOBUFS;
  if (c->rblob_len > 0)
    memcpy(buf, c->rblob, c->rblob_len);
  return PT_OK;
}
