/*
 * bench_bulk.c — bulk frames through the rpc layer (rpc/rpc_bulk.c) over
 * an authenticated TCP loopback connection, beside bench_net.c's plain
 * sockets: the same bytes, the same machine, the same run.
 *
 * A receiver thread runs a libuv loop with an rpc TCP listener; its
 * on_bulk_begin places every payload into a pre-faulted shm buffer (a ring
 * of BULK_RING payloads), into which libuv reads directly, and the rpc
 * layer checks each payload's CRC32C as it arrives. The sender (the calling
 * thread, its own loop) dials with the cluster key and sends BULK_PIECE
 * payloads from one buffer with rpc_conn_send_bulk, backpressure through
 * -EAGAIN and on_drain. The sender's CRC is computed once beforehand, as a
 * snapshot slot's CRCs exist before it is sent. The rate counts payload
 * bytes from the first send (the handshake done) until the receiver has
 * checked the last one; one transfer on a fresh connection per call
 * (ptbench runs rounds: plain sockets, then this). Every loop has a
 * deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"
#include "tests/bench/bench.h"

#define BULK_PIECE ((size_t)4 << 20)
#define BULK_RING (BENCH_NET_RING / BULK_PIECE) /* bench_net.c reads into as much */
#define BULK_QUEUE ((size_t)16 << 20)
#define BULK_TIMEOUT_MS 30000

struct rx {
  uv_loop_t loop;
  uv_timer_t guard;
  struct rpc_listener *l;
  struct rpc_conn *c;
  struct rpc_auth auth;
  uint8_t *dst;
  uint64_t expect, got;
  double t_done;
  int rc;
  int port; /* under mu */
  bool up;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

struct tx {
  uv_loop_t loop;
  uv_timer_t guard;
  struct rpc_conn *c;
  const uint8_t *src;
  struct rpc_bulk_hdr h;
  uint64_t n, queued, sent;
  double t0;
  int rc;
};

static void rx_end(struct rx *r, int rc)
{
  if (r->rc == 0)
    r->rc = rc;
  if (r->c != NULL)
    rpc_conn_close(r->c, 0);
  if (r->l != NULL)
    rpc_listener_close(r->l);
  r->l = NULL;
  if (!uv_is_closing((uv_handle_t *)&r->guard))
    uv_close((uv_handle_t *)&r->guard, NULL);
}

static int rx_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h, void **dst)
{
  struct rx *r = rpc_conn_data(c);

  if (h->length != BULK_PIECE)
    return -EINVAL;
  *dst = r->dst + (h->offset % BULK_RING) * BULK_PIECE;
  return PT_OK;
}

static void rx_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h, void *dst,
                    int status)
{
  struct rx *r = rpc_conn_data(c);

  (void)dst;
  if (status != PT_OK) {
    rx_end(r, status);
    return;
  }
  r->got += h->length;
  if (r->got >= r->expect) {
    r->t_done = bench_now();
    rx_end(r, 0);
  }
}

static void rx_close(struct rpc_conn *c, int err)
{
  struct rx *r = rpc_conn_data(c);

  r->c = NULL;
  rx_end(r, r->got >= r->expect ? 0 : (err != 0 ? err : -ECONNRESET));
}

static int rx_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  struct rx *r = rpc_listener_data(l);

  if (r->c != NULL)
    return -EBUSY; /* one sender per transfer */
  r->c = c;
  return 0;
}

static void rx_guard(uv_timer_t *t)
{
  rx_end(t->data, -ETIMEDOUT);
}

static void *rx_main(void *arg)
{
  struct rx *r = arg;
  struct rpc_conn_ops ops = {.on_close = rx_close, .on_bulk_begin = rx_begin,
                             .on_bulk_done = rx_done,
                             .max_bulk = BULK_PIECE};
  int rc = uv_loop_init(&r->loop);

  if (rc == 0) {
    uv_timer_init(&r->loop, &r->guard);
    r->guard.data = r;
    uv_timer_start(&r->guard, rx_guard, BULK_TIMEOUT_MS, 0);
    rc = rpc_listen_tcp(&r->loop, "127.0.0.1", 0, &ops, &r->auth, rx_accept, r,
                        &r->l);
  }
  pthread_mutex_lock(&r->mu);
  r->port = rc == 0 ? rpc_listener_port(r->l) : -1;
  r->rc = rc;
  r->up = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (rc == 0 || r->guard.loop != NULL) {
    if (rc != 0)
      uv_close((uv_handle_t *)&r->guard, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
  }
  return NULL;
}

static void tx_end(struct tx *t, int rc)
{
  if (t->rc == 0)
    t->rc = rc;
  if (t->c != NULL)
    rpc_conn_close(t->c, 0);
  if (!uv_is_closing((uv_handle_t *)&t->guard))
    uv_close((uv_handle_t *)&t->guard, NULL);
}

static void tx_sent(struct rpc_conn *c, void *arg, int status)
{
  struct tx *t = arg;

  (void)c;
  if (status != PT_OK) {
    tx_end(t, status);
    return;
  }
  if (++t->sent == t->n)
    tx_end(t, 0);
}

static void tx_pump(struct tx *t)
{
  while (t->c != NULL && t->queued < t->n) {
    t->h.offset = t->queued;
    int rc = rpc_conn_send_bulk(t->c, &t->h, t->src, tx_sent, t);
    if (rc == -EAGAIN)
      return; /* on_drain resumes */
    if (rc < 0) {
      tx_end(t, rc);
      return;
    }
    t->queued++;
  }
}

static void tx_ready(struct rpc_conn *c)
{
  struct tx *t = rpc_conn_data(c);

  t->t0 = bench_now();
  tx_pump(t);
}

static void tx_drain(struct rpc_conn *c)
{
  tx_pump(rpc_conn_data(c));
}

static void tx_close(struct rpc_conn *c, int err)
{
  struct tx *t = rpc_conn_data(c);

  t->c = NULL;
  tx_end(t, t->sent == t->n ? 0 : (err != 0 ? err : -ECONNRESET));
}

static void tx_guard(uv_timer_t *g)
{
  tx_end(g->data, -ETIMEDOUT);
}

/* One transfer of n payloads on a fresh connection. OUT: seconds. */
static int one_transfer(uint8_t *dst, const uint8_t *src, uint32_t crc,
                        const struct rpc_auth *auth, uint64_t n, double *secs,
                        char *errbuf, size_t errlen)
{
  struct rx r = {.dst = dst, .expect = n * BULK_PIECE, .auth = *auth};
  struct tx t = {.src = src, .n = n};
  struct rpc_conn_ops ops = {.on_close = tx_close, .on_ready = tx_ready,
                             .on_drain = tx_drain,
                             .bulk_queue_max = BULK_QUEUE};
  struct rpc_auth me = *auth;
  pthread_t th;
  int rc;

  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  rc = -pthread_create(&th, NULL, rx_main, &r);
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot start the receiver thread: %s",
             pt_strerror(rc));
    return rc;
  }
  pthread_mutex_lock(&r.mu);
  while (!r.up)
    pthread_cond_wait(&r.cv, &r.mu); /* rx_main always sets it, at once */
  int port = r.port;
  pthread_mutex_unlock(&r.mu);
  if (port < 0) {
    rc = r.rc;
    pthread_join(th, NULL);
    snprintf(errbuf, errlen, "cannot listen on loopback TCP: %s",
             pt_strerror(rc));
    return rc;
  }

  t.h = (struct rpc_bulk_hdr){.kind = 1, .length = BULK_PIECE, .crc32c = crc};
  snprintf(me.node_id, sizeof(me.node_id), "ptbench-tx");
  rc = uv_loop_init(&t.loop);
  if (rc == 0) {
    uv_timer_init(&t.loop, &t.guard);
    t.guard.data = &t;
    uv_timer_start(&t.guard, tx_guard, BULK_TIMEOUT_MS, 0);
    rc = rpc_conn_connect_tcp(&t.loop, "127.0.0.1", port, &ops, &me,
                              BULK_TIMEOUT_MS, &t, &t.c);
    if (rc < 0) {
      t.rc = rc;
      uv_close((uv_handle_t *)&t.guard, NULL);
    }
    uv_run(&t.loop, UV_RUN_DEFAULT);
    uv_loop_close(&t.loop);
    rc = t.rc;
  }
  pthread_join(th, NULL);
  if (rc == 0)
    rc = r.rc;
  if (rc < 0) {
    snprintf(errbuf, errlen, "bulk frames over loopback TCP failed: %s",
             pt_strerror(rc));
    return rc;
  }
  *secs = r.t_done - t.t0;
  return 0;
}

int bench_bulk_run(const struct bench_opts *o, struct bench_bulk_result *r,
                   char *errbuf, size_t errlen)
{
  enum { REPS = 1 }; /* per round: ptbench runs the rounds */
  uint64_t total = o->quick ? (256ull << 20) : (1ull << 30);
  uint64_t n = total / BULK_PIECE;
  size_t ring = BULK_RING * BULK_PIECE;
  struct rpc_auth auth = {.role = 0};
  double t[REPS];
  int rc = 0;

  memset(r, 0, sizeof(*r));
  /* The destination, as an SMP's slots are. */
  uint8_t *dst = bench_shm_buffer(o->shm_prefix, "bulk", ring, &rc, errbuf,
                                  errlen);
  if (dst == NULL)
    return rc;
  uint8_t *src = malloc(BULK_PIECE);
  if (src == NULL) {
    munmap(dst, ring);
    return -ENOMEM;
  }
  bench_fill(src, BULK_PIECE, 11);
  uint32_t crc = crc32c_update(CRC32C_SEED, src, BULK_PIECE);
  bench_fill(auth.key, sizeof(auth.key), 13);
  snprintf(auth.node_id, sizeof(auth.node_id), "ptbench-rx");

  for (int i = 0; i < REPS && rc == 0; i++)
    rc = one_transfer(dst, src, crc, &auth, n, &t[i], errbuf, errlen);
  if (rc == 0 && memcmp(dst, src, BULK_PIECE) != 0) {
    rc = PT_ECHECKSUM;
    snprintf(errbuf, errlen, "bulk frames: the payload landed damaged");
  }
  free(src);
  munmap(dst, ring);
  if (rc < 0)
    return rc;
  r->bytes = n * BULK_PIECE;
  r->piece = BULK_PIECE;
  r->bulk_gbps = (double)r->bytes / bench_median(t, REPS) / 1e9;
  return 0;
}
