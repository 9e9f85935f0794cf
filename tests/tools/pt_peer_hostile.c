/*
 * pt-peer-hostile — a test tool: a hostile client on a coded SMP's peer
 * port (daemon/smp/smp_peer_link.c), holding the cluster key.
 *
 *   pt-peer-hostile [--live] KEY HOST PORT JOB GROUP MEMBER K M NODE_OF_MEMBER...
 *
 * GROUP and MEMBER are the SMP's (the acceptor's); NODE_OF_MEMBER lists
 * every member's node id in member order (so the tool can claim to be
 * another member). Each case dials the port, authenticates and does one
 * wrong thing; the case passes when the SMP answers as it must:
 *
 *   role       authenticated as ptctl, not as an SMP      -> closed
 *   stranger   an SMP of a node outside the group         -> closed
 *   job        PEER_HELLO naming another job              -> closed
 *   member     PEER_HELLO claiming a member of another    -> closed
 *              node than the handshake proved
 *   type       after a good HELLO, a frame of a type the  -> closed
 *              link does not carry (PEER_ACK)
 *   kind       a bulk frame of another kind than a piece  -> closed
 *   oversized  a piece longer than the link's limit       -> closed
 *   crc        a piece whose bytes fail its CRC32C        -> PEER_ACK < 0
 *   step       a piece of a step the SMP never began      -> PEER_ACK < 0
 *   chunk      a piece of a chunk out of the layout       -> PEER_ACK < 0
 *   sumcoef    a pipelined fetch (PEER_FETCH with a coef-   -> PEER_ACK
 *              ficient) whose coefficient is past a byte       PT_EPROTO
 *   sumself    one whose chain names the SMP itself        -> PEER_ACK PT_EPROTO
 *   sumasker   one whose chain names the asker             -> PEER_ACK PT_EPROTO
 *   sumlong    one whose chain is longer than the group    -> PEER_ACK PT_EPROTO
 *   sumempty   one of 0 bytes                              -> PEER_ACK PT_EPROTO
 *              (each refused before the step is looked up:
 *              this SMP holds none)
 *   takeover   a second link claiming a member whose link   -> closed, the
 *              is live                                         first kept
 *
 * --live: the SMP's group runs (every member's link is live), so a HELLO
 * claiming a member is refused as a takeover: only the cases before and
 * at the HELLO run (role, stranger, job, member, takeover), each -> closed.
 * Without it the tool is the only other member linked (an SMP whose group
 * mates are not running) and every case runs.
 *
 * Each case has a deadline (5 s). Prints one line per case; exit 0 when
 * all passed, 1 naming those that did not, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"

#define CASE_MS 5000u

enum want { W_CLOSED, W_NACK, W_NACK_PROTO };

struct run {
  uv_loop_t loop;
  uv_timer_t timer;
  struct rpc_conn *c;
  bool ready, closed, timed_out, got_nack, got_ready;
  int close_err, nack_status;
  char nack_msg[256];
};

static struct {
  struct rpc_auth auth;
  const char *host, *job;
  int port;
  uint32_t group, member, k, m, n;
  const char *nodes[32];
} A;

static uint8_t payload[5u << 20]; /* past the link's 4 MiB pieces */

static void on_timer(uv_timer_t *t)
{
  struct run *r = t->data;
  r->timed_out = true;
  if (r->c != NULL && !r->closed)
    rpc_conn_close(r->c, -ETIMEDOUT);
  uv_stop(&r->loop);
}

static int on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                  ProtobufCMessage *msg)
{
  struct run *r = rpc_conn_data(c);
  if (h->type == RPC_PEER_READY) {
    r->got_ready = true;
  } else if (h->type == RPC_PEER_ACK) {
    const Pt__PeerAck *a = (const Pt__PeerAck *)msg;
    if (a->status < 0) {
      r->got_nack = true;
      r->nack_status = a->status;
      snprintf(r->nack_msg, sizeof(r->nack_msg), "%s",
               a->message ? a->message : "");
      uv_stop(&r->loop);
    }
  }
  return 0;
}

static void on_close(struct rpc_conn *c, int err)
{
  struct run *r = rpc_conn_data(c);
  r->closed = true;
  r->close_err = err;
  r->c = NULL;
  uv_stop(&r->loop);
}

static void on_ready(struct rpc_conn *c)
{
  struct run *r = rpc_conn_data(c);
  r->ready = true;
  uv_stop(&r->loop);
}

/* Runs the loop until something stops it or the case's deadline. */
static void spin(struct run *r)
{
  uv_run(&r->loop, UV_RUN_DEFAULT);
}

static int open_run(struct run *r, uint32_t role, const char *node)
{
  memset(r, 0, sizeof(*r));
  uv_loop_init(&r->loop);
  uv_timer_init(&r->loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, on_timer, CASE_MS, 0);
  struct rpc_auth au = A.auth;
  au.role = role;
  snprintf(au.node_id, sizeof(au.node_id), "%s", node);
  struct rpc_conn_ops ops = {.on_msg = on_msg, .on_close = on_close,
                             .on_ready = on_ready};
  return rpc_conn_connect_tcp(&r->loop, A.host, A.port, &ops, &au, CASE_MS,
                              r, &r->c);
}

static void close_run(struct run *r)
{
  if (r->c != NULL && !r->closed)
    rpc_conn_close(r->c, 0);
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, NULL);
  while (uv_run(&r->loop, UV_RUN_NOWAIT) != 0)
    ;
  uv_loop_close(&r->loop);
}

static void hello(struct run *r, const char *job, uint32_t from)
{
  Pt__PeerHello h = PT__PEER_HELLO__INIT;
  h.job = (char *)job;
  h.epoch = 0;
  h.group = A.group;
  h.from = from;
  h.to = A.member;
  h.k = A.k;
  h.m = A.m;
  rpc_conn_send(r->c, RPC_PEER_HELLO, 0, &h.base);
}

static void piece(struct run *r, uint32_t kind, uint64_t step, uint64_t len,
                  bool bad_crc)
{
  struct rpc_bulk_hdr h = {.kind = kind, .tag = step, .offset = 0,
                           .length = len};
  h.crc32c = crc32c(payload, (size_t)len) ^ (bad_crc ? 1u : 0u);
  rpc_conn_send_bulk(r->c, &h, payload, NULL, NULL);
}

/* A pipelined fetch (repair pipelining's PEER_FETCH with a coefficient)
 * of step 1: coef, length and a chain of nhops members. */
static void sum_fetch(struct run *r, uint32_t coef, uint64_t len, const uint32_t *hops,
                      unsigned nhops)
{
  Pt__PeerFetch f = PT__PEER_FETCH__INIT;
  Pt__PeerHop hop[40], *hp[40];
  f.step = 1;
  f.what = 0;
  f.index = 0;
  f.has_offset = true;
  f.offset = 0;
  f.has_length = true;
  f.length = len;
  f.has_coef = true;
  f.coef = coef;
  for (unsigned i = 0; i < nhops && i < 40; i++) {
    pt__peer_hop__init(&hop[i]);
    hop[i].member = hops[i];
    hop[i].coef = 1;
    hp[i] = &hop[i];
  }
  f.n_chain = nhops;
  f.chain = hp;
  rpc_conn_send(r->c, RPC_PEER_FETCH, 77, &f.base);
}

/* One case: connect as (role, node), then what() does its wrong thing. */
static bool one(const char *name, uint32_t role, const char *node,
                int kind, enum want want)
{
  struct run r;
  uint32_t other = (A.member + 1) % A.n;
  int rc = open_run(&r, role, node);
  bool ok = false;

  if (rc != 0) {
    printf("%-10s FAIL: cannot dial: %s\n", name, pt_strerror(rc));
    return false;
  }
  spin(&r); /* ready, or closed at the handshake */
  if (r.ready) {
    switch (kind) {
    case 0: /* only the handshake: wait */
      break;
    case 1:
      hello(&r, "another-job", other);
      break;
    case 2: /* a member whose node is not the one we proved */
      hello(&r, A.job, (other + 1) % A.n == A.member ? other
                                                      : (other + 1) % A.n);
      break;
    default: /* 9 and the cases after a good HELLO */
      hello(&r, A.job, other);
      break;
    }
    if (kind >= 3) {
      uv_timer_again(&r.timer);
      switch (kind) {
      case 3: {
        Pt__PeerAck a = PT__PEER_ACK__INIT;
        rpc_conn_send(r.c, RPC_PEER_ACK, 0, &a.base);
        break;
      }
      case 4:
        piece(&r, 7u, 1, 64, false);
        break;
      case 5:
        piece(&r, 1u, 1, sizeof(payload), false);
        break;
      case 6:
        piece(&r, 1u, UINT64_C(1) << 60, 64, true);
        break;
      case 7:
        piece(&r, 1u, UINT64_C(1) << 60, 64, false);
        break;
      case 8:
        piece(&r, 1u | (31u << 8), UINT64_C(1) << 60, 64, false);
        break;
      case 10:
        sum_fetch(&r, 256, 64, NULL, 0);
        break;
      case 11: {
        uint32_t self = A.member;
        sum_fetch(&r, 7, 64, &self, 1);
        break;
      }
      case 12:
        sum_fetch(&r, 7, 64, &other, 1); /* the asker itself */
        break;
      case 13: {
        uint32_t many[40];
        for (unsigned i = 0; i < A.n; i++)
          many[i] = i;
        sum_fetch(&r, 7, 64, many, A.n);
        break;
      }
      case 14:
        sum_fetch(&r, 7, 0, NULL, 0);
        break;
      }
    }
    if (!r.closed)
      spin(&r);
  }
  if (want == W_CLOSED)
    ok = r.closed && !r.timed_out;
  else if (want == W_NACK_PROTO)
    ok = r.got_nack && r.nack_status == PT_EPROTO && !r.timed_out && !r.closed;
  else
    ok = r.got_nack && !r.timed_out;
  printf("%-10s %s", name, ok ? "ok" : "FAIL");
  if (r.closed)
    printf(": closed (%s)", pt_strerror(r.close_err));
  if (r.got_nack)
    printf(": refused with %s: %s", pt_err_name(r.nack_status), r.nack_msg);
  if (r.timed_out)
    printf(": nothing within %u ms", CASE_MS);
  printf("\n");
  close_run(&r);
  usleep(100000); /* the SMP has seen this link end before the next */
  return ok;
}

/* A first link as member `other` (taken: READY comes), then a second one
 * while the first is live: the second is closed, the first kept. */
static bool takeover(uint32_t role, const char *node)
{
  struct run a, b;
  uint32_t other = (A.member + 1) % A.n;
  bool ok = false;
  if (open_run(&a, role, node) != 0)
    return false;
  spin(&a);
  if (a.ready) {
    hello(&a, A.job, other);
    uv_timer_again(&a.timer);
    while (!a.got_ready && !a.closed && !a.timed_out)
      uv_run(&a.loop, UV_RUN_ONCE);
  }
  if (a.got_ready && !a.closed && open_run(&b, role, node) == 0) {
    spin(&b);
    if (b.ready) {
      hello(&b, A.job, other);
      uv_timer_again(&b.timer);
      spin(&b);
    }
    /* the first link still answers: nothing closed it meanwhile */
    uv_run(&a.loop, UV_RUN_NOWAIT);
    ok = b.closed && !b.timed_out && !a.closed;
    close_run(&b);
  }
  printf("%-10s %s%s\n", "takeover", ok ? "ok" : "FAIL",
         ok ? ": the second link closed, the first kept" : "");
  close_run(&a);
  return ok;
}

int main(int argc, char **argv)
{
  char err[512];
  bool live = false;

  if (argc > 1 && strcmp(argv[1], "--live") == 0) {
    live = true;
    argv++;
    argc--;
  }

  if (argc < 10) {
    fprintf(stderr, "usage: pt-peer-hostile KEY HOST PORT JOB GROUP MEMBER K "
                    "M NODE_OF_MEMBER...\n");
    return 2;
  }
  if (rpc_key_load(argv[1], A.auth.key, err, sizeof(err)) != 0) {
    fprintf(stderr, "pt-peer-hostile: %s\n", err);
    return 2;
  }
  A.host = argv[2];
  A.port = atoi(argv[3]);
  A.job = argv[4];
  A.group = (uint32_t)strtoul(argv[5], NULL, 10);
  A.member = (uint32_t)strtoul(argv[6], NULL, 10);
  A.k = (uint32_t)strtoul(argv[7], NULL, 10);
  A.m = (uint32_t)strtoul(argv[8], NULL, 10);
  A.n = (uint32_t)(argc - 9);
  if (A.n != A.k + A.m || A.n > 32 || A.member >= A.n) {
    fprintf(stderr, "pt-peer-hostile: %u node ids for %u+%u\n", A.n, A.k,
            A.m);
    return 2;
  }
  for (uint32_t i = 0; i < A.n; i++)
    A.nodes[i] = argv[9 + i];
  for (size_t i = 0; i < sizeof(payload); i++)
    payload[i] = (uint8_t)(i * 131u + 7u);

  const uint32_t smp = PT__PEER_ROLE__PEER_ROLE_SMP;
  const char *other = A.nodes[(A.member + 1) % A.n];
  int failed = 0;
  if (live) {
    failed += !one("role", PT__PEER_ROLE__PEER_ROLE_CTL, other, 0, W_CLOSED);
    failed += !one("stranger", smp, "not-a-member", 0, W_CLOSED);
    failed += !one("job", smp, other, 1, W_CLOSED);
    failed += !one("member", smp, other, 2, W_CLOSED);
    failed += !one("takeover", smp, other, 9, W_CLOSED);
    printf("%d of 5 cases failed\n", failed);
    return failed ? 1 : 0;
  }
  failed += !takeover(smp, other);
  failed += !one("role", PT__PEER_ROLE__PEER_ROLE_CTL, other, 0, W_CLOSED);
  failed += !one("stranger", smp, "not-a-member", 0, W_CLOSED);
  failed += !one("job", smp, other, 1, W_CLOSED);
  failed += !one("member", smp, other, 2, W_CLOSED);
  failed += !one("type", smp, other, 3, W_CLOSED);
  failed += !one("kind", smp, other, 4, W_CLOSED);
  failed += !one("oversized", smp, other, 5, W_CLOSED);
  failed += !one("crc", smp, other, 6, W_NACK);
  failed += !one("step", smp, other, 7, W_NACK);
  failed += !one("chunk", smp, other, 8, W_NACK);
  failed += !one("sumcoef", smp, other, 10, W_NACK_PROTO);
  failed += !one("sumself", smp, other, 11, W_NACK_PROTO);
  failed += !one("sumasker", smp, other, 12, W_NACK_PROTO);
  failed += !one("sumlong", smp, other, 13, W_NACK_PROTO);
  failed += !one("sumempty", smp, other, 14, W_NACK_PROTO);
  printf("%d of 16 cases failed\n", failed);
  return failed ? 1 : 0;
}
