/*
 * smp_peer_rebuild.c — a coded SMP that is to restore a step it does not
 * hold rebuilds its own snapshot of that step from its coding group's
 * survivors (DESIGN.md "Restore" 2), then serves the restore as if it had
 * held the step all along.
 *
 * When. SET_RESTORE{R} reaches an SMP of a coded job with links whose
 * object holds no slot of R (a node that came back empty, or a
 * replacement): the restore point is taken at once (the node spawns the
 * trainer), the slots of R and newer steps freed (older committed steps
 * stay, a fallback should the rebuild fail). The rebuild starts once the
 * trainer's HELLO made the object (the slot size comes from its regions)
 * and the links to the other members are up with their sizes said; the
 * trainer's RESTORE_QUERY is held until it ends, with its progress said
 * before the trainer's own deadline (smp_peer_rebuild_held.c), so that a
 * rebuild of any size fits. It fails once nothing came for
 * REBUILD_STALL_MS.
 *
 * How. First this member's checksum table of R (PEER_FETCH what 2: each
 * member keeps the tables the others sent it, smp_peer_serve.c), from the
 * first member that has it; then a slot for R (WRITING: never the
 * trainer's, never served), the table in it, and the pieces the machine of
 * smp_rebuild.h lists, REBUILD_SLICE bytes each, REBUILD_WINDOW slices
 * in flight, fetched on the links this SMP dialled, REBUILD_LANES
 * outstanding per link (a survivor queues 2 * PEER_PIECE bytes of replies
 * at most), each with a deadline (REBUILD_FETCH_MS). Replies carry the
 * request id (attempt << 32 | the machine's fetch id), answered by
 * smp_peer_rebuild_link.c: a bulk frame lands straight in the machine's
 * buffer (never through protobuf), a PEER_META is the table, a PEER_ACK a
 * refusal (-EAGAIN: asked again, backing off). A member whose fetch is refused,
 * fails its CRC thrice, times out, or whose link stays down is erased from
 * the machine (smp_rebuild_erase): its stripes come from the others; when
 * the lost and erased members are more than m, the rebuild fails naming
 * them. Once every slice is decoded the slot is sealed and verified
 * against the table (snap_slot_verify_many); a mismatch with a survivor to
 * spare is tried again without each source in turn, else it is a clear
 * error and the slots are freed: nothing unverified is ever restored.
 * Verified, the slot becomes COMMITTED with step R, and one info line
 * says from whom, how many bytes, how long, and how many bytes came in.
 * Repair pipelining: on the first try each slice is one fetch of the
 * lost piece's slice as a sum along a chain of its k sources
 * (smp_peer_relay.c), so about one byte comes in per byte rebuilt, not
 * k; once a chained fetch fails, or for a retry, every piece is fetched
 * directly, where a failing member can be named and erased. A failure is said to
 * the node too (EVENT_REBUILD_FAILED), named in the part's failure. Not
 * rebuilt: this member's parity rows of R (the next committed step writes
 * them again); a fetch of them is refused (smp_peer_rebuild_no_parity).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"
#include "daemon/smp/smp_rebuild.h"
#include "daemon/smp/smp_peer_rebuild_int.h"

static struct smp_peer_rebuild *RB(struct smp *smp)
{
  return smp->peer != NULL ? smp->peer->rebuild : NULL;
}

static struct smp_peer_rebuild *rb_get(struct smp *smp)
{
  struct smp_peer *p = smp->peer;
  if (p == NULL)
    return NULL;
  if (p->rebuild == NULL && (p->rebuild = calloc(1, sizeof(*p->rebuild))) != NULL)
    p->rebuild->p = p;
  return p->rebuild;
}

bool smp_peer_rebuild_active(const struct smp_peer_rebuild *r)
{
  return r != NULL && (r->state == RB_WAIT || r->state == RB_META ||
                       r->state == RB_DATA);
}

static const char *node_of(const struct smp_peer_rebuild *r, uint32_t i)
{
  return member_of(r->p, i)->node_id;
}

static void members_list(char *out, size_t len, uint32_t mask)
{
  size_t used = 0;
  out[0] = '\0';
  for (uint32_t i = 0; i < RS_MAX_MEMBERS && used + 1 < len; i++)
    if (mask & (1u << i)) {
      int w = snprintf(out + used, len - used, "%s%u", used ? "," : "", i);
      if (w < 0)
        break;
      used += (size_t)w < len - used ? (size_t)w : len - used - 1;
    }
}

/* ---- ending ---- */

/* Links with a payload landing in the machine's buffers are closed (they
 * are dialled again), so that the machine may be freed. */
static void stop_landing(struct smp_peer_rebuild *r)
{
  struct smp_peer *p = r->p;
  for (uint32_t i = 0; i < p->smp->group.n; i++) {
    struct link *l = &p->link[i];
    bool landing = false;
    for (unsigned k = 0; k < REBUILD_LANES; k++) {
      landing = landing || r->mem[i].lane[k].landing;
      r->mem[i].lane[k].landing = false;
    }
    if (landing && l->out != NULL) {
      struct rpc_conn *c = l->out;
      smp_peer_link_out_closed(l, -ECANCELED);
      rpc_conn_set_data(c, NULL);
      rpc_conn_close(c, -ECANCELED);
    }
  }
}

static void machine_free(struct smp_peer_rebuild *r)
{
  stop_landing(r);
  smp_rebuild_free(r->rb);
  r->rb = NULL;
  r->nq = 0;
  for (uint32_t i = 0; i < RS_MAX_MEMBERS; i++)
    for (unsigned k = 0; k < REBUILD_LANES; k++) {
      r->mem[i].lane[k].busy = false;
      r->mem[i].lane[k].unsent = false;
    }
}

/* The slot given back: nothing unverified stays (the step and newer ones
 * freed; older committed steps, intact, stay for the job to fall back on). */
static void slot_drop(struct smp_peer_rebuild *r)
{
  struct smp *smp = r->p->smp;
  if (r->has_slot && smp->store != NULL)
    (void)snap_slot_set_restore_missing(smp->store, r->step);
  r->has_slot = false;
}

void smp_peer_rebuild_fail(struct smp_peer_rebuild *r, int rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof(r->err), fmt, ap);
  va_end(ap);
  r->rc = rc != 0 ? rc : PT_ESTATE;
  machine_free(r);
  slot_drop(r);
  free(r->table);
  r->table = NULL;
  r->state = RB_FAILED;
  log_error("%s", r->err);
  /* the node names it in the part's failure */
  smp_serve_event_outcome(r->p->smp, PT__EVENT_KIND__EVENT_REBUILD_FAILED,
                          r->step, r->rc, r->err, NULL);
  smp_peer_rebuild_held_answer(r);
}

/* The lost (this member and those erased or never linked) are more than
 * the code tolerates. */
static void fail_lost(struct smp_peer_rebuild *r, uint32_t lost)
{
  const struct code_group *g = &r->p->smp->group;
  char names[96];
  members_list(names, sizeof(names), lost | (1u << g->member));
  smp_peer_rebuild_fail(r, PT_ENOFRAG, "cannot rebuild step %" PRIu64 " of coding group %u: "
          "members %s lost, code %u+%u tolerates %u", r->step, g->group, names,
          g->k, g->m, g->m);
}

/* ---- fetches ---- */

struct rb_fetch *smp_peer_rebuild_find(struct smp_peer_rebuild *r, uint32_t i,
                                       uint64_t req)
{
  for (unsigned k = 0; k < REBUILD_LANES; k++)
    if (r->mem[i].lane[k].busy && r->mem[i].lane[k].req == req)
      return &r->mem[i].lane[k];
  return NULL;
}

static unsigned busy_lanes(const struct smp_peer_rebuild *r, uint32_t i)
{
  unsigned n = 0;
  for (unsigned k = 0; k < REBUILD_LANES; k++)
    n += r->mem[i].lane[k].busy;
  return n;
}

void smp_peer_rebuild_send(struct smp_peer_rebuild *r, uint32_t i, struct rb_fetch *m)
{
  struct link *l = &r->p->link[i];
  Pt__PeerFetch f = PT__PEER_FETCH__INIT;
  Pt__PeerHop hop[RS_MAX_MEMBERS], *hops[RS_MAX_MEMBERS];

  f.step = r->step;
  if (m->meta) {
    f.what = 2;
    f.index = r->p->smp->group.member;
  } else {
    f.what = m->f.what;
    f.index = m->f.index;
    f.has_offset = true;
    f.offset = m->f.offset;
    f.has_length = true;
    f.length = m->f.length;
  }
  if (!m->meta && m->f.coded) { /* the lost slice as the chain's sum */
    f.has_coef = true;
    f.coef = m->f.coef;
    for (unsigned h = 0; h < m->f.nhops; h++) {
      pt__peer_hop__init(&hop[h]);
      hop[h].member = m->f.hop[h].member;
      hop[h].what = m->f.hop[h].what;
      hop[h].index = m->f.hop[h].index;
      hop[h].coef = m->f.hop[h].coef;
      hops[h] = &hop[h];
    }
    f.n_chain = m->f.nhops;
    f.chain = hops;
  }
  m->unsent = true;
  if (l->out == NULL || !l->out_up)
    return; /* when the link is up again */
  if (rpc_conn_send(l->out, RPC_PEER_FETCH, m->req, &f.base) == PT_OK) {
    m->unsent = false;
  }
}

static void start_fetch(struct smp_peer_rebuild *r, uint32_t i, bool meta,
                        const struct smp_rebuild_fetch *f)
{
  struct rb_fetch *m = NULL;
  for (unsigned k = 0; k < REBUILD_LANES && m == NULL; k++)
    if (!r->mem[i].lane[k].busy)
      m = &r->mem[i].lane[k];
  if (m == NULL)
    return; /* (the callers look first) */
  m->busy = true;
  m->meta = meta;
  if (f != NULL)
    m->f = *f;
  m->req = ((uint64_t)r->attempt << 32) | (meta ? 0u : f->id);
  m->deadline = rpc_now_ms() + REBUILD_FETCH_MS;
  m->again_at = 0;
  m->crc_fails = 0;
  m->agains = 0;
  m->wrong_kind = false;
  smp_peer_rebuild_send(r, i, m);
}

/* The fetches queued or out that the machine no longer wants (re-planned
 * after an erase, or pipelining given up) are dropped: a late reply is
 * discarded. */
static void drop_unwanted(struct smp_peer_rebuild *r)
{
  unsigned w = 0;
  for (unsigned j = 0; j < r->nq; j++)
    if (smp_rebuild_wants(r->rb, r->q[j].id))
      r->q[w++] = r->q[j];
  r->nq = w;
  for (uint32_t j = 0; j < r->p->smp->group.n; j++)
    for (unsigned k = 0; k < REBUILD_LANES; k++) {
      struct rb_fetch *x = &r->mem[j].lane[k];
      if (x->busy && !x->meta && !smp_rebuild_wants(r->rb, x->f.id))
        x->busy = false;
    }
}

/* Member i fails as a source (why): given up, its stripes from the
 * others (when pipelined: pipelining given up, nobody erased yet). */
void smp_peer_rebuild_member_failed(struct smp_peer_rebuild *r, uint32_t i, const char *why)
{
  struct rb_member *m = &r->mem[i];
  for (unsigned k = 0; k < REBUILD_LANES; k++) {
    m->lane[k].busy = false;
    m->lane[k].unsent = false;
  }
  if (r->state == RB_META) {
    m->no_table = true;
    log_warn("rebuild of step %" PRIu64 ": member %u (node '%s') gives no "
             "checksum table: %s", r->step, i, node_of(r, i), why);
    return;
  }
  if (r->state != RB_DATA || r->rb == NULL)
    return;
  int rc;
  if (smp_rebuild_chained(r->rb)) {
    /* Which member of the chain failed cannot be told from here: every
     * piece is fetched directly from now on, and a member at fault is
     * found, and erased, there. */
    log_warn("rebuild of step %" PRIu64 ": a pipelined fetch through member %u "
             "(node '%s') failed: %s; fetching each survivor's pieces instead",
             r->step, i, node_of(r, i), why);
    r->unchained = true;
    rc = smp_rebuild_set_chain(r->rb, false);
    if (rc != 0) {
      smp_peer_rebuild_fail(r, rc, "cannot rebuild step %" PRIu64 ": %s", r->step,
                            smp_rebuild_error(r->rb));
      return;
    }
    drop_unwanted(r);
    return;
  }
  log_warn("rebuild of step %" PRIu64 ": member %u (node '%s') fails as a "
           "source: %s", r->step, i, node_of(r, i), why);
  rc = smp_rebuild_erase(r->rb, i);
  if (rc == PT_ENOFRAG) {
    fail_lost(r, smp_rebuild_erased(r->rb) | (1u << i));
    return;
  }
  if (rc != 0) {
    smp_peer_rebuild_fail(r, rc, "cannot rebuild step %" PRIu64 ": %s", r->step,
            smp_rebuild_error(r->rb));
    return;
  }
  drop_unwanted(r);
}

/* ---- the phases ---- */

static void begin(struct smp_peer_rebuild *r)
{
  r->attempt++;
  r->t_start = rpc_now_ms();
  r->us_start = smp_peer_rebuild_now_us();
  r->us_table = r->us_data = r->us_start;
  r->deadline = r->t_start + REBUILD_STALL_MS;
  r->received = 0;
  r->received_seen = 0;
  r->used = 0;
  r->skip_src = 0;
  r->unchained = false;
  r->verify_tries = 0;
  free(r->table);
  r->table = NULL;
  memset(r->mem, 0, sizeof(r->mem));
  r->state = RB_META;
  /* the survivors lay the group out with our size: told before we ask */
  smp_peer_link_tell_bytes(r->p);
  log_info("step %" PRIu64 " is not held here: rebuilding it from coding "
           "group %u", r->step, r->p->smp->group.group);
  /* the node hears it (a "rebuilding" fault waits for it) */
  Pt__Event ev = PT__EVENT__INIT;
  ev.kind = PT__EVENT_KIND__EVENT_REBUILD_STARTED;
  ev.rank = r->p->smp->rank;
  ev.has_step = true;
  ev.step = r->step;
  smp_serve_event_send(r->p->smp, &ev);
}

void smp_peer_rebuild_table_in(struct smp_peer_rebuild *r, uint32_t i, const Pt__PeerMeta *m)
{
  struct snap_store *s = r->p->smp->store;
  size_t want = ((size_t)snap_store_nblocks(s) + SNAP_TABLE_TRAILER) * sizeof(uint32_t);
  char why[160];

  if (m->has_member && m->member != r->p->smp->group.member) {
    snprintf(why, sizeof(why), "it sent member %u's table, not this "
             "member's (%u)", m->member, r->p->smp->group.member);
    smp_peer_rebuild_member_failed(r, i, why);
    return;
  }
  if (m->step != r->step || m->table.len != want) {
    snprintf(why, sizeof(why), "its table of step %" PRIu64 " has %zu bytes, "
             "this object's %zu", m->step, m->table.len, want);
    smp_peer_rebuild_member_failed(r, i, why);
    return;
  }
  r->table = malloc(want);
  if (r->table == NULL) {
    smp_peer_rebuild_fail(r, -ENOMEM, "rebuild of step %" PRIu64 ": no memory", r->step);
    return;
  }
  memcpy(r->table, m->table.data, want);
  r->us_table = smp_peer_rebuild_now_us();
  r->table_len = want;
  r->received += want;
}

/* A slot for the step, the table in it, a machine that fills it. */
static int begin_data(struct smp_peer_rebuild *r)
{
  struct smp *smp = r->p->smp;
  const struct code_group *g = &smp->group;
  size_t sz[RS_MAX_MEMBERS];
  char err[300] = "";

  if (!smp_peer_rebuild_layout_sizes(r, sz))
    return 1; /* (drive waits for them) */
  if (!r->has_slot) {
    int rc = snap_slot_acquire(smp->store, r->step, &r->slot, &r->gen);
    if (rc != 0) {
      smp_peer_rebuild_fail(r, rc, "cannot rebuild step %" PRIu64 ": no slot: %s", r->step,
              pt_strerror(rc));
      return -1;
    }
    r->has_slot = true;
    memcpy(snap_slot_crcs(smp->store, r->slot), r->table, r->table_len);
  }
  int rc = smp_rebuild_new(&r->rb, g->k, g->m, sz, g->member,
                           snap_slot_data(smp->store, r->slot), REBUILD_SLICE,
                           REBUILD_WINDOW, err, sizeof(err));
  if (rc != 0) {
    smp_peer_rebuild_fail(r, rc, "cannot rebuild step %" PRIu64 ": %s", r->step, err);
    return -1;
  }
  r->state = RB_DATA;
  r->us_data = smp_peer_rebuild_now_us();
  log_debug("rebuild of step %" PRIu64 ": fetching the pieces of %zu bytes "
            "(%" PRIu64 " ms after its start)", r->step, sz[g->member],
            rpc_now_ms() - r->t_start);
  for (uint32_t i = 0; i < g->n; i++)
    if (r->skip_src & (1u << i)) {
      rc = smp_rebuild_erase(r->rb, i);
      if (rc != 0) {
        fail_lost(r, r->skip_src);
        return -1;
      }
    }
  /* Repair pipelining on the first try; a retry (a source erased, or a
   * chain failed before) fetches piece by piece, where a bad source can
   * be told. */
  r->chained_try = r->skip_src == 0 && !r->unchained && smp->rebuild_chain && g->k > 1;
  if (r->chained_try)
    (void)smp_rebuild_set_chain(r->rb, true);
  return 0;
}

/* Every slice in: sealed, verified, committed; or tried again without a
 * source, or failed. */
static void finish(struct smp_peer_rebuild *r)
{
  struct smp *smp = r->p->smp;
  const struct code_group *g = &smp->group;
  uint64_t fetched = 0, rebuilt = 0;
  smp_rebuild_progress(r->rb, &fetched, &rebuilt);
  uint32_t erased = smp_rebuild_erased(r->rb);
  uint64_t us_in = smp_peer_rebuild_now_us();
  machine_free(r);

  int rc = snap_slot_seal(smp->store, r->slot, r->gen, r->step);
  if (rc != 0) {
    smp_peer_rebuild_fail(r, rc, "cannot seal the rebuilt step %" PRIu64 ": %s", r->step,
            pt_strerror(rc));
    return;
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t threads = cpus < 1 ? 1 : cpus > SNAP_MAX_SLOTS ? SNAP_MAX_SLOTS : (uint32_t)cpus;
  int vrc = 0;
  uint32_t bad = 0;
  snap_slot_verify_many(smp->store, &r->slot, 1, threads, &vrc, &bad);
  r->deadline = rpc_now_ms() + REBUILD_STALL_MS; /* (the verify is no stall) */
  if (vrc == -EFAULT) {
    smp_fault_unwind(smp);
    return;
  }
  char from[96];
  members_list(from, sizeof(from), r->used);
  if (vrc != 0 && r->chained_try && !r->unchained) {
    /* Summed along chains: first once more piece by piece from the same
     * survivors (a member that sums wrongly, an SMP without pipelining),
     * before any source is blamed. */
    log_warn("step %" PRIu64 " rebuilt by repair pipelining from members %s fails its "
             "checksums at block %u: rebuilding it again piece by piece", r->step,
             from, bad);
    slot_drop(r);
    r->unchained = true;
    r->attempt++; /* (replies to the last try's ids are not this one's) */
    r->used = 0;
    (void)begin_data(r);
    return;
  }
  if (vrc != 0) {
    /* A survivor's piece is wrong. With one to spare, again without each
     * source of the first try's bad stripe in turn (each source of the
     * first try when that cannot be told); else never restored. */
    if (r->verify_tries == 0) {
      uint32_t at = smp_peer_rebuild_layout_bad_sources(r, bad, erased) & r->used & ~erased;
      r->cand = at != 0 ? at : r->used & ~erased;
      r->base_erased = erased;
    }
    int spare = (int)g->n - 1 - __builtin_popcount(r->base_erased) - (int)g->k;
    unsigned t = r->verify_tries++;
    uint32_t pick = 0;
    for (uint32_t i = 0, seen = 0; i < g->n && spare > 0; i++)
      if ((r->cand & (1u << i)) && seen++ == t) {
        pick = 1u << i;
        break;
      }
    if (pick == 0) {
      smp_peer_rebuild_fail(r, PT_ECHECKSUM, "step %" PRIu64 " rebuilt from "
              "members %s fails its checksums at block %u: a survivor's piece "
              "is damaged, and %u+%u has no other survivor to rebuild it from: "
              "never restored", r->step, from, bad, g->k, g->m);
      return;
    }
    log_warn("step %" PRIu64 " rebuilt from members %s fails its checksums at "
             "block %u: rebuilding it again without member %u", r->step, from,
             bad, (unsigned)__builtin_ctz(pick));
    slot_drop(r);
    r->skip_src = r->base_erased | pick;
    r->attempt++; /* (replies to the last try's ids are not this one's) */
    r->used = 0;
    (void)begin_data(r);
    return;
  }
  rc = snap_slot_commit(smp->store, r->step);
  if (rc != 0) {
    smp_peer_rebuild_fail(r, rc, "cannot commit the rebuilt step %" PRIu64 ": %s", r->step,
            pt_strerror(rc));
    return;
  }
  r->has_slot = false;
  free(r->table);
  r->table = NULL;
  r->state = RB_DONE;
  r->p->no_parity = true; /* said by smp_peer_rebuild_no_parity, kept */
  r->p->no_parity_step = r->step;
  smp_peer_meta_save(r->p);
  uint64_t us_end = smp_peer_rebuild_now_us();
  log_info("step %" PRIu64 " rebuilt from members %s: %" PRIu64 " bytes in %"
           PRIu64 " ms, %" PRIu64 " bytes received (table %" PRIu64 " us, links %"
           PRIu64 " us, pieces %" PRIu64 " us, verify %" PRIu64 " us)", r->step, from,
           rebuilt, rpc_now_ms() - r->t_start, r->received, r->us_table - r->us_start,
           r->us_data - r->us_table, us_in - r->us_data, us_end - us_in);
  smp_peer_rebuild_held_answer(r);
}

/* ---- the loop ---- */

void smp_peer_rebuild_drive(struct smp_peer_rebuild *r)
{
  struct smp *smp = r->p->smp;
  const struct code_group *g = &smp->group;
  uint64_t now = rpc_now_ms();

  if (r->state == RB_WAIT) {
    if (smp->store == NULL)
      return; /* the trainer's HELLO makes the object */
    begin(r);
  }
  if (!smp_peer_rebuild_active(r))
    return;
  if (r->received != r->received_seen) {
    r->received_seen = r->received; /* bytes came: the stall deadline moves */
    r->deadline = now + REBUILD_STALL_MS;
  }
  if (r->held && now >= r->held_until)
    smp_peer_rebuild_held_progress(r);
  if (now >= r->deadline) {
    char busy[96] = "";
    uint32_t mask = 0;
    for (uint32_t i = 0; i < g->n; i++)
      if (busy_lanes(r, i) > 0)
        mask |= 1u << i;
    members_list(busy, sizeof(busy), mask);
    smp_peer_rebuild_fail(r, -ETIMEDOUT, "cannot rebuild step %" PRIu64 " of coding group "
            "%u: nothing received for %u ms%s%s", r->step, g->group, REBUILD_STALL_MS,
            mask ? ": waiting for members " : "", busy);
    return;
  }
  /* links: down too long with fetches due, lost; fetches past their
   * deadline, failed; unsent ones sent */
  uint32_t unlinked = 0;
  for (uint32_t i = 0; i < g->n && smp_peer_rebuild_active(r); i++) {
    if (i == g->member)
      continue;
    struct rb_member *m = &r->mem[i];
    const struct link *l = &r->p->link[i];
    bool up = l->out != NULL && l->out_up;
    if (up)
      m->down_since = 0;
    else if (m->down_since == 0)
      m->down_since = now;
    if (!up && now >= m->down_since + REBUILD_LINK_MS)
      unlinked |= 1u << i;
    for (unsigned k = 0; k < REBUILD_LANES && smp_peer_rebuild_active(r); k++) {
      struct rb_fetch *x = &m->lane[k];
      if (x->busy && now >= x->deadline)
        smp_peer_rebuild_member_failed(r, i, "no answer in time");
      else if (x->busy && !up && (unlinked & (1u << i)))
        smp_peer_rebuild_member_failed(r, i, "its link is down");
      else if (x->busy && x->again_at != 0 && now >= x->again_at) {
        x->again_at = 0;
        smp_peer_rebuild_send(r, i, x);
      } else if (x->busy && x->unsent && up)
        smp_peer_rebuild_send(r, i, x);
    }
  }
  if (r->state == RB_META && r->table != NULL) {
    /* the layout needs every member's size: a member never linked long
     * enough to say it is lost */
    size_t sz[RS_MAX_MEMBERS];
    if (smp_peer_rebuild_layout_sizes(r, sz)) {
      if (begin_data(r) != 0)
        return;
    } else {
      uint32_t unknown = 0;
      for (uint32_t i = 0; i < g->n; i++)
        if (i != g->member && !r->p->link[i].has_bytes && (unlinked & (1u << i)))
          unknown |= 1u << i;
      if ((unsigned)__builtin_popcount(unknown) + 1 > g->m)
        fail_lost(r, unknown);
      else if (unknown != 0)
        smp_peer_rebuild_fail(r, PT_ESTATE, "cannot rebuild step %" PRIu64 ": the size of "
                "member %u's snapshot is not known (never linked)", r->step,
                (unsigned)__builtin_ctz(unknown));
      return;
    }
  }
  if (r->state == RB_META) {
    uint32_t tried = 0;
    for (uint32_t i = 0; i < g->n; i++) {
      if (i == g->member)
        continue;
      if (busy_lanes(r, i) > 0)
        return; /* one table fetch at a time */
      if (r->mem[i].no_table || (unlinked & (1u << i)))
        tried |= 1u << i;
    }
    for (uint32_t i = 0; i < g->n; i++)
      if (i != g->member && !(tried & (1u << i)) && r->p->link[i].out_up) {
        start_fetch(r, i, true, NULL);
        return;
      }
    uint32_t others = ((1u << g->n) - 1) & ~(1u << g->member);
    if (tried == others) {
      smp_peer_rebuild_fail(r, -ENOENT, "cannot rebuild step %" PRIu64 " of coding group %u: "
              "no member holds this member's checksum table of it", r->step,
              g->group);
    }
    return; /* waiting for a link to come up */
  }
  if (r->state != RB_DATA)
    return;
  for (uint32_t i = 0; i < g->n; i++)
    if ((unlinked & (1u << i)) && !(smp_rebuild_erased(r->rb) & (1u << i))) {
      bool due = false;
      for (unsigned j = 0; j < r->nq && !due; j++)
        due = r->q[j].member == i;
      if (due)
        smp_peer_rebuild_member_failed(r, i, "its link is down");
      if (!smp_peer_rebuild_active(r))
        return;
    }
  r->nq += smp_rebuild_next(r->rb, r->q + r->nq, REBUILD_QUEUE - r->nq);
  for (unsigned j = 0; j < r->nq;) {
    uint32_t i = r->q[j].member;
    if (busy_lanes(r, i) < REBUILD_LANES && r->p->link[i].out_up) {
      struct smp_rebuild_fetch f = r->q[j];
      memmove(&r->q[j], &r->q[j + 1], (r->nq - j - 1) * sizeof(r->q[0]));
      r->nq--;
      start_fetch(r, i, false, &f);
      continue;
    }
    j++;
  }
  if (smp_rebuild_done(r->rb))
    finish(r);
}

static int drive_body(void *arg)
{
  struct smp_peer_rebuild *r = arg;
  smp_peer_rebuild_drive(r);
  if (!smp_peer_rebuild_active(r) && r->timer_on) {
    uv_timer_stop(&r->timer);
    r->timer_on = false;
  }
  return 0;
}

static void on_timer(uv_timer_t *t)
{
  struct smp_peer_rebuild *r = t->data;
  (void)smp_guarded(r->p->smp, drive_body, r);
}

static void timer_start(struct smp_peer_rebuild *r)
{
  if (!r->timer_init) {
    uv_timer_init(&r->p->smp->loop, &r->timer);
    r->timer.data = r;
    r->timer_init = true;
  }
  if (!r->timer_on) {
    uv_timer_start(&r->timer, on_timer, REBUILD_TICK_MS, REBUILD_TICK_MS);
    r->timer_on = true;
  }
}

/* Stops what runs (a new restore point, the object gone): nothing kept. */
static void cancel(struct smp_peer_rebuild *r, bool touch_store)
{
  machine_free(r);
  if (touch_store && r->has_slot && r->p->smp->store != NULL)
    (void)snap_slot_abort(r->p->smp->store, r->slot, r->gen);
  r->has_slot = false;
  free(r->table);
  r->table = NULL;
}

/* ---- the SMP's calls ---- */

bool smp_peer_rebuild_set_restore(struct smp *smp, bool has_step, uint64_t step,
                                  bool damaged)
{
  struct smp_peer_rebuild *r = RB(smp);
  uint32_t slot;

  if (r != NULL) {
    if (smp_peer_rebuild_active(r)) {
      cancel(r, true);
      r->rc = PT_EEPOCH;
      snprintf(r->err, sizeof(r->err), "the restore point changed during the "
               "rebuild of step %" PRIu64, r->step);
      r->state = RB_FAILED;
      smp_peer_rebuild_held_answer(r);
    }
    r->state = RB_NONE;
  }
  if (smp->group.k == 0 || smp->peer == NULL || !has_step ||
      (!damaged && smp->store != NULL &&
       snap_slot_find_step(smp->store, step, &slot) == 0))
    return false;
  if ((r = rb_get(smp)) == NULL)
    return false;
  if (smp->store != NULL) /* nothing of it here; older committed steps stay */
    (void)snap_slot_set_restore_missing(smp->store, step);
  r->state = RB_WAIT;
  r->step = step;
  r->hold_logged = false;
  r->rc = 0;
  r->err[0] = '\0';
  timer_start(r);
  return true;
}

void smp_peer_rebuild_store_gone(struct smp *smp)
{
  struct smp_peer_rebuild *r = RB(smp);
  if (r == NULL || !smp_peer_rebuild_active(r))
    return;
  /* Its slot went with the mapping: begun again with the next object. */
  cancel(r, false);
  r->state = RB_WAIT;
}

void smp_peer_rebuild_stop(struct smp *smp)
{
  struct smp_peer_rebuild *r = RB(smp);
  if (r == NULL)
    return;
  cancel(r, false);
  r->state = RB_NONE;
  r->held = false;
  if (r->timer_init && !uv_is_closing((uv_handle_t *)&r->timer)) {
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
  }
  r->timer_on = false;
  /* r lives until exit, as its smp_peer does */
}

bool smp_peer_rebuild_no_parity(const struct smp_peer *p, uint64_t step)
{
  return p->no_parity && p->no_parity_step == step;
}

