/*
 * smp_peer_relay.c — this SMP's part in a pipelined rebuild of another
 * member (repair pipelining, Li et al., USENIX ATC 2017; DESIGN.md
 * "Restore" 2). The rebuilding member asks one survivor of a stripe for
 * the lost piece's slice as a sum: a PEER_FETCH with this member's
 * coefficient and a chain of the other sources (PeerFetch in pt.proto).
 * The last of the chain answers coef times its piece; each one before it
 * asks the next on its own link, adds coef times its piece to what comes
 * back, and answers its asker with the sum. So the rebuilding member
 * receives one piece's worth of bytes per lost byte instead of k, and each
 * survivor sends as many as it would have anyway.
 *
 * An SMP started with PT_REPAIR_PIPELINE=0 refuses every such fetch
 * (-EOPNOTSUPP): its rebuilding members fetch piece by piece.
 *
 * Nothing is trusted: a coefficient past a byte, a chain longer than the
 * group allows, a hop that is this member, the asker, out of the group or
 * named twice is refused; so is a relay past RELAY_MAX at once (-EAGAIN,
 * asked again). What the next member answers (a refusal, a wrong length,
 * a CRC failure, nothing within RELAY_MS, its link gone) is passed on as a
 * refusal naming it (a link to the next member not up yet: -EAGAIN, asked
 * again): the rebuilding member then fetches every piece itself, and
 * finds who is at fault there. This member's own piece is
 * looked up again when the sum comes back (the step may have gone
 * meanwhile) and read under the SIGBUS guard. Each relay holds one buffer
 * of its length (at most PEER_PIECE) until its answer is sent; the asker's
 * conn may go at any time, and then the answer is dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "ec/rs.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"

#define RELAY_MAX 16u
#define RELAY_MS 2000u /* the next member's answer (the asker waits 3 s) */

enum relay_state { R_FREE, R_UP, R_SEND };

struct relay {
  enum relay_state st;
  bool landing;               /* the next member's sum being read into buf */
  bool gone;                  /* the asker answered or gone: nothing more */
  struct smp_peer *p;
  struct rpc_conn *from;      /* the asker's conn (NULL once it closed) */
  uint64_t from_id;
  uint32_t up;                /* the next member */
  uint64_t tag;
  uint64_t step, off, len, deadline;
  uint32_t what, index;
  uint8_t coef;
  uint8_t *buf;
  size_t cap;
};

struct smp_peer_relay {
  struct relay r[RELAY_MAX];
  uint64_t seq;
};

static struct smp_peer_relay *relays(struct smp_peer *p)
{
  if (p->relay == NULL)
    p->relay = calloc(1, sizeof(*p->relay));
  return p->relay;
}

static void relay_free(struct relay *x)
{
  x->st = R_FREE;
  x->landing = false;
  x->gone = false;
  x->from = NULL; /* buf stays, for the next relay */
}

/* The asker hears why not (once). */
static void relay_refuse(struct relay *x, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void relay_refuse(struct relay *x, int rc, const char *fmt, ...)
{
  char why[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  if (!x->gone && x->from != NULL)
    smp_peer_serve_refuse(x->from, x->from_id, x->step, x->index, rc, "%s", why);
  x->gone = true;
}

static void relay_sent(struct rpc_conn *c, void *arg, int status)
{
  struct relay *x = arg;
  (void)c;
  (void)status;
  relay_free(x);
}

/* buf += coef * this member's piece, or buf = it (first); then the sum to
 * the asker. */
static void answer(struct relay *x, bool first)
{
  struct smp_peer_piece pc;
  char why[256];
  int rc = smp_peer_serve_piece(x->p, x->step, x->what, x->index, &pc, why, sizeof(why));
  if (rc != 0) {
    relay_refuse(x, rc, "%s", why);
    relay_free(x);
    return;
  }
  uint64_t n = x->off >= pc.end ? 0 : pc.end - x->off < x->len ? pc.end - x->off : x->len;
  if (first)
    memset(x->buf + n, 0, (size_t)(x->len - n)); /* a data piece's zeros */
  rs_scale_fold((size_t)n, x->coef, pc.base + x->off, x->buf, first);
  if (x->from == NULL) {
    relay_free(x); /* the asker went meanwhile */
    return;
  }
  struct rpc_bulk_hdr h = {.kind = PEER_BULK_SUM, .tag = x->from_id, .offset = x->off,
                           .length = x->len, .crc32c = crc32c(x->buf, (size_t)x->len)};
  x->st = R_SEND;
  rc = rpc_conn_send_bulk(x->from, &h, x->buf, relay_sent, x);
  if (rc != PT_OK) {
    x->st = R_UP;
    relay_refuse(x, rc == -EAGAIN ? -EAGAIN : rc, "member %u could not send its "
                 "sum: %s", x->p->smp->group.member, pt_strerror(rc));
    relay_free(x);
  }
}

int smp_peer_relay_check(const struct link *l, const Pt__PeerFetch *f, uint64_t len,
                         char *why, size_t whylen)
{
  const struct smp_peer *p = l->p;
  const struct code_group *g = &p->smp->group;

  if (!p->smp->rebuild_chain) {
    snprintf(why, whylen, "member %u relays no sums (PT_REPAIR_PIPELINE=0)", g->member);
    return -EOPNOTSUPP;
  }
  if (f->coef > 255 || f->what > 1 || len == 0) {
    snprintf(why, whylen, "coefficient %u of kind %u, %" PRIu64 " bytes: not a term",
             f->coef, f->what, len);
    return PT_EPROTO;
  }
  if (f->n_chain + 2 > g->n) {
    snprintf(why, whylen, "a chain of %zu members in a group of %u", f->n_chain, g->n);
    return PT_EPROTO;
  }
  uint32_t seen = (1u << g->member) | (1u << l->member);
  for (size_t i = 0; i < f->n_chain; i++) {
    const Pt__PeerHop *h = f->chain[i];
    if (h->member >= g->n || (seen & (1u << h->member)) || h->coef > 255 || h->what > 1) {
      snprintf(why, whylen, "hop %zu of the chain (member %u, kind %u, coefficient %u) "
               "is not another member's term", i, h->member, h->what, h->coef);
      return PT_EPROTO;
    }
    seen |= 1u << h->member;
  }
  return 0;
}

void smp_peer_relay_fetch(struct link *l, uint64_t id, const Pt__PeerFetch *f,
                          uint64_t off, uint64_t len)
{
  struct smp_peer *p = l->p;
  const struct code_group *g = &p->smp->group;
  struct smp_peer_relay *rl = relays(p);

#define NO(rc, ...) smp_peer_serve_refuse(l->in, id, f->step, f->index, (rc), __VA_ARGS__)
  struct relay *x = NULL;
  for (unsigned i = 0; rl != NULL && i < RELAY_MAX && x == NULL; i++)
    if (rl->r[i].st == R_FREE)
      x = &rl->r[i];
  if (x == NULL) {
    NO(-EAGAIN, "member %u relays %u sums already", g->member, RELAY_MAX);
    return;
  }
  if (x->cap < len) {
    free(x->buf);
    x->cap = 0;
    if ((x->buf = malloc((size_t)len)) == NULL) {
      NO(-EAGAIN, "member %u has no memory for a sum now", g->member);
      return;
    }
    x->cap = (size_t)len;
  }
#undef NO
  *x = (struct relay){.st = R_UP, .p = p, .from = l->in,
                      .from_id = id, .step = f->step, .off = off, .len = len,
                      .what = f->what, .index = f->index, .coef = (uint8_t)f->coef,
                      .buf = x->buf, .cap = x->cap};
  if (f->n_chain == 0) {
    answer(x, true); /* the chain's last term */
    return;
  }
  const Pt__PeerHop *next = f->chain[0];
  struct link *ul = &p->link[next->member];
  if (ul->out == NULL || !ul->out_up) {
    /* (links come up within moments of a new epoch: asked again, until
     * the asker's own deadline) */
    relay_refuse(x, -EAGAIN, "member %u is not linked to member %u yet", g->member,
                 next->member);
    relay_free(x);
    return;
  }
  Pt__PeerFetch q = PT__PEER_FETCH__INIT;
  q.step = f->step;
  q.what = next->what;
  q.index = next->index;
  q.has_offset = true;
  q.offset = off;
  q.has_length = true;
  q.length = len;
  q.has_coef = true;
  q.coef = next->coef;
  q.n_chain = f->n_chain - 1;
  q.chain = f->chain + 1;
  x->up = next->member;
  x->tag = PEER_RELAY_TAG | ++rl->seq;
  x->deadline = rpc_now_ms() + RELAY_MS;
  int rc = rpc_conn_send(ul->out, RPC_PEER_FETCH, x->tag, &q.base);
  if (rc != PT_OK) {
    relay_refuse(x, rc, "member %u could not ask member %u: %s", g->member,
                 next->member, pt_strerror(rc));
    relay_free(x);
  }
}

static struct relay *find(struct smp_peer *p, uint32_t up, uint64_t tag)
{
  for (unsigned i = 0; p->relay != NULL && i < RELAY_MAX; i++) {
    struct relay *x = &p->relay->r[i];
    if (x->st == R_UP && x->up == up && x->tag == tag)
      return x;
  }
  return NULL;
}

int smp_peer_relay_reply(struct link *l, const struct rpc_hdr *h, ProtobufCMessage *msg)
{
  struct relay *x = find(l->p, l->member, h->request_id);
  if (x == NULL || x->landing)
    return 0; /* given up */
  if (h->type == RPC_PEER_ACK) {
    const Pt__PeerAck *a = (const Pt__PeerAck *)msg;
    relay_refuse(x, a->status < 0 ? a->status : PT_EPROTO, "member %u: %s", l->member,
                 a->message != NULL ? LOG_ESC(a->message) : pt_strerror(a->status));
  } else {
    relay_refuse(x, PT_EPROTO, "member %u answered a sum with a table", l->member);
  }
  relay_free(x);
  return 0;
}

int smp_peer_relay_bulk_begin(struct link *l, const struct rpc_bulk_hdr *h, void **dst)
{
  struct relay *x = find(l->p, l->member, h->tag);
  *dst = NULL;
  if (x == NULL || x->landing || x->gone)
    return PT_OK; /* discarded */
  if ((h->kind & 0xffu) != PEER_BULK_SUM) {
    relay_refuse(x, PT_EPROTO, "member %u answered a sum with its plain piece (an SMP "
                 "without repair pipelining?)", l->member);
    relay_free(x);
    return PT_OK;
  }
  if (h->offset != x->off || h->length != x->len) {
    relay_refuse(x, PT_EPROTO, "member %u sent %" PRIu64 " bytes at %" PRIu64 " for %"
                 PRIu64 " at %" PRIu64, l->member, h->length, h->offset, x->len, x->off);
    relay_free(x);
    return PT_OK;
  }
  x->landing = true;
  *dst = x->buf;
  return PT_OK;
}

struct done_call {
  struct link *l;
  const struct rpc_bulk_hdr *h;
  int status;
};

static int done_body(void *arg)
{
  struct done_call *d = arg;
  struct relay *x = find(d->l->p, d->l->member, d->h->tag);
  if (x == NULL || !x->landing)
    return 0;
  x->landing = false;
  if (x->gone) {
    relay_free(x);
    return 0;
  }
  if (d->status != PT_OK) {
    relay_refuse(x, d->status == PT_ECHECKSUM ? PT_ECHECKSUM : -ECONNRESET,
                 "the sum from member %u came in with %s", d->l->member,
                 pt_strerror(d->status));
    relay_free(x);
    return 0;
  }
  answer(x, false);
  return 0;
}

void smp_peer_relay_bulk_done(struct link *l, const struct rpc_bulk_hdr *h, int status)
{
  struct done_call d = {.l = l, .h = h, .status = status};
  (void)smp_guarded(l->p->smp, done_body, &d);
}

void smp_peer_relay_link_down(struct link *l)
{
  struct smp_peer *p = l->p;
  for (unsigned i = 0; p->relay != NULL && i < RELAY_MAX; i++) {
    struct relay *x = &p->relay->r[i];
    if (x->st != R_UP || x->up != l->member)
      continue;
    relay_refuse(x, -ECONNRESET, "the link of member %u to member %u broke",
                 p->smp->group.member, l->member);
    /* a payload landing in buf: the conn is closed (or closes now, before
     * the loop reads again), so nothing more is written into it */
    relay_free(x);
  }
}

void smp_peer_relay_conn_gone(struct smp_peer *p, struct rpc_conn *c)
{
  for (unsigned i = 0; p->relay != NULL && i < RELAY_MAX; i++) {
    struct relay *x = &p->relay->r[i];
    if (x->st != R_FREE && x->from == c) {
      x->from = NULL; /* its answer is dropped; the tick frees it */
      x->gone = true;
    }
  }
}

void smp_peer_relay_tick(struct smp_peer *p)
{
  uint64_t now = rpc_now_ms();
  for (unsigned i = 0; p->relay != NULL && i < RELAY_MAX; i++) {
    struct relay *x = &p->relay->r[i];
    if (x->st != R_UP)
      continue;
    if (!x->gone && now >= x->deadline)
      relay_refuse(x, -ETIMEDOUT, "member %u did not answer member %u within %u ms",
                   x->up, p->smp->group.member, RELAY_MS);
    if (x->gone && !x->landing)
      relay_free(x);
  }
}
