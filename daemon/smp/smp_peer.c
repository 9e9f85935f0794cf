/*
 * smp_peer.c — erasure coding between the SMPs of a coding group
 * (DESIGN.md "Erasure coding across nodes", "One snapshot, step by step"
 * 4): the TCP links to the other members, and the protection of each
 * sealed step over them with the engine of smp_protect.h.
 *
 * Links. The SMP listens on --peer-listen (port 0: the kernel's pick; the
 * port reaches the node in every StateReply, the controller in the node's
 * JobPartState, and every member of the group in a PEERS_SET from its
 * node). It dials every other member once PEERS_SET says where it is: one
 * connection per ordered pair, authenticated with the cluster key as
 * PEER_ROLE_SMP under its node's id. The dialler sends PEER_HELLO (job,
 * epoch, group, both member numbers, its slot bytes); the acceptor checks
 * it against its own group (the node id the handshake proved must be that
 * member's) and from then on takes that member's chunks on it. A link that
 * breaks is dialled again, 100 ms doubling to 2 s.
 *
 * A step. When this SMP's trainer takes a slot for step N, the engine
 * begins N there (its parity rows) and READY(N) goes to every member that
 * dialled us: send your chunks of N. When the trainer seals N, the k*m
 * sends are planned (smp_protect_plan) and the chunks for each holder that
 * said READY(N) go out in pieces of PEER_PIECE bytes, bulk frames read from
 * the slot itself (never copied), each with its CRC32C, in order; the
 * holder reads each into its link's buffer, folds it (
 * smp_protect_receive_piece) and acknowledges each chunk once all of it is
 * in (PEER_ACK). The step is protected here when every send is
 * acknowledged and every row this member keeps is complete.
 *
 * One step in flight, and the job in step. From the slot's taking until
 * the job decides the step (its COMMIT or UNPIN from the node), its
 * failure here or its deadline, the SMP's trainer gets no other slot: its
 * snapshots are skipped (smp_peer_may_take), and each skip is told to the
 * group (PEER_SKIP), whose members give that step up at once and take no
 * slot for it either, even before their own trainers reach it. The
 * decision reaches every SMP of the job at nearly one moment, so all take
 * the same next step, the first their trainers snapshot; a member still
 * busy then skips it for all, and the next one finds every member free.
 * (Members that decided alone, each queueing its newest sealed step behind
 * the one under way, fell out of step and committed almost nothing at full
 * speed.) A failure found here (a deadline, a refusal, a broken link) is
 * told to the group the same way. The rpc layer's queue mark bounds what
 * is written ahead (-EAGAIN, then on_drain). A step has
 * --protect-timeout-ms from its seal. PIN of a coded step answers once the
 * step is PROTECTED (smp_peer_pin), or with why not at the deadline: the
 * node then unpins it, and the step is not committed; the trainer never
 * waits, it only skips snapshots.
 *
 * Hostile peers. A stranger cannot pass the handshake; a member of the
 * group that sends what the layout does not allow gets a PEER_ACK with the
 * refusal and its bytes are never folded (smp_protect.h "Hostile input");
 * a frame of a type the link does not carry, or a HELLO that is not that
 * member's, closes the link.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"

/* ---- the engine ---- */

/* The engine for the sizes known now: made when every member's bytes are
 * known and this SMP has its object; made again when they change. */
static struct smp_protect *engine(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  const struct code_group *g = &smp->group;
  uint64_t bytes[RS_MAX_MEMBERS];
  size_t sizes[RS_MAX_MEMBERS];

  if (smp->store == NULL)
    return NULL;
  for (uint32_t i = 0; i < g->n; i++) {
    if (i == g->member)
      bytes[i] = own_bytes(p);
    else if (!p->link[i].has_bytes)
      return NULL;
    else
      bytes[i] = p->link[i].bytes;
    sizes[i] = (size_t)bytes[i];
  }
  if (p->eng != NULL && p->eng_store == smp->store &&
      memcmp(bytes, p->eng_bytes, g->n * sizeof(bytes[0])) == 0)
    return p->eng;
  smp_protect_free(p->eng);
  p->eng = NULL;
  p->active = false;
  p->cur = false;
  char err[300];
  int rc = smp_protect_new(&p->eng, g->k, g->m, g->member, sizes,
                           snap_store_nslots(smp->store), NULL, err,
                           sizeof(err));
  if (rc != 0) {
    log_error("coding group %u: cannot lay out the members' %u snapshots: "
              "%s", g->group, g->n, err);
    return NULL;
  }
  memcpy(p->eng_bytes, bytes, sizeof(p->eng_bytes));
  p->eng_store = smp->store;
  log_info("coding group %u: protecting %" PRIu64 " bytes per step "
           "(chunks of %zu bytes, %zu bytes of parity kept)", g->group,
           bytes[g->member], smp_protect_layout(p->eng)->chunk_bytes,
           smp_protect_layout(p->eng)->parity_bytes);
  return p->eng;
}

/* ---- the PIN that waits ---- */

/* A refused PIN takes back the pin it made: its round cannot commit the
 * step, and a node that reads the refusal as "not pinned here" (-ENOENT,
 * which a member's refusal of a chunk may carry) sends no UNPIN. */
static void pin_undo(struct smp_peer *p, uint64_t step, bool fresh)
{
  struct snap_store *s = p->smp->store;
  if (fresh && s != NULL && snap_slot_unpin(s, step) == 0)
    log_debug("step %" PRIu64 " unpinned: its PIN was refused", step);
}

void smp_peer_pin_answer(struct smp_peer *p, int status, const char *why)
{
  if (!p->pin_wait)
    return;
  p->pin_wait = false;
  if (status != 0)
    pin_undo(p, p->pin_step, p->pin_fresh);
  if (p->pin_sc != NULL && !p->pin_sc->closing)
    smp_serve_reply_status(p->pin_sc, p->pin_id, status, why);
  p->pin_sc = NULL;
}

/* The step failed here: logged once, the PIN waiting for it answered. */
void smp_peer_step_fail(struct smp_peer *p, uint64_t step, int rc, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
void smp_peer_step_fail(struct smp_peer *p, uint64_t step, int rc, const char *fmt,
                      ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->why, sizeof(p->why), fmt, ap);
  va_end(ap);
  /* A member's skipped snapshot is routine (debug); the rest is worth a
   * line once per step. A failure found here (not a member's skip) is
   * told to the group, so that no member waits for it until its
   * deadline. */
  if (!smp_peer_failed(p, step)) {
    if (rc == PT_SKIPPED)
      log_debug("step %" PRIu64 " not protected: %s", step, p->why);
    else
      log_warn("step %" PRIu64 " not protected: %s", step, p->why);
    if (p->nfailed == SNAP_MAX_SLOTS) {
      memmove(p->failed, p->failed + 1, (SNAP_MAX_SLOTS - 1) * sizeof(p->failed[0]));
      p->nfailed--;
    }
    p->failed[p->nfailed++] = step;
    if (rc != PT_SKIPPED)
      smp_peer_skipped(p->smp, step);
  }
  if (p->cur && p->cur_step == step)
    p->cur = false;
  if (p->active && p->step == step) {
    p->active = false;
    for (uint32_t i = 0; i < p->smp->group.n; i++)
      p->link[i].sending = false;
  }
  /* Given up here: the slot may go to the trainer's next step, and nothing
   * more is taken for it. */
  uint32_t slot;
  if (p->eng != NULL && smp_protect_find(p->eng, step, &slot) == 0) {
    p->slot_until[slot] = 0;
    smp_protect_forget(p->eng, slot);
  }
  /* The PIN's answer is an error: a skip (PT_SKIPPED, positive) too, or
   * the node would take it for no answer yet. */
  if (p->pin_wait && p->pin_step == step)
    smp_peer_pin_answer(p, rc > 0 ? -ECANCELED : rc, p->why);
}

bool smp_peer_failed(const struct smp_peer *p, uint64_t step)
{
  for (unsigned i = 0; i < p->nfailed; i++)
    if (p->failed[i] == step)
      return true;
  return false;
}

void smp_peer_push(struct link *l);
void smp_peer_link_ready(struct smp_peer *p, struct link *l, bool has,
                       uint64_t step);

void smp_peer_ready_add(struct link *l, uint64_t step)
{
  for (unsigned i = 0; i < l->nready; i++)
    if (l->ready[i] == step)
      return;
  if (l->nready == SNAP_MAX_SLOTS) {
    memmove(l->ready, l->ready + 1, (SNAP_MAX_SLOTS - 1) * sizeof(l->ready[0]));
    l->nready--;
  }
  l->ready[l->nready++] = step;
}

static bool is_ready(const struct link *l, uint64_t step)
{
  for (unsigned i = 0; i < l->nready; i++)
    if (l->ready[i] == step)
      return true;
  return false;
}

/* Protected here: PROTECTED in the object once pinned, the PIN answered,
 * and the next step's sends may go. */
void smp_peer_check_done(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  uint32_t slot;

  if (p->eng == NULL || smp->store == NULL)
    return;
  if (p->pin_wait && smp_protect_find(p->eng, p->pin_step, &slot) == 0 &&
      smp_protect_done(p->eng, slot)) {
    int rc = smp_protect_mark(p->eng, smp->store, slot);
    if (rc == 0)
      log_debug("step %" PRIu64 " protected", p->pin_step);
    smp_peer_pin_answer(p, rc, rc ? pt_strerror(rc) : NULL);
  }
  if (p->active && smp_protect_find(p->eng, p->step, &slot) == 0) {
    struct smp_protect_status st;
    smp_protect_status(p->eng, slot, &st);
    if (st.nacked == st.nsends)
      p->active = false; /* our part is done; rows may still come */
  }
}


/* ---- sending ---- */

/* Writes l's pieces of the active step until the link's queue is full. */
void smp_peer_push(struct link *l)
{
  struct smp_peer *p = l->p;

  if (!p->active || !l->sending || !l->out_up)
    return;
  while (l->cur < l->nidx) {
    const struct smp_protect_send *s = &p->sends[l->idx[l->cur]];
    uint64_t left = s->hdr.valid - l->cur_off;
    uint64_t len = left < PEER_PIECE ? left : PEER_PIECE;
    const uint8_t *b = s->bytes ? (const uint8_t *)s->bytes + l->cur_off
                                : NULL;
    struct rpc_bulk_hdr h = {
        .kind = PEER_BULK_PIECE | (s->hdr.chunk << 8), .tag = p->step,
        .offset = l->cur_off, .length = len,
        .crc32c = len > 0 ? crc32c(b, (size_t)len) : CRC32C_SEED};
    int rc = rpc_conn_send_bulk(l->out, &h, b, NULL, NULL);
    if (rc == -EAGAIN)
      return; /* on_drain */
    if (rc != PT_OK) {
      smp_peer_step_fail(p, p->step, rc, "cannot send to member %u (node '%s'): %s",
                l->member, member_of(p, l->member)->node_id,
                pt_strerror(rc));
      return;
    }
    l->cur_off += len;
    if (l->cur_off == s->hdr.valid) {
      l->cur++;
      l->cur_off = 0;
    }
  }
}

/* The sends of step in slot begin: to each holder that is ready for it. */
static void start_step(struct smp_peer *p, uint32_t slot, uint64_t step)
{
  struct smp *smp = p->smp;
  struct smp_protect *e = engine(p);
  struct smp_protect_status st;

  if (smp_peer_failed(p, step)) {
    log_debug("step %" PRIu64 " sealed, already given up: not sent", step);
    return;
  }
  if (e == NULL) {
    smp_peer_step_fail(p, step, PT_ESTATE, "the group's members are not all known "
              "yet (links up, sizes said)");
    return;
  }
  smp_protect_status(e, slot, &st);
  if (!st.active || st.step != step) {
    int rc = smp_protect_begin_store(e, smp->store, slot, step);
    if (rc != 0) {
      smp_peer_step_fail(p, step, rc, "%s", smp_protect_error(e));
      return;
    }
    for (uint32_t i = 0; i < smp->group.n; i++)
      if (p->link[i].in != NULL)
        smp_peer_link_ready(p, &p->link[i], true, step);
  }
  int n = smp_protect_plan(e, slot, snap_slot_data(smp->store, slot),
                           (size_t)snap_store_slot_bytes(smp->store),
                           p->sends);
  if (n < 0) {
    smp_peer_step_fail(p, step, n, "%s", smp_protect_error(e));
    return;
  }
  p->nsends = (unsigned)n;
  smp_peer_meta_load(p); /* (the mark below may be its last SMP's) */
  if (p->no_parity && p->no_parity_step == step) {
    /* (a job that fell back past the rebuilt step and sealed it again:
     * this protection writes its parity rows anew) */
    p->no_parity = false;
    smp_peer_meta_save(p);
  }
  p->slot_until[slot] = rpc_now_ms() + smp->protect_ms;
  smp_peer_serve_meta_send(p, slot, step); /* for a rebuild of us */
  p->active = true;
  p->slot = slot;
  p->step = step;
  p->deadline = rpc_now_ms() + smp->protect_ms;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    l->nidx = l->cur = 0;
    l->cur_off = 0;
    l->sending = false;
  }
  for (unsigned j = 0; j < p->nsends; j++) {
    struct link *l = &p->link[p->sends[j].to];
    l->idx[l->nidx++] = j;
  }
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (i == smp->group.member || l->nidx == 0)
      continue;
    if (is_ready(l, step)) {
      l->sending = true;
      smp_peer_push(l);
    }
  }
  smp_peer_check_done(p);
}

/* ---- the timer: dials due, deadlines ---- */

static int tick_body(void *arg)
{
  struct smp_peer *p = arg;
  struct smp *smp = p->smp;
  uint64_t now = rpc_now_ms();

  smp_peer_link_tell_bytes(p);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (i != smp->group.member && l->port != 0 && l->out == NULL &&
        p->has_epoch && now >= l->redial_at)
      smp_peer_link_dial(l);
  }
  if (p->active && now >= p->deadline) {
    char waiting[160] = "";
    for (uint32_t i = 0; i < smp->group.n; i++) {
      const struct link *l = &p->link[i];
      if (l->nidx > 0 && (!l->sending || l->cur < l->nidx)) {
        snprintf(waiting, sizeof(waiting), ": member %u (node '%s') %s", i,
                 member_of(p, i)->node_id,
                 !l->out_up ? "is not linked"
                 : !l->sending ? "never said it is ready for the step"
                               : "has not taken every chunk");
        break;
      }
    }
    smp_peer_step_fail(p, p->step, -ETIMEDOUT, "not done within %u ms%s",
              smp->protect_ms, waiting);
  }
  if (p->pin_wait && now >= p->pin_deadline)
    smp_peer_step_fail(p, p->pin_step, -ETIMEDOUT,
              "the parity this member keeps is not complete within %u ms",
              smp->protect_ms);
  smp_peer_relay_tick(p);
  smp_peer_check_done(p);
  return 0;
}

static void on_tick(uv_timer_t *t)
{
  struct smp_peer *p = t->data;
  /* under the SIGBUS guard: the deadlines may mark slots PROTECTED */
  (void)smp_guarded(p->smp, tick_body, p);
}

/* ---- the SMP's calls ---- */

int smp_peer_start(struct smp *smp)
{
  char err[512];
  int rc;

  if (smp->group.k == 0)
    return 0;
  if (smp->key_file == NULL) {
    log_warn("coding group %u: no --key, so no links to the group: the "
             "snapshots of this rank are not protected", smp->group.group);
    return 0;
  }
  struct smp_peer *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->smp = smp;
  rc = rpc_key_load(smp->key_file, p->auth.key, err, sizeof(err));
  if (rc != 0) {
    log_error("refusing to start: %s", err);
    free(p);
    return rc;
  }
  p->auth.role = PT__PEER_ROLE__PEER_ROLE_SMP;
  snprintf(p->auth.node_id, sizeof(p->auth.node_id), "%s", smp->node_id);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    p->link[i].p = p;
    p->link[i].member = i;
    p->link[i].redial_ms = PEER_REDIAL_MIN_MS;
  }
  const char *host = smp->peer_listen ? smp->peer_listen : "0.0.0.0";
  rc = smp_peer_link_listen(p, host);
  if (rc != 0) {
    log_error("cannot listen for the coding group on %s: %s", host,
              pt_strerror(rc));
    sodium_memzero(p->auth.key, sizeof(p->auth.key));
    free(p);
    return rc;
  }
  p->port = rpc_listener_port(p->listener);
  uv_timer_init(&smp->loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, PEER_TICK_MS, PEER_TICK_MS);
  p->timer_on = true;
  smp->peer = p;
  log_info("coding group %u: taking the group's chunks on %s:%d", 
           smp->group.group, host, p->port);
  return 0;
}

void smp_peer_stop(struct smp *smp)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  smp_peer_pin_answer(p, -ECANCELED, "the SMP is stopping");
  if (p->listener != NULL)
    rpc_listener_close(p->listener);
  p->listener = NULL;
  smp_peer_link_close_all(p);
  if (p->timer_on) {
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    p->timer_on = false;
  }
  /* p itself lives until exit: the closes above still name its links. */
}

int smp_peer_port(const struct smp *smp)
{
  return smp->peer ? smp->peer->port : 0;
}

void smp_peer_store_gone(struct smp *smp)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  smp_peer_link_drop_queued(p);
  p->pin_fresh = false; /* nothing is touched in the mapping that goes */
  smp_peer_pin_answer(p, -EIO, "the snapshot object was dropped");
  p->told_store = NULL;
  p->active = false;
  p->cur = false;
  smp_protect_free(p->eng);
  p->eng = NULL;
  p->eng_store = NULL;
}

void smp_peer_conn_gone(struct smp *smp, struct smp_conn *sc)
{
  struct smp_peer *p = P(smp);
  if (p != NULL && p->pin_sc == sc) {
    p->pin_wait = false;
    p->pin_sc = NULL;
  }
}

void smp_peer_slot_begun(struct smp *smp, uint32_t slot, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  smp_peer_link_tell_bytes(p);
  struct smp_protect *e = engine(p);
  if (e == NULL || smp_peer_failed(p, step))
    return; /* (given up already: a member skipped it) */
  int rc = smp_protect_begin_store(e, smp->store, slot, step);
  if (rc != 0) {
    log_warn("step %" PRIu64 ": cannot take the group's chunks: %s", step,
             smp_protect_error(e));
    return;
  }
  /* from the trainer's copy to its seal, then protect_ms from the seal */
  p->slot_until[slot] = rpc_now_ms() + 2 * (uint64_t)smp->protect_ms;
  p->cur = true;
  p->cur_slot = slot;
  p->cur_step = step;
  for (uint32_t i = 0; i < smp->group.n; i++)
    if (p->link[i].in != NULL)
      smp_peer_link_ready(p, &p->link[i], true, step);
}

void smp_peer_slot_dropped(struct smp *smp, uint32_t slot)
{
  struct smp_peer *p = P(smp);
  if (p == NULL || p->eng == NULL)
    return;
  if (p->active && p->slot == slot)
    smp_peer_step_fail(p, p->step, -ECANCELED, "its slot was given back");
  else if (p->cur && p->cur_slot == slot)
    smp_peer_step_fail(p, p->cur_step, -ECANCELED, "its slot was given back");
  smp_protect_forget(p->eng, slot);
}

void smp_peer_sealed(struct smp *smp, uint32_t slot, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  if (p->active && p->step != step) {
    /* (smp_peer_may_take gives the trainer no slot while a step is under
     * way: not reached, unless that step's sends outlived its PROTECTED) */
    smp_peer_step_fail(p, step, PT_ESTATE, "sealed while step %" PRIu64
                       " was still being sent", p->step);
    return;
  }
  start_step(p, slot, step);
}

bool smp_peer_may_take(struct smp *smp, uint64_t step)
{
  struct smp_peer *p = P(smp);
  uint32_t slot;

  if (p == NULL)
    return true;
  if (smp_peer_failed(p, step))
    return false; /* a member skipped it already: the group never has it */
  if (p->cur && p->eng != NULL &&
      smp_protect_find(p->eng, p->cur_step, &slot) == 0 &&
      slot == p->cur_slot && rpc_now_ms() < p->slot_until[slot]) {
    /* One step in flight: this one is skipped, and the group hears so at
     * once (every member gives it up, none waits for our chunks). */
    smp_peer_skipped(smp, step);
    smp_peer_step_fail(p, step, PT_SKIPPED, "step %" PRIu64 " was still "
                       "being protected", p->cur_step);
    return false;
  }
  p->cur = false;
  return true;
}

bool smp_peer_pin(struct smp_conn *sc, uint64_t id, uint64_t step,
                  bool fresh)
{
  struct smp *smp = sc->smp;
  struct smp_peer *p = P(smp);
  uint32_t slot;

  if (p == NULL)
    return false; /* no code, or no links: answered as a plain pin */
  if (p->pin_wait && p->pin_step == step) {
    fresh = fresh || p->pin_fresh; /* the pin is this PIN's now */
    p->pin_fresh = false;
  }
  smp_peer_pin_answer(p, -ECANCELED, "another PIN came");
  if (smp_peer_failed(p, step)) {
    pin_undo(p, step, fresh);
    smp_serve_reply_status(sc, id, -EIO, p->why);
    return true;
  }
  if (p->eng == NULL || smp_protect_find(p->eng, step, &slot) != 0) {
    pin_undo(p, step, fresh);
    smp_serve_reply_status(sc, id, PT_ESTATE, "the step is not being "
                           "protected here (the group's links or sizes are "
                           "not all known yet)");
    return true;
  }
  p->pin_wait = true;
  p->pin_fresh = fresh;
  p->pin_sc = sc;
  p->pin_id = id;
  p->pin_step = step;
  p->pin_deadline = rpc_now_ms() + smp->protect_ms;
  smp_peer_check_done(p);
  return true;
}

void smp_peer_restore_point(struct smp *smp, bool has, uint64_t step)
{
  if (P(smp) != NULL)
    smp_peer_serve_forget_after(P(smp), has, step);
}

void smp_peer_committed(struct smp *smp, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p != NULL && p->cur && p->cur_step <= step)
    p->cur = false;
}

void smp_peer_unpinned(struct smp *smp, uint64_t step)
{
  struct smp_peer *p = P(smp);
  uint32_t slot;

  uint32_t cslot;
  uint64_t cstep;

  if (p == NULL || !p->has_epoch || smp_peer_failed(p, step) ||
      smp->store == NULL)
    return;
  if (snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0 &&
      step <= cstep)
    return; /* (committed: its parity stays, for a rebuild) */
  if (!(p->cur && p->cur_step == step) &&
      (p->eng == NULL || smp_protect_find(p->eng, step, &slot) != 0))
    return; /* nothing of it here */
  smp_peer_skipped(smp, step);
  smp_peer_step_fail(p, step, PT_SKIPPED, "its node let go of it (the "
                     "job will not commit it)");
  smp_peer_check_done(p);
}

uint32_t smp_peer_busy_slots(struct smp *smp)
{
  struct smp_peer *p = P(smp);
  uint32_t cslot, mask = 0;
  uint64_t cstep = 0, now = rpc_now_ms();

  if (p == NULL || p->eng == NULL || smp->store == NULL)
    return 0;
  bool has_c = snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0;
  for (uint32_t i = 0; i < snap_store_nslots(smp->store) && i < SNAP_MAX_SLOTS; i++) {
    struct smp_protect_status st;
    smp_protect_status(p->eng, i, &st);
    if (st.active && (!has_c || st.step > cstep) && now < p->slot_until[i])
      mask |= 1u << i;
  }
  return mask;
}

void smp_peer_skipped(struct smp *smp, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p == NULL || !p->has_epoch)
    return;
  Pt__PeerSkip m = PT__PEER_SKIP__INIT;
  m.epoch = p->epoch;
  m.step = step;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (i == smp->group.member)
      continue;
    if (l->out != NULL && l->out_up)
      rpc_conn_send(l->out, RPC_PEER_SKIP, 0, &m.base);
    else if (l->in != NULL)
      rpc_conn_send(l->in, RPC_PEER_SKIP, 0, &m.base);
  }
}

void smp_peer_on_skip(struct smp_peer *p, const struct link *l,
                      const Pt__PeerSkip *m)
{
  if (!p->has_epoch || m->epoch != p->epoch)
    return;
  /* Kept even for a step not begun here yet (that member's trainer is
   * ahead of ours): ours then skips it too, and takes no slot for it. */
  smp_peer_step_fail(p, m->step, PT_SKIPPED, "member %u (node '%s') skipped "
                     "that snapshot", l->member, member_of(p, l->member)->node_id);
  smp_peer_check_done(p);
}

void smp_peer_reset(struct smp_peer *p)
{
  smp_peer_pin_answer(p, PT_EEPOCH, "the job moved to another epoch");
  p->active = false;
  p->cur = false;
  p->nfailed = 0;
  memset(p->slot_until, 0, sizeof(p->slot_until));
  for (uint32_t i = 0; p->eng != NULL && i < SNAP_MAX_SLOTS; i++)
    smp_protect_forget(p->eng, i);
  for (uint32_t i = 0; i < p->smp->group.n; i++) {
    p->link[i].sending = false;
    p->link[i].nready = 0;
  }
}
