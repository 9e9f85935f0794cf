/*
 * test_rpc_bulk.c — bulk frames (rpc_bulk.c) over an authenticated TCP
 * loopback connection: both ends on one libuv loop in the test's thread,
 * the receiver an accepted conn that places payloads into an mmap'd
 * destination, the sender a dialled conn. Every run of the loop has a
 * deadline.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <uv.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

#define DST_BYTES ((size_t)80 << 20)

struct fx {
  uv_loop_t loop;
  uv_timer_t tick;
  uv_check_t check;
  struct rpc_listener *l;
  struct rpc_conn *rx, *tx;
  struct rpc_auth auth;
  uint8_t *dst;
  uint8_t *src;
  size_t src_len;
  /* receiver */
  int begins, dones, msgs;
  int status[128];
  void *done_dst[128];
  struct rpc_bulk_hdr done_h[128];
  bool discard_next;
  int rx_closes, rx_err;
  /* mid-transfer: bytes seen in dst before the transfer ended */
  size_t partial_seen;
  bool partial_ok;
  size_t cmp_off;   /* where the payload being watched goes */
  size_t heap_seen; /* max rpc_buffered_bytes() during a payload */
  /* sender */
  int tx_ready, tx_closes, tx_err;
  int sent, sent_ok, sent_status;
  int drains;
  int queued, to_send;
  size_t piece;
};

static struct fx F;
static char g_log[4096];
static size_t g_log_len;

static void test_log(enum rpc_log_kind kind, int level, const char *line)
{
  int n = snprintf(g_log + g_log_len, sizeof(g_log) - g_log_len, "<%d>[%d] %s\n",
                   level, (int)kind, line);
  if (n > 0 && g_log_len + (size_t)n < sizeof(g_log))
    g_log_len += (size_t)n;
}

static int rx_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h, void **dst)
{
  (void)c;
  F.begins++;
  if (F.discard_next) {
    F.discard_next = false;
    *dst = NULL;
    return PT_OK;
  }
  if (h->offset + h->length > DST_BYTES)
    return -ERANGE;
  *dst = F.dst + h->offset;
  return PT_OK;
}

static void rx_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h, void *dst,
                    int status)
{
  (void)c;
  ck_assert_int_lt(F.dones, 128);
  F.status[F.dones] = status;
  F.done_dst[F.dones] = dst;
  F.done_h[F.dones] = *h;
  F.dones++;
}

static int rx_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                  ProtobufCMessage *m)
{
  (void)c;
  (void)h;
  (void)m;
  F.msgs++;
  return 0;
}

static void rx_close(struct rpc_conn *c, int err)
{
  (void)c;
  F.rx_closes++;
  F.rx_err = err;
  F.rx = NULL;
}

static int rx_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  (void)l;
  F.rx = c;
  return 0;
}

static void tx_ready(struct rpc_conn *c)
{
  (void)c;
  F.tx_ready++;
}

static void tx_close(struct rpc_conn *c, int err)
{
  (void)c;
  F.tx_closes++;
  F.tx_err = err;
  F.tx = NULL;
}

static void tx_sent(struct rpc_conn *c, void *arg, int status)
{
  (void)c;
  (void)arg;
  F.sent++;
  if (status == PT_OK)
    F.sent_ok++;
  else
    F.sent_status = status;
}

/* After every poll: what has landed in dst so far, mid-transfer. */
static void check_cb(uv_check_t *h)
{
  (void)h;
  if (F.rx == NULL || F.src == NULL)
    return;
  size_t part = rpc_conn_partial_bytes(F.rx);
  size_t heap = rpc_buffered_bytes();
  if (heap > F.heap_seen)
    F.heap_seen = heap;
  /* Bytes of a payload in flight (beyond the frame header and its body). */
  if (part > 4096 && part < F.src_len && part > F.partial_seen) {
    size_t payload = part - 200; /* the header frame's bytes, at most */
    F.partial_seen = part;
    F.partial_ok = memcmp(F.dst + F.cmp_off, F.src, payload) == 0;
  }
}

static void tick_cb(uv_timer_t *t)
{
  (void)t; /* wakes the loop so that run_until checks its condition */
}

static bool run_until(bool (*cond)(void), int ms)
{
  uint64_t end = rpc_now_ms() + (uint64_t)ms;
  while (!cond()) {
    if (rpc_now_ms() > end)
      return false;
    uv_run(&F.loop, UV_RUN_ONCE);
  }
  return true;
}

static bool is_ready(void) { return F.tx_ready == 1 && F.rx != NULL; }

/* Runs between the dial and the handshake's end, when set. */
static void (*g_before_ready)(void);

static void fx_setup(uint64_t max_bulk, size_t bulk_queue_max)
{
  struct rpc_conn_ops rops = {.on_msg = rx_msg, .on_close = rx_close,
                              .on_bulk_begin = rx_begin,
                              .on_bulk_done = rx_done, .max_bulk = max_bulk};
  struct rpc_conn_ops tops = {.on_close = tx_close, .on_ready = tx_ready,
                              .bulk_queue_max = bulk_queue_max,
                              .max_write_queue = (size_t)1 << 20};
  struct rpc_auth ta;

  memset(&F, 0, sizeof(F));
  g_log_len = 0;
  g_log[0] = '\0';
  signal(SIGPIPE, SIG_IGN);
  rpc_set_log_cb(test_log);
  F.dst = mmap(NULL, DST_BYTES, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  ck_assert_ptr_ne(F.dst, MAP_FAILED);
  ck_assert_int_eq(uv_loop_init(&F.loop), 0);
  uv_timer_init(&F.loop, &F.tick);
  uv_timer_start(&F.tick, tick_cb, 10, 10);
  uv_check_init(&F.loop, &F.check);
  uv_check_start(&F.check, check_cb);
  for (unsigned i = 0; i < RPC_KEY_BYTES; i++)
    F.auth.key[i] = (uint8_t)(i * 13 + 1);
  snprintf(F.auth.node_id, sizeof(F.auth.node_id), "rx");
  ck_assert_int_eq(rpc_listen_tcp(&F.loop, "127.0.0.1", 0, &rops, &F.auth,
                                  rx_accept, NULL, &F.l), PT_OK);
  ta = F.auth;
  snprintf(ta.node_id, sizeof(ta.node_id), "tx");
  ck_assert_int_eq(rpc_conn_connect_tcp(&F.loop, "127.0.0.1",
                                        rpc_listener_port(F.l), &tops, &ta,
                                        5000, NULL, &F.tx), PT_OK);
  if (g_before_ready != NULL)
    g_before_ready();
  ck_assert(run_until(is_ready, 5000));
}

static bool all_closed(void) { return F.rx == NULL && F.tx == NULL; }

static void fx_teardown(void)
{
  if (F.rx != NULL)
    rpc_conn_close(F.rx, 0);
  if (F.tx != NULL)
    rpc_conn_close(F.tx, 0);
  ck_assert(run_until(all_closed, 5000));
  rpc_listener_close(F.l);
  uv_close((uv_handle_t *)&F.tick, NULL);
  uv_close((uv_handle_t *)&F.check, NULL);
  uv_run(&F.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&F.loop), 0);
  munmap(F.dst, DST_BYTES);
  free(F.src);
}

static void src_make(size_t len, uint64_t seed)
{
  free(F.src);
  F.src = malloc(len);
  ck_assert_ptr_nonnull(F.src);
  F.src_len = len;
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    F.src[i] = (uint8_t)x;
  }
}

static struct rpc_bulk_hdr hdr_of(uint64_t offset, size_t len, const void *p)
{
  struct rpc_bulk_hdr h = {.kind = 2, .tag = 77, .offset = offset,
                           .length = len};
  h.crc32c = crc32c_update(CRC32C_SEED, p, len);
  return h;
}

static int g_want_dones;
static bool dones_reached(void) { return F.dones >= g_want_dones; }
static bool msgs_reached(void) { return F.msgs >= 1; }

START_TEST(bulk_lands_in_destination)
{
  const size_t len = (size_t)32 << 20, off = 4096;

  fx_setup(0, 0);
  src_make(len, 1);
  struct rpc_bulk_hdr h = hdr_of(off, len, F.src);
  F.cmp_off = off;
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, tx_sent, NULL), PT_OK);
  /* A control frame behind it: the stream stays in step. */
  Pt__Stop stop = PT__STOP__INIT;
  ck_assert_int_eq(rpc_conn_send(F.tx, RPC_STOP, 5, &stop.base), PT_OK);
  g_want_dones = 1;
  ck_assert(run_until(dones_reached, 10000));
  ck_assert(run_until(msgs_reached, 5000));
  ck_assert_int_eq(F.begins, 1);
  ck_assert_int_eq(F.status[0], PT_OK);
  /* The bytes are where on_bulk_begin said, and nowhere around it. */
  ck_assert_ptr_eq(F.done_dst[0], F.dst + off);
  ck_assert(memcmp(F.dst + off, F.src, len) == 0);
  for (size_t i = 0; i < off; i++)
    ck_assert_uint_eq(F.dst[i], 0);
  ck_assert_uint_eq(F.dst[off + len], 0);
  ck_assert_uint_eq(F.done_h[0].kind, 2);
  ck_assert_uint_eq(F.done_h[0].tag, 77);
  ck_assert_uint_eq(F.done_h[0].length, len);
  /* They arrived there read by read (seen mid-transfer), never through a
   * heap buffer of the parser. */
  ck_assert_msg(F.partial_seen > 0, "no partial payload seen");
  ck_assert(F.partial_ok);
  ck_assert_uint_eq(F.heap_seen, 0);
  ck_assert_int_eq(F.sent, 1);
  ck_assert_int_eq(F.sent_ok, 1);
  fx_teardown();
}
END_TEST

START_TEST(bulk_crc_mismatch_fails_that_transfer)
{
  const size_t len = (size_t)1 << 20;

  fx_setup(0, 0);
  src_make(len, 2);
  struct rpc_bulk_hdr bad = hdr_of(0, len, F.src);
  bad.crc32c ^= 1;
  struct rpc_bulk_hdr good = hdr_of(len, len, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &bad, F.src, tx_sent, NULL), PT_OK);
  F.discard_next = false;
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &good, F.src, tx_sent, NULL), PT_OK);
  g_want_dones = 2;
  ck_assert(run_until(dones_reached, 10000));
  ck_assert_int_eq(F.status[0], PT_ECHECKSUM);
  ck_assert_int_eq(F.status[1], PT_OK);
  ck_assert(memcmp(F.dst + len, F.src, len) == 0);
  /* A discarded payload, then another one: still in step. */
  F.discard_next = true;
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &good, F.src, NULL, NULL), PT_OK);
  struct rpc_bulk_hdr empty = hdr_of(0, 0, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &empty, NULL, NULL, NULL), PT_OK);
  g_want_dones = 4;
  ck_assert(run_until(dones_reached, 10000));
  ck_assert_int_eq(F.status[2], -ECANCELED);
  ck_assert_int_eq(F.status[3], PT_OK);
  ck_assert_int_eq(F.rx_closes, 0); /* the conn stayed open */
  ck_assert_ptr_nonnull(F.rx);
  ck_assert_uint_eq(g_log_len, 0);
  fx_teardown();
}
END_TEST

static bool rx_closed(void) { return F.rx_closes == 1 && F.tx_closes == 1; }

START_TEST(bulk_oversized_refused_before_reading)
{
  const size_t len = (size_t)2 << 20;

  fx_setup((uint64_t)1 << 20, 0); /* the receiver takes 1 MiB at most */
  src_make(len, 3);
  struct rpc_bulk_hdr h = hdr_of(0, len, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, tx_sent, NULL), PT_OK);
  ck_assert(run_until(rx_closed, 10000));
  ck_assert_int_eq(F.rx_err, PT_ETOOBIG);
  ck_assert_int_eq(F.begins, 0);
  ck_assert_int_eq(F.dones, 0);
  ck_assert_uint_eq(F.dst[0], 0); /* not a byte placed */
  ck_assert_int_eq(F.sent, 1);   /* the sender got its buffer back */
  ck_assert_ptr_nonnull(strstr(g_log, "rpc: closing connection from 127.0.0.1:"));
  fx_teardown();
}
END_TEST

static void send_more(void)
{
  while (F.queued < F.to_send) {
    struct rpc_bulk_hdr h = hdr_of((uint64_t)F.queued * F.piece, F.piece, F.src);
    int rc = rpc_conn_send_bulk(F.tx, &h, F.src, tx_sent, NULL);
    if (rc == -EAGAIN)
      return;
    ck_assert_int_eq(rc, PT_OK);
    F.queued++;
  }
}

static void tx_drain(struct rpc_conn *c)
{
  (void)c;
  F.drains++;
  send_more();
}

START_TEST(bulk_backpressure_signalled_and_drained)
{
  const size_t piece = (size_t)1 << 20;
  const int n = 64;
  struct rpc_conn_ops tops = {.on_close = tx_close, .on_drain = tx_drain,
                              .bulk_queue_max = (size_t)4 << 20};

  fx_setup(0, (size_t)4 << 20);
  /* The dialled conn's ops are fixed at connect: dial a second sender
   * with on_drain. */
  rpc_conn_close(F.tx, 0);
  ck_assert(run_until(all_closed, 5000));
  struct rpc_auth ta = F.auth;
  tops.on_ready = tx_ready;
  F.tx_ready = 0;
  ck_assert_int_eq(rpc_conn_connect_tcp(&F.loop, "127.0.0.1",
                                        rpc_listener_port(F.l), &tops, &ta,
                                        5000, NULL, &F.tx), PT_OK);
  ck_assert(run_until(is_ready, 5000));

  src_make(piece, 4);
  F.piece = piece;
  F.to_send = n;
  /* Without the loop running nobody reads: the queue fills and says so. */
  send_more();
  ck_assert_int_lt(F.queued, n);
  ck_assert_int_gt(F.queued, 0);
  ck_assert_uint_ge(rpc_conn_queued_bytes(F.tx), (size_t)4 << 20);
  struct rpc_bulk_hdr h = hdr_of(0, piece, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, NULL, NULL), -EAGAIN);
  /* The receiver reads; on_drain sends the rest. */
  g_want_dones = n;
  ck_assert(run_until(dones_reached, 20000));
  ck_assert_int_ge(F.drains, 1);
  ck_assert_int_eq(F.queued, n);
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(F.status[i], PT_OK);
    ck_assert_ptr_eq(F.done_dst[i], F.dst + (size_t)i * piece);
  }
  ck_assert(memcmp(F.dst + (size_t)(n - 1) * piece, F.src, piece) == 0);
  ck_assert_int_eq(F.sent_ok, n);
  fx_teardown();
}
END_TEST

static bool drained(void) { return F.drains >= 1; }

/* The queue that refused a bulk send holds control frames only: on_drain
 * still comes once they are written. */
START_TEST(bulk_drain_after_frames_only)
{
  const size_t mark = (size_t)256 << 10;
  struct rpc_conn_ops tops = {.on_close = tx_close, .on_drain = tx_drain,
                              .on_ready = tx_ready, .bulk_queue_max = mark,
                              .max_write_queue = (size_t)256 << 20};
  static char text[32 << 10];

  fx_setup(0, 0);
  rpc_conn_close(F.tx, 0);
  ck_assert(run_until(all_closed, 5000));
  struct rpc_auth ta = F.auth;
  F.tx_ready = 0;
  ck_assert_int_eq(rpc_conn_connect_tcp(&F.loop, "127.0.0.1",
                                        rpc_listener_port(F.l), &tops, &ta,
                                        5000, NULL, &F.tx), PT_OK);
  ck_assert(run_until(is_ready, 5000));

  /* Without the loop running nobody reads: frames fill the queue. */
  memset(text, 'x', sizeof(text) - 1);
  Pt__Reply r = PT__REPLY__INIT;
  r.message = text;
  int frames = 0;
  while (rpc_conn_queued_bytes(F.tx) < mark && frames < 4096) {
    ck_assert_int_eq(rpc_conn_send(F.tx, RPC_REPLY, 1, &r.base), PT_OK);
    frames++;
  }
  ck_assert_uint_ge(rpc_conn_queued_bytes(F.tx), mark);
  src_make(4096, 9);
  struct rpc_bulk_hdr h = hdr_of(0, F.src_len, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, NULL, NULL), -EAGAIN);
  /* The receiver reads the frames; the sender is told it may send. */
  ck_assert(run_until(drained, 10000));
  ck_assert_int_eq(F.drains, 1);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, NULL, NULL), PT_OK);
  fx_teardown();
}
END_TEST

static bool one_done_and_closed(void) { return F.dones == 1 && F.rx_closes == 1; }

START_TEST(bulk_peer_dies_mid_payload)
{
  const size_t len = (size_t)64 << 20;

  fx_setup(0, 0);
  src_make(len, 5);
  struct rpc_bulk_hdr h = hdr_of(0, len, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, tx_sent, NULL), PT_OK);
  rpc_conn_close(F.tx, 0); /* what the kernel took goes; the rest never */
  ck_assert(run_until(one_done_and_closed, 10000));
  ck_assert_int_eq(F.begins, 1);
  ck_assert_int_eq(F.status[0], PT_EPROTO);
  ck_assert_int_eq(F.rx_err, PT_EPROTO);
  ck_assert_int_eq(F.sent, 1);
  ck_assert_int_eq(F.sent_status, -ECANCELED);
  fx_teardown();
}
END_TEST

/* Sent before the handshake is done: held, then sent in order. */
static void send_early(void)
{
  src_make((size_t)8 << 20, 7);
  struct rpc_bulk_hdr h = hdr_of(0, F.src_len, F.src);
  ck_assert_int_eq(F.tx_ready, 0);
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, F.src, tx_sent, NULL), PT_OK);
  Pt__Stop stop = PT__STOP__INIT;
  /* The payload does not count against max_write_queue (1 MiB here). */
  ck_assert_int_eq(rpc_conn_send(F.tx, RPC_STOP, 1, &stop.base), PT_OK);
  ck_assert_uint_ge(rpc_conn_queued_bytes(F.tx), F.src_len);
}

START_TEST(bulk_queued_before_handshake)
{
  g_before_ready = send_early;
  fx_setup(0, 0);
  g_before_ready = NULL;
  g_want_dones = 1;
  ck_assert(run_until(dones_reached, 10000));
  ck_assert(run_until(msgs_reached, 5000));
  ck_assert_int_eq(F.status[0], PT_OK);
  ck_assert(memcmp(F.dst, F.src, F.src_len) == 0);
  ck_assert_int_eq(F.sent_ok, 1);
  fx_teardown();
}
END_TEST

static bool tx_closed(void) { return F.tx_closes == 1; }

START_TEST(bulk_refused_where_not_taken)
{
  fx_setup(0, 0);
  /* A payload without its bytes is the caller's error. */
  struct rpc_bulk_hdr h = hdr_of(0, 0, NULL);
  h.length = 10;
  ck_assert_int_eq(rpc_conn_send_bulk(F.tx, &h, NULL, NULL, NULL), -EINVAL);
  /* The dialled conn has no on_bulk_begin: a bulk frame to it is a
   * protocol error, and it closes. */
  src_make(1000, 6);
  h = hdr_of(0, 1000, F.src);
  ck_assert_int_eq(rpc_conn_send_bulk(F.rx, &h, F.src, NULL, NULL), PT_OK);
  ck_assert(run_until(tx_closed, 5000));
  ck_assert_int_eq(F.tx_err, PT_EPROTO);
  fx_teardown();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rpc_bulk");
  TCase *tc = tcase_create("bulk");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, bulk_lands_in_destination);
  tcase_add_test(tc, bulk_crc_mismatch_fails_that_transfer);
  tcase_add_test(tc, bulk_oversized_refused_before_reading);
  tcase_add_test(tc, bulk_backpressure_signalled_and_drained);
  tcase_add_test(tc, bulk_drain_after_frames_only);
  tcase_add_test(tc, bulk_peer_dies_mid_payload);
  tcase_add_test(tc, bulk_refused_where_not_taken);
  tcase_add_test(tc, bulk_queued_before_handshake);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
