/*
 * test_smp_group.c — the coding group an SMP is told on its command line
 * (daemon/code_group.c): a member written and read back (a node id with
 * '=' and '%', an IPv6 address, an unknown address), malformed members
 * refused, a group checked (count, member number, the same node twice, a
 * member that is not this node), and `ptd smp` itself refusing a malformed
 * group with exit 2 and a sentence before it touches anything.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/code_group.h"
#include "daemon/roles.h"
#include "tests/unit/unit.h"

static void roundtrip(uint32_t idx, const char *id, const char *addr,
                      const char *want)
{
  struct code_group_member m = {.node_index = idx}, back;
  char buf[2048], err[512];
  snprintf(m.node_id, sizeof(m.node_id), "%s", id);
  snprintf(m.addr, sizeof(m.addr), "%s", addr);
  ck_assert_int_eq(code_group_member_format(&m, buf, sizeof(buf)), PT_OK);
  if (want != NULL)
    ck_assert_str_eq(buf, want);
  ck_assert_msg(code_group_member_parse(buf, &back, err, sizeof(err)) == 0,
                "%s: %s", buf, err);
  ck_assert_uint_eq(back.node_index, idx);
  ck_assert_str_eq(back.node_id, id);
  ck_assert_str_eq(back.addr, addr);
}

START_TEST(member_text)
{
  char err[512], small[8];
  struct code_group_member m;

  roundtrip(0, "node-a", "127.0.0.1", "0:node-a=127.0.0.1");
  roundtrip(5, "n=c,%", "10.0.0.3", "5:n%3Dc%2C%25=10.0.0.3");
  roundtrip(12, "gpu.host_7", "[::1]", "12:gpu.host_7=[::1]");
  roundtrip(3, "b", "", "3:b=");
  roundtrip(4294967295u, "sp ace\t", "host@x", NULL);
  memset(&m, 0, sizeof(m));
  snprintf(m.node_id, sizeof(m.node_id), "abcdefgh");
  ck_assert_int_eq(code_group_member_format(&m, small, sizeof(small)),
                   -E2BIG);
  static const char *const bad[] = {
      "", "a", "0", "0:", "0:=x", ":a=b", "x:a=b", "-1:a=b", "1a:a=b",
      "0:a", "0:a%=b", "0:a%2=b", "0:a%zz=b", "0:a%00=b", "0:a=b%20c",
      "4294967296:a=b", NULL};
  for (int i = 0; bad[i] != NULL; i++)
    ck_assert_msg(code_group_member_parse(bad[i], &m, err, sizeof(err)) ==
                      -EINVAL,
                  "'%s' accepted", bad[i]);
  ck_assert_ptr_nonnull(strstr(err, "INDEX:NODE-ID=ADDRESS"));
}
END_TEST

static struct code_group three(void)
{
  struct code_group g = {.k = 2, .m = 1, .group = 7, .member = 1, .n = 3};
  static const char *const ids[] = {"a", "b", "c"};
  for (uint32_t i = 0; i < 3; i++) {
    g.members[i].node_index = i * 2;
    snprintf(g.members[i].node_id, sizeof(g.members[i].node_id), "%s",
             ids[i]);
  }
  return g;
}

START_TEST(group_checked)
{
  char err[512];
  struct code_group g = three();

  ck_assert_int_eq(code_group_check(&g, "b", err, sizeof(err)), PT_OK);
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(code_group_check(&g, "a", err, sizeof(err)), -EINVAL);
  ck_assert_msg(strstr(err, "member 1 is node 'b', not this node ('a')") !=
                    NULL, "%s", err);
  g = three();
  g.n = 2;
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), -EINVAL);
  ck_assert_msg(strstr(err, "has 2 members for code 2+1") != NULL, "%s",
                err);
  g = three();
  g.member = 3;
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), -EINVAL);
  g = three();
  g.m = 0;
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), -EINVAL);
  g = three();
  g.members[2].node_index = 0;
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), -EINVAL);
  ck_assert_msg(strstr(err, "same node (node index)") != NULL, "%s", err);
  g = three();
  snprintf(g.members[0].node_id, sizeof(g.members[0].node_id), "c");
  ck_assert_int_eq(code_group_check(&g, NULL, err, sizeof(err)), -EINVAL);
  ck_assert_msg(strstr(err, "same node (node id)") != NULL, "%s", err);
}
END_TEST

/* smp_main with argv, its stderr in a file. Returns its exit status; OUT:
 * the text. */
static int smp_run(const char *const *args, char *out, size_t cap)
{
  char path[] = "/tmp/pt-test-smpgrp.XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  int argc = 0;
  while (args[argc] != NULL)
    argc++;
  int rc = smp_main(argc, (char **)args);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ssize_t n = pread(fd, out, cap - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  close(fd);
  return rc;
}

#define SMP "smp", "--job", "j", "--rank", "0", "--world", "3", "--socket", \
            "/nonexistent-pt-test/smp.sock"

START_TEST(smp_refuses_bad_group)
{
  char out[4096];
  static const struct {
    const char *args[24];
    const char *says;
  } C[] = {
      /* the group options without the member list */
      {{SMP, "--code", "2+1", "--group", "0", "--member", "0", "--node-id",
        "a", NULL},
       "a coding group needs"},
      /* two members for 2+1 */
      {{SMP, "--code", "2+1", "--group", "0", "--member", "0", "--node-id",
        "a", "--group-node", "0:a=127.0.0.1", "--group-node", "1:b=", NULL},
       "has 2 members for code 2+1"},
      /* this node is not the member it is told it is */
      {{SMP, "--code", "2+1", "--group", "0", "--member", "1", "--node-id",
        "a", "--group-node", "0:a=x", "--group-node", "1:b=y",
        "--group-node", "2:c=z", NULL},
       "member 1 is node 'b', not this node ('a')"},
      /* a malformed member */
      {{SMP, "--code", "2+1", "--group", "0", "--member", "0", "--node-id",
        "a", "--group-node", "0:a=x", "--group-node", "b=y", NULL},
       "--group-node: group member 'b=y'"},
      {{SMP, "--code", "2-1", NULL}, "invalid value '2-1' for --code"},
      {{SMP, "--code", "2+1", "--member", "40", NULL},
       "invalid value '40' for --member"},
  };
  for (size_t i = 0; i < sizeof(C) / sizeof(C[0]); i++) {
    int rc = smp_run(C[i].args, out, sizeof(out));
    ck_assert_msg(rc == 2, "case %zu: exit %d: %s", i, rc, out);
    ck_assert_msg(strstr(out, C[i].says) != NULL, "case %zu: %s", i, out);
  }
}
END_TEST

int main(void)
{
  Suite *s = suite_create("smp_group");
  TCase *tc = tcase_create("group");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, member_text);
  tcase_add_test(tc, group_checked);
  tcase_add_test(tc, smp_refuses_bad_group);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
