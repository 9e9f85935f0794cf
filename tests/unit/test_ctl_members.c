/*
 * test_ctl_members.c — the controller's membership
 * (daemon/controller/ctl_members.c) without sockets or a clock: register,
 * heartbeat, connection lost, tick(now), and the state changes each one
 * reports; reconnect told from restart; a second live claim on an id
 * refused; hostile registrations refused.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

struct change {
  char id[RPC_NODE_ID_MAX + 1];
  enum ctl_node_state from, to;
  char why[256];
};
static struct change ch[64];
static size_t nch;

static void on_change(void *arg, const struct ctl_node *n,
                      enum ctl_node_state from, const char *why)
{
  (void)arg;
  ck_assert_uint_lt(nch, 64);
  snprintf(ch[nch].id, sizeof(ch[nch].id), "%s", n->id);
  ch[nch].from = from;
  ch[nch].to = n->state;
  snprintf(ch[nch].why, sizeof(ch[nch].why), "%s", why);
  nch++;
}

static const struct ctl_timeouts T = {.heartbeat_ms = 1000,
                                      .dead_after_ms = 10000,
                                      .grace_ms = 5000};
static const uint8_t INC1[16] = {1}, INC2[16] = {2};

static struct ctl_register reg(const char *id, const uint8_t *inc)
{
  struct ctl_register r = {.node_id = id, .handshake_id = id,
                           .advertise = "10.0.0.1", .failure_domain = "rack1",
                           .capacity = 4, .incarnation = inc,
                           .incarnation_len = 16};
  return r;
}

static int do_reg(struct ctl_members *m, struct ctl_register r, void *conn,
                  uint64_t now, enum ctl_reg_kind *kind, void **old)
{
  char err[512];
  return ctl_members_register(m, &r, conn, now, kind, old, err, sizeof(err));
}

#define C1 ((void *)0x1)
#define C2 ((void *)0x2)
#define C3 ((void *)0x3)

START_TEST(register_heartbeat_dead)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  ck_assert_uint_eq(ctl_members_next_ms(&m, 0), UINT64_MAX);
  ck_assert_int_eq(do_reg(&m, reg("a", INC1), C1, 100, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_NEW);
  ck_assert_ptr_null(old);
  ck_assert_uint_eq(nch, 1);
  ck_assert_int_eq(ch[0].from, 0);
  ck_assert_int_eq(ch[0].to, CTL_NODE_ALIVE);
  ck_assert_ptr_nonnull(strstr(ch[0].why, "registered"));
  ck_assert_ptr_nonnull(strstr(ch[0].why, "capacity 4"));
  struct ctl_node *n = ctl_members_find(&m, "a");
  ck_assert_ptr_nonnull(n);
  ck_assert_str_eq(n->advertise, "10.0.0.1");
  ck_assert_str_eq(n->failure_domain, "rack1");
  /* next deadline: 3 missed heartbeats */
  ck_assert_uint_eq(ctl_members_next_ms(&m, 100), 3000);
  for (uint64_t t = 1100; t <= 5100; t += 1000) {
    ck_assert_int_eq(ctl_members_heartbeat(&m, C1, t), PT_OK);
    ck_assert_uint_eq(ctl_members_tick(&m, t + 500, NULL, 0), 0);
  }
  ck_assert_uint_eq(nch, 1); /* heartbeats change nothing */
  ck_assert_int_eq(ctl_members_heartbeat(&m, C2, 5200), -ENOENT);
  /* silent: unreachable after 3 s, dead after 10 s, connection handed back */
  ck_assert_uint_eq(ctl_members_tick(&m, 8099, NULL, 0), 0);
  ck_assert_uint_eq(nch, 1);
  ck_assert_uint_eq(ctl_members_tick(&m, 8100, NULL, 0), 0);
  ck_assert_uint_eq(nch, 2);
  ck_assert_int_eq(ch[1].to, CTL_NODE_UNREACHABLE);
  ck_assert_ptr_nonnull(strstr(ch[1].why, "silent"));
  ck_assert_uint_eq(ctl_members_next_ms(&m, 8100), 7000);
  void *dead[4];
  ck_assert_uint_eq(ctl_members_tick(&m, 15099, dead, 4), 0);
  ck_assert_uint_eq(ctl_members_tick(&m, 15100, dead, 4), 1);
  ck_assert_ptr_eq(dead[0], C1);
  ck_assert_uint_eq(nch, 3);
  ck_assert_int_eq(ch[2].from, CTL_NODE_UNREACHABLE);
  ck_assert_int_eq(ch[2].to, CTL_NODE_DEAD);
  ck_assert_ptr_nonnull(strstr(ch[2].why, "dead after 10000"));
  ck_assert_ptr_null(n->conn);
  ck_assert_uint_eq(ctl_members_next_ms(&m, 15100), UINT64_MAX);
  ck_assert_uint_eq(ctl_members_tick(&m, 99999, dead, 4), 0);
  ck_assert_uint_eq(nch, 3);
  /* a late loss of the closed conn changes nothing */
  ctl_members_lost(&m, C1, 16000);
  ck_assert_uint_eq(nch, 3);
  /* it comes back (same incarnation): a reconnect, alive again */
  ck_assert_int_eq(do_reg(&m, reg("a", INC1), C2, 20000, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_RECONNECT);
  ck_assert_uint_eq(nch, 4);
  ck_assert_int_eq(ch[3].from, CTL_NODE_DEAD);
  ck_assert_int_eq(ch[3].to, CTL_NODE_ALIVE);
  ck_assert_ptr_nonnull(strstr(ch[3].why, "reconnected"));
  ck_assert_uint_eq(m.n, 1);
  ctl_members_release(&m);
}
END_TEST

START_TEST(lost_grace_and_back)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  ck_assert_int_eq(do_reg(&m, reg("a", INC1), C1, 0, &kind, &old), PT_OK);
  ck_assert_int_eq(do_reg(&m, reg("b", INC1), C2, 0, &kind, &old), PT_OK);
  ctl_members_heartbeat(&m, C1, 900);
  ctl_members_lost(&m, C1, 1000);
  ck_assert_uint_eq(nch, 3);
  ck_assert_str_eq(ch[2].id, "a");
  ck_assert_int_eq(ch[2].to, CTL_NODE_UNREACHABLE);
  ck_assert_str_eq(ch[2].why, "connection lost");
  /* b heartbeats on; a is dead once the grace (5 s) has passed */
  ctl_members_heartbeat(&m, C2, 1000);
  ctl_members_heartbeat(&m, C2, 2000);
  ctl_members_heartbeat(&m, C2, 3000);
  ctl_members_heartbeat(&m, C2, 4000);
  ctl_members_heartbeat(&m, C2, 5000);
  ck_assert_uint_eq(ctl_members_tick(&m, 5999, NULL, 0), 0);
  ck_assert_uint_eq(nch, 3);
  ck_assert_uint_eq(ctl_members_next_ms(&m, 5999), 1);
  ck_assert_uint_eq(ctl_members_tick(&m, 6000, NULL, 0), 0);
  ck_assert_uint_eq(nch, 4);
  ck_assert_str_eq(ch[3].id, "a");
  ck_assert_int_eq(ch[3].to, CTL_NODE_DEAD);
  ck_assert_ptr_nonnull(strstr(ch[3].why, "grace 5000"));
  ck_assert_int_eq(ctl_members_find(&m, "b")->state, CTL_NODE_ALIVE);
  /* a restarts (new incarnation) */
  ck_assert_int_eq(do_reg(&m, reg("a", INC2), C3, 7000, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_RESTART);
  ck_assert_ptr_nonnull(strstr(ch[4].why, "restarted"));
  /* lost and back within the grace: never dead */
  ctl_members_lost(&m, C3, 8000);
  ck_assert_uint_eq(ctl_members_tick(&m, 9000, NULL, 0), 0);
  ck_assert_int_eq(do_reg(&m, reg("a", INC2), C1, 9500, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_RECONNECT);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_ALIVE);
  for (size_t i = 0; i < nch; i++)
    ck_assert(!(strcmp(ch[i].id, "a") == 0 && i > 3 &&
                ch[i].to == CTL_NODE_DEAD));
  ctl_members_release(&m);
}
END_TEST

/* The controller away for 12 s (dead after 10 s): excused, its nodes are
 * judged from 12 s later: not dead at once, a lost connection's grace
 * starts over, and a node that stays silent is still found dead. */
START_TEST(excused_stall)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  ck_assert_int_eq(do_reg(&m, reg("a", INC1), C1, 0, &kind, &old), PT_OK);
  ck_assert_int_eq(do_reg(&m, reg("b", INC1), C2, 0, &kind, &old), PT_OK);
  ctl_members_heartbeat(&m, C1, 1000);
  ctl_members_heartbeat(&m, C2, 1000);
  ctl_members_lost(&m, C2, 13000); /* b dropped the link while we slept */
  ctl_members_excuse(&m, 12000, 13000);
  ck_assert_uint_eq(ctl_members_tick(&m, 13000, NULL, 0), 0);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_ALIVE);
  ck_assert_int_eq(ctl_members_find(&m, "b")->state, CTL_NODE_UNREACHABLE);
  ck_assert_uint_eq(ctl_members_find(&m, "a")->last_heard_ms, 13000);
  /* b is back within its grace; a stays silent: dead 10 s after 13 s */
  ck_assert_int_eq(do_reg(&m, reg("b", INC1), C3, 14000, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_RECONNECT);
  ctl_members_heartbeat(&m, C3, 22000);
  ck_assert_uint_eq(ctl_members_tick(&m, 22999, NULL, 0), 0);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_UNREACHABLE);
  void *dead[2];
  ck_assert_uint_eq(ctl_members_tick(&m, 23000, dead, 2), 1);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_DEAD);
  ck_assert_int_eq(ctl_members_find(&m, "b")->state, CTL_NODE_ALIVE);
  ctl_members_release(&m);
}
END_TEST

/* A second connection claiming a live id is refused; the first keeps it.
 * Once the first is unreachable (silent), a new connection takes over and
 * the old one is handed back to be closed. */
START_TEST(duplicate_and_takeover)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;
  char err[512];
  struct ctl_register r = reg("a", INC1);

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  ck_assert_int_eq(do_reg(&m, r, C1, 0, &kind, &old), PT_OK);
  ck_assert_int_eq(ctl_members_register(&m, &r, C2, 10, &kind, &old, err,
                                        sizeof(err)),
                   -EEXIST);
  ck_assert_ptr_nonnull(strstr(err, "already registered"));
  ck_assert_ptr_eq(ctl_members_find(&m, "a")->conn, C1);
  ck_assert_uint_eq(nch, 1);
  ctl_members_tick(&m, 3000, NULL, 0); /* unreachable: silent */
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_UNREACHABLE);
  /* a heartbeat brings it back on the same connection */
  ck_assert_int_eq(ctl_members_heartbeat(&m, C1, 3010), PT_OK);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_ALIVE);
  ck_assert_str_eq(ch[nch - 1].why, "heard from again");
  ctl_members_tick(&m, 6010, NULL, 0); /* silent again */
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_UNREACHABLE);
  ck_assert_int_eq(do_reg(&m, r, C2, 6100, &kind, &old), PT_OK);
  ck_assert_ptr_eq(old, C1);
  ck_assert_ptr_eq(ctl_members_find(&m, "a")->conn, C2);
  ctl_members_lost(&m, C1, 6200); /* the old conn closing: no change */
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_ALIVE);
  ctl_members_release(&m);
}
END_TEST

START_TEST(hostile_registrations)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;
  char err[512], big[400];

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';

  struct ctl_register r = reg("a", INC1);
  r.capacity = 0;
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "capacity 0"));
  r = reg("a", INC1);
  r.handshake_id = "b";
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "authenticated as 'b'"));
  r = reg(big, INC1);
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "node id"));
  r = reg("a", INC1);
  r.advertise = big;
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "advertised address"));
  r.advertise = "";
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  r.advertise = "10.0.0.1\n<3>forged";
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  r = reg("a", INC1);
  r.failure_domain = big;
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "failure domain"));
  r = reg("a", INC1);
  r.incarnation_len = 0;
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  r.incarnation_len = CTL_INCARNATION_MAX + 1;
  ck_assert_int_eq(ctl_members_register(&m, &r, C1, 0, &kind, &old, err,
                                        sizeof(err)),
                   -EINVAL);
  ck_assert_uint_eq(m.n, 0);
  ck_assert_uint_eq(nch, 0);
  /* a node id of exactly RPC_NODE_ID_MAX bytes is fine; no domain too */
  big[RPC_NODE_ID_MAX] = '\0';
  r = reg(big, INC1);
  r.failure_domain = NULL;
  ck_assert_int_eq(do_reg(&m, r, C1, 0, &kind, &old), PT_OK);
  ck_assert_str_eq(ctl_members_find(&m, big)->failure_domain, "");
  ctl_members_release(&m);
}
END_TEST

/* Many nodes: the arrays grow, each keeps its own state. */
/* A node id is bound to its identity: after the node's death another
 * identity (or none) is refused, naming both; the same one is a restart;
 * replace takes the id over (not while the old one is alive), and the old
 * identity is refused in turn. */
START_TEST(identity_bound)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;
  static const uint8_t ID1[16] = {0xaa, 1}, ID2[16] = {0xbb, 2};
  char err[1024];
  bool bind;

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  struct ctl_register r = reg("a", INC1);
  r.identity = ID1;
  r.identity_len = 16;
  ck_assert_int_eq(ctl_members_register_prepare(&m, &r, C1, &bind, err,
                                                sizeof(err)), PT_OK);
  ck_assert(bind); /* its first identity: journaled by the caller */
  ck_assert_int_eq(do_reg(&m, r, C1, 100, &kind, &old), PT_OK);
  ck_assert_ptr_nonnull(ctl_members_identity(&m, "a"));
  ck_assert_int_eq(memcmp(ctl_members_identity(&m, "a")->tok, ID1, 16), 0);
  /* dead */
  ctl_members_lost(&m, C1, 200);
  ctl_members_tick(&m, 200 + T.grace_ms, NULL, 0);
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_DEAD);
  /* another identity, and none */
  struct ctl_register o = reg("a", INC2);
  o.identity = ID2;
  o.identity_len = 16;
  ck_assert_int_eq(ctl_members_register(&m, &o, C2, 6000, &kind, &old, err,
                                        sizeof(err)), -EPERM);
  ck_assert_ptr_nonnull(strstr(err, "aa01000000"));
  ck_assert_ptr_nonnull(strstr(err, "bb02000000"));
  ck_assert_ptr_nonnull(strstr(err, "--replace"));
  struct ctl_register none = reg("a", INC2);
  ck_assert_int_eq(ctl_members_register(&m, &none, C2, 6000, &kind, &old, err,
                                        sizeof(err)), -EPERM);
  ck_assert_ptr_nonnull(strstr(err, "carries identity none"));
  ck_assert_int_eq(ctl_members_find(&m, "a")->state, CTL_NODE_DEAD);
  /* the same identity, a new incarnation: a restart, nothing to bind */
  struct ctl_register same = reg("a", INC2);
  same.identity = ID1;
  same.identity_len = 16;
  ck_assert_int_eq(ctl_members_register_prepare(&m, &same, C2, &bind, err,
                                                sizeof(err)), PT_OK);
  ck_assert(!bind);
  ck_assert_int_eq(do_reg(&m, same, C2, 6100, &kind, &old), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_RESTART);
  /* replace while the old one is alive: refused */
  o.replace = true;
  ck_assert_int_eq(ctl_members_register(&m, &o, C3, 6200, &kind, &old, err,
                                        sizeof(err)), -EEXIST);
  ctl_members_lost(&m, C2, 6300);
  size_t before = nch;
  ck_assert_int_eq(ctl_members_register_prepare(&m, &o, C3, &bind, err,
                                                sizeof(err)), PT_OK);
  ck_assert(bind);
  ck_assert_int_eq(ctl_members_register(&m, &o, C3, 6400, &kind, &old, err,
                                        sizeof(err)), PT_OK);
  ck_assert_int_eq(kind, CTL_REG_REPLACE);
  ck_assert_uint_eq(nch, before + 1);
  ck_assert_ptr_nonnull(strstr(ch[nch - 1].why, "replaced"));
  ck_assert_int_eq(memcmp(ctl_members_identity(&m, "a")->tok, ID2, 16), 0);
  /* the old identity is refused now */
  ctl_members_lost(&m, C3, 6500);
  ck_assert_int_eq(ctl_members_register(&m, &same, C1, 6600, &kind, &old, err,
                                        sizeof(err)), -EPERM);
  ck_assert_ptr_nonnull(strstr(err, "bound to identity bb02"));
  /* a node of another id is not bound by a's */
  struct ctl_register b = reg("b", INC1);
  b.identity = ID1;
  b.identity_len = 16;
  ck_assert_int_eq(do_reg(&m, b, C1, 6700, &kind, &old), PT_OK);
  ck_assert_uint_eq(m.nident, 2);
  ctl_members_release(&m);
}
END_TEST

START_TEST(many_nodes)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;
  char id[32];

  nch = 0;
  ctl_members_init(&m, &T, NULL, NULL);
  for (uintptr_t i = 0; i < 1000; i++) {
    snprintf(id, sizeof(id), "n%u", (unsigned)i);
    ck_assert_int_eq(do_reg(&m, reg(id, INC1), (void *)(i + 1), 0, &kind, &old),
                     PT_OK);
  }
  for (uintptr_t i = 0; i < 1000; i += 2)
    ctl_members_heartbeat(&m, (void *)(i + 1), 9000);
  static void *dead[1000];
  ck_assert_uint_eq(ctl_members_tick(&m, 10000, dead, 1000), 500);
  ck_assert_int_eq(ctl_members_find(&m, "n0")->state, CTL_NODE_ALIVE);
  ck_assert_int_eq(ctl_members_find(&m, "n1")->state, CTL_NODE_DEAD);
  ck_assert_uint_eq(nch, 0);
  ctl_members_release(&m);
}
END_TEST

/* heartbeat_at: the hint is a shortcut, never a way around the
 * connection check. */
START_TEST(heartbeat_hint)
{
  struct ctl_members m;
  enum ctl_reg_kind kind;
  void *old;

  nch = 0;
  ctl_members_init(&m, &T, on_change, NULL);
  ck_assert_int_eq(do_reg(&m, reg("a", INC1), C1, 0, &kind, &old), PT_OK);
  ck_assert_int_eq(do_reg(&m, reg("b", INC1), C2, 0, &kind, &old), PT_OK);
  ck_assert_int_eq(ctl_members_heartbeat_at(&m, 1, C2, 700), PT_OK);
  ck_assert_uint_eq(m.nodes[1].last_heard_ms, 700);
  /* a wrong hint: found by its connection all the same */
  ck_assert_int_eq(ctl_members_heartbeat_at(&m, 1, C1, 800), PT_OK);
  ck_assert_uint_eq(m.nodes[0].last_heard_ms, 800);
  ck_assert_uint_eq(m.nodes[1].last_heard_ms, 700);
  /* b taken over by C3 after C2 went silent: C2's hint no longer counts */
  ctl_members_lost(&m, C2, 900);
  ck_assert_int_eq(do_reg(&m, reg("b", INC1), C3, 950, &kind, &old), PT_OK);
  ck_assert_int_eq(ctl_members_heartbeat_at(&m, 1, C2, 1000), -ENOENT);
  ck_assert_int_eq(ctl_members_heartbeat_at(&m, 99, C3, 1000), PT_OK);
  ctl_members_release(&m);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_members");
  TCase *tc = tcase_create("members");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, register_heartbeat_dead);
  tcase_add_test(tc, lost_grace_and_back);
  tcase_add_test(tc, excused_stall);
  tcase_add_test(tc, duplicate_and_takeover);
  tcase_add_test(tc, hostile_registrations);
  tcase_add_test(tc, identity_bound);
  tcase_add_test(tc, many_nodes);
  tcase_add_test(tc, heartbeat_hint);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
