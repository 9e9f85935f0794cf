/*
 * test_smp_recover.c — recovery in place between libpt, `ptd smp` (in a
 * forked child, smp_main) and a node speaking raw frames: RECOVER is
 * refused for a trainer that did not open its client with
 * recover_in_place; for one that did, pt_recover_pending() says so with
 * the node's generation, pt_snapshot() takes no slot (PT_RECOVER), a
 * pt_restore() waits for the node's SET_RESTORE and brings back its step,
 * EVENT_RECOVERED tells the node, and the trainer then snapshots again.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"
#include "tests/unit/fixture/smp_fx.h"
#include "tests/unit/unit.h"

#define BYTES 8192

static pt_client *open_client(struct smp_fx *f, bool recover, void *buf)
{
  struct pt_options o = {.size = sizeof(o)};
  pt_client *c = NULL;

  o.socket_path = f->sock;
  o.job = f->job;
  o.rank_set = true;
  o.world = 1;
  o.timeout_ms = 5000;
  o.snapshot_timeout_ms = 2000;
  o.recover_in_place = recover;
  ck_assert_int_eq(pt_client_open(&c, &o), 0);
  ck_assert_int_eq(pt_region_register(c, "w", buf, BYTES, PT_MEM_HOST), 0);
  return c;
}

static int recover_call(int node, uint64_t gen)
{
  Pt__Recover r = PT__RECOVER__INIT;
  r.generation = gen;
  return smp_fx_call(node, RPC_RECOVER, &r.base);
}

static int commit_call(int node, uint64_t step)
{
  Pt__Commit m = PT__COMMIT__INIT;
  m.step = step;
  return smp_fx_call(node, RPC_COMMIT, &m.base);
}

/* The next event of kind on the node's connection (others are skipped). */
static Pt__Event *event_of(int node, Pt__EventKind kind)
{
  uint64_t until = rpc_now_ms() + 5000;

  for (;;) {
    struct rpc_hdr h;
    ProtobufCMessage *m = NULL;
    int rc = rpc_sock_recv(node, RPC_MAX_BODY_DEFAULT, until, &h, &m);
    ck_assert_msg(rc == 0, "no event: %s", pt_err_name(rc));
    if (h.type == RPC_EVENT && ((Pt__Event *)m)->kind == kind)
      return (Pt__Event *)m;
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

struct restorer {
  pt_client *c;
  uint64_t step;
  int rc;
  uint64_t took_ms;
};

static void *restore_thread(void *arg)
{
  struct restorer *r = arg;
  uint64_t t0 = rpc_now_ms();
  r->rc = pt_restore(r->c, &r->step);
  r->took_ms = rpc_now_ms() - t0;
  return NULL;
}

START_TEST(test_recover_in_place)
{
  struct smp_fx f;
  static unsigned char buf[BYTES];
  uint64_t gen = 0, step = 0;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);

  /* A trainer that cannot: refused, and its own question is an error. */
  pt_client *a = open_client(&f, false, buf);
  ck_assert_int_eq(pt_restore(a, &step), PT_ENOSNAP);
  memset(buf, 1, sizeof(buf));
  ck_assert_int_eq(pt_snapshot(a, 1), PT_OK);
  ck_assert_int_eq(pt_fence(a), PT_OK);
  ck_assert_int_eq(commit_call(node, 1), 0);
  ck_assert_int_eq(pt_recover_pending(a, 0, &gen), PT_ESTATE);
  ck_assert_int_eq(recover_call(node, 1), PT_ESTATE);
  ck_assert_int_eq(smp_fx_log_count(&f, "cannot restore in place"), 0);
  pt_client_close(a, false);
  /* None connected: refused too. */
  ck_assert_int_eq(recover_call(node, 1), PT_ESTATE);

  /* A trainer that can. */
  pt_client *c = open_client(&f, true, buf);
  ck_assert_int_eq(pt_recover_pending(c, 0, &gen), PT_OK); /* no HELLO yet */
  ck_assert_int_eq(pt_restore(c, &step), 0);
  ck_assert_uint_eq(step, 1);
  memset(buf, 2, sizeof(buf));
  ck_assert_int_eq(pt_snapshot(c, 2), PT_OK);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  ck_assert_int_eq(commit_call(node, 2), 0);
  ck_assert_int_eq(pt_recover_pending(c, 50, &gen), PT_OK);
  memset(buf, 3, sizeof(buf));
  ck_assert_int_eq(pt_snapshot(c, 3), PT_OK); /* sealed, never committed */
  ck_assert_int_eq(pt_fence(c), PT_OK);

  /* The node asks: no slot from now on, the question says so. */
  ck_assert_int_eq(recover_call(node, 7), 0);
  gen = 0;
  ck_assert_int_eq(pt_recover_pending(c, 0, &gen), PT_RECOVER);
  ck_assert_uint_eq(gen, 7);
  ck_assert_int_eq(pt_snapshot(c, 4), PT_RECOVER);

  /* The restore waits for the node's restore point. */
  struct restorer r = {.c = c};
  pthread_t th;
  memset(buf, 9, sizeof(buf));
  ck_assert_int_eq(pthread_create(&th, NULL, restore_thread, &r), 0);
  struct timespec ts = {0, 300 * 1000 * 1000};
  nanosleep(&ts, NULL);
  Pt__SetRestore sr = PT__SET_RESTORE__INIT;
  sr.has_step = true;
  sr.step = 2;
  ck_assert_int_eq(smp_fx_call(node, RPC_SET_RESTORE, &sr.base), 0);
  ck_assert_int_eq(pthread_join(th, NULL), 0);
  ck_assert_msg(r.rc == 0, "pt_restore: %s (%s)", pt_err_name(r.rc),
                pt_last_error(c));
  ck_assert_uint_eq(r.step, 2);
  ck_assert_uint_ge(r.took_ms, 250); /* it waited for SET_RESTORE */
  for (size_t i = 0; i < sizeof(buf); i++)
    ck_assert_uint_eq(buf[i], 2);
  Pt__Event *ev = event_of(node, PT__EVENT_KIND__EVENT_RECOVERED);
  ck_assert(ev->has_step);
  ck_assert_uint_eq(ev->step, 2);
  protobuf_c_message_free_unpacked(&ev->base, NULL);

  /* Over: training goes on from the restored step. */
  ck_assert_int_eq(pt_recover_pending(c, 0, &gen), PT_OK);
  ck_assert_int_eq(pt_snapshot(c, 3), PT_OK);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  pt_client_close(c, true);
  close(node);
  smp_fx_done(&f);
}
END_TEST

/* A trainer whose connection ends while asked: the request ends with it,
 * and the next trainer is an ordinary one. */
START_TEST(test_recover_trainer_gone)
{
  struct smp_fx f;
  static unsigned char buf[BYTES];
  uint64_t step = 0, gen = 0;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);
  pt_client *c = open_client(&f, true, buf);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);
  ck_assert_int_eq(pt_snapshot(c, 1), PT_OK);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  ck_assert_int_eq(commit_call(node, 1), 0);
  ck_assert_int_eq(recover_call(node, 3), 0);
  pt_client_close(c, false);
  c = open_client(&f, true, buf);
  ck_assert_int_eq(pt_restore(c, &step), 0); /* not held: no request now */
  ck_assert_uint_eq(step, 1);
  ck_assert_int_eq(pt_recover_pending(c, 0, &gen), PT_OK);
  ck_assert_int_eq(pt_snapshot(c, 2), PT_OK);
  pt_client_close(c, true);
  close(node);
  smp_fx_done(&f);
}
END_TEST

static Suite *recover_suite(void)
{
  Suite *s = suite_create("smp_recover");
  TCase *tc = tcase_create("recover");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, test_recover_in_place);
  tcase_add_test(tc, test_recover_trainer_gone);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "smp") == 0)
    return smp_main(argc - 1, argv + 1);
  return unit_run(recover_suite());
}
