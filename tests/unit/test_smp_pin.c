/*
 * test_smp_pin.c — a coded SMP's PIN that it refuses leaves nothing pinned.
 * `ptd smp` runs in a forked child (tests/unit/fixture/smp_fx.h) as member
 * 0 of a 2+1 group whose mates never link, so no step can be protected and
 * every PIN of a sealed step is refused. Each refusal must seal the slot
 * again by itself: a node may read a refusal as "not pinned here" (a
 * member's refusal of a chunk carries -ENOENT, which is what an SMP that
 * holds no such step answers) and send no UNPIN, and a slot left PINNED
 * for a round that never commits is lost to the trainer until the next
 * commit — with every slot lost so, none comes, and the job stops
 * committing for good.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"
#include "tests/unit/fixture/smp_fx.h"
#include "tests/unit/unit.h"

#define SLOTS "3"

/* A coded SMP of 3 slots, member 0 of 2+1, alone. */
static void coded_fork(struct smp_fx *f, char *key, size_t keylen)
{
  char err[256];
  int n = 0;

  snprintf(key, keylen, "%s/cluster.key", f->dir);
  ck_assert_msg(rpc_key_write(key, err, sizeof(err)) == 0, "%s", err);
  const char *args[] = {"--slots", SLOTS, "--code", "2+1", "--group", "0",
                        "--member", "0", "--node-id", "a",
                        "--group-node", "0:a=127.0.0.1",
                        "--group-node", "1:b=127.0.0.1",
                        "--group-node", "2:c=127.0.0.1", "--key", key,
                        "--peer-listen", "127.0.0.1", "--log-level", "7",
                        NULL};
  for (; args[n] != NULL; n++)
    f->extra[n] = args[n];
  f->extra[n] = NULL;
  smp_fx_fork(f, NULL);
}

/* Each sealed step is PINned and refused, and the node sends no UNPIN:
 * the slot is SEALED again after each refusal, and the trainer gets a slot
 * for every step, three times as many steps as there are slots. */
START_TEST(refused_pin_leaves_no_pin)
{
  struct smp_fx f;
  char key[128];
  Pt__Pin pin = PT__PIN__INIT;

  smp_fx_init(&f);
  coded_fork(&f, key, sizeof(key));
  int tr = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_hello(&f, tr, (int32_t)getpid()), 0);
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);

  int nslots = atoi(SLOTS);
  for (uint64_t step = 1; step <= (uint64_t)(3 * nslots); step++) {
    int st = smp_fx_seal_step(tr, step);
    ck_assert_msg(st == 0, "step %llu: no slot (%s): %d refused PINs left "
                  "slots pinned", (unsigned long long)step, pt_strerror(st),
                  (int)step - 1);
    ck_assert_int_eq(smp_fx_slot_state(node, step), SNAP_SEALED);
    pin.step = step;
    int rc = smp_fx_call(node, RPC_PIN, &pin.base);
    ck_assert_msg(rc != 0, "step %llu: a PIN of a step its group cannot "
                  "protect was accepted", (unsigned long long)step);
    ck_assert_msg(smp_fx_slot_state(node, step) == SNAP_SEALED,
                  "step %llu: after a refused PIN (%s) its slot is %s",
                  (unsigned long long)step, pt_strerror(rc),
                  snap_state_name((uint32_t)smp_fx_slot_state(node, step)));
  }
  char line[64];
  snprintf(line, sizeof(line), "step %d unpinned: its PIN was refused",
           3 * nslots);
  ck_assert_int_eq(smp_fx_log_count(&f, line), 1);
  close(node);
  close(tr);
  smp_fx_done(&f);
}
END_TEST

static Suite *smp_pin_suite(void)
{
  Suite *s = suite_create("smp_pin");
  TCase *tc = tcase_create("pin");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, refused_pin_leaves_no_pin);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "smp") == 0)
    return smp_main(argc - 1, argv + 1);
  return unit_run(smp_pin_suite());
}
