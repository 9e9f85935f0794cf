/*
 * test_ctl_groups.c — a job's coding groups (daemon/controller/
 * ctl_groups.c): the node list cut in groups of k+m, the nodes past a
 * multiple of k+m as extra data members, failure domains kept apart when
 * the labels allow it and spread as well as they can be when not (checked
 * against the bound over random labels), no groups for code none, and the
 * journaled form checked on its way back.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

/* "0,1,2|3,4,5": the groups' node indexes in member order. */
static const char *str(const struct ctl_groups *g)
{
  static char buf[4096];
  size_t n = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < g->n; i++)
    for (uint32_t x = g->first[i]; x < g->first[i + 1]; x++)
      n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%u",
                            x == g->first[i] ? (i > 0 ? "|" : "") : ",",
                            g->member[x]);
  return buf;
}

/* Every node in exactly one group, group_of/index_of agree, the sizes as
 * the rule says. */
static void check_shape(const struct ctl_groups *g, uint32_t nodes,
                        uint32_t k, uint32_t m)
{
  uint32_t q = nodes / (k + m);
  ck_assert_uint_eq(g->n, q);
  ck_assert_uint_eq(g->m, m);
  ck_assert_uint_eq(g->first[q], nodes);
  int *seen = calloc(nodes, sizeof(*seen));
  uint32_t larger = 0;
  for (uint32_t i = 0; i < q; i++) {
    uint32_t s = ctl_groups_size(g, i);
    ck_assert(s == nodes / q || s == nodes / q + 1);
    larger += s > nodes / q;
    ck_assert_uint_ge(ctl_groups_k(g, i), k);
    for (uint32_t x = g->first[i]; x < g->first[i + 1]; x++) {
      uint32_t v = g->member[x];
      ck_assert_uint_lt(v, nodes);
      ck_assert_int_eq(seen[v]++, 0);
      ck_assert_uint_eq(g->group_of[v], i);
      ck_assert_uint_eq(g->index_of[v], x - g->first[i]);
      if (x > g->first[i])
        ck_assert_uint_lt(g->member[x - 1], v); /* by node index */
    }
    if (i > 0)
      ck_assert_uint_lt(g->member[g->first[i - 1]], g->member[g->first[i]]);
  }
  ck_assert_uint_eq(larger, nodes % q);
  free(seen);
}

static const char *form(struct ctl_groups *g, uint32_t nodes,
                        const char *const *doms, uint32_t k, uint32_t m,
                        uint32_t *worst, char *why)
{
  ck_assert_int_eq(ctl_groups_form(g, nodes, doms, k, m, worst, why, 512),
                   PT_OK);
  check_shape(g, nodes, k, m);
  return str(g);
}

START_TEST(node_list)
{
  struct ctl_groups g;
  uint32_t worst;
  char why[512];

  /* code none: no groups */
  ck_assert_int_eq(ctl_groups_form(&g, 4, NULL, 0, 0, &worst, why, 512),
                   PT_OK);
  ck_assert_uint_eq(g.n, 0);
  ck_assert_uint_eq(worst, 0);
  ctl_groups_release(&g);
  /* a multiple of k+m: consecutive node indexes */
  ck_assert_str_eq(form(&g, 6, NULL, 2, 1, &worst, why), "0,1,2|3,4,5");
  ck_assert_uint_eq(worst, 1);
  ck_assert_str_eq(why, "");
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 3, NULL, 2, 1, &worst, why), "0,1,2");
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 12, NULL, 4, 2, &worst, why),
                   "0,1,2,3,4,5|6,7,8,9,10,11");
  ctl_groups_release(&g);
  /* not a multiple: the extra nodes are data members of the first groups */
  ck_assert_str_eq(form(&g, 7, NULL, 2, 1, &worst, why), "0,1,2,3|4,5,6");
  ck_assert_uint_eq(ctl_groups_k(&g, 0), 3);
  ck_assert_uint_eq(ctl_groups_k(&g, 1), 2);
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 5, NULL, 2, 1, &worst, why), "0,1,2,3,4");
  ck_assert_uint_eq(ctl_groups_k(&g, 0), 4); /* 4+1 */
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 8, NULL, 2, 1, &worst, why), "0,1,2,3|4,5,6,7");
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 11, NULL, 2, 1, &worst, why),
                   "0,1,2,3|4,5,6,7|8,9,10");
  ctl_groups_release(&g);
  ck_assert_str_eq(form(&g, 11, NULL, 4, 2, &worst, why),
                   "0,1,2,3,4,5,6,7,8,9,10"); /* 9+2 */
  ck_assert_uint_eq(ctl_groups_k(&g, 0), 9);
  ck_assert_uint_eq(g.group_of[10], 0);
  ck_assert_uint_eq(g.index_of[10], 10);
  ctl_groups_release(&g);
  /* a code the nodes cannot take */
  ck_assert_int_eq(ctl_groups_form(&g, 3, NULL, 2, 2, &worst, why, 512),
                   -EINVAL);
  ck_assert_msg(strstr(why, "needs at least 4 nodes") != NULL, "%s", why);
  ck_assert_int_eq(ctl_groups_form(&g, 40, NULL, 20, 12, &worst, why, 512),
                   -EINVAL);
  ck_assert_int_eq(ctl_groups_code_check(64, 20, 12, why, 512), PT_OK);
}
END_TEST

START_TEST(domains_apart)
{
  struct ctl_groups g;
  uint32_t worst;
  char why[512];

  /* The node list keeps them apart already: kept. */
  const char *const d0[] = {"a", "b", "c", "a", "b", "c"};
  ck_assert_str_eq(form(&g, 6, d0, 2, 1, &worst, why), "0,1,2|3,4,5");
  ck_assert_uint_eq(worst, 1);
  ctl_groups_release(&g);
  /* Unlabeled nodes are domains of their own. */
  const char *const d1[] = {"", NULL, "a", "a", "", ""};
  ck_assert_str_eq(form(&g, 6, d1, 2, 1, &worst, why), "0,1,2|3,4,5");
  ck_assert_uint_eq(worst, 1);
  ctl_groups_release(&g);
  /* Racks in node order: dealt apart. */
  const char *const d2[] = {"a", "a", "b", "b", "c", "c"};
  ck_assert_str_eq(form(&g, 6, d2, 2, 1, &worst, why), "0,2,4|1,3,5");
  ck_assert_uint_eq(worst, 1);
  ck_assert_str_eq(why, "");
  ctl_groups_release(&g);
  /* Groups of different sizes, every domain at most as large as the
   * number of groups. */
  const char *const d3[] = {"a", "a", "b", "b", "c", "c", "d"};
  ck_assert_str_eq(form(&g, 7, d3, 2, 1, &worst, why), "0,2,4,6|1,3,5");
  ck_assert_uint_eq(worst, 1);
  ctl_groups_release(&g);
  const char *const d4[] = {"x", "y", "x", "z", "y", "x", "z", "y", "z"};
  form(&g, 9, d4, 2, 1, &worst, why);
  ck_assert_uint_eq(worst, 1);
  for (uint32_t i = 0; i < g.n; i++)
    for (uint32_t x = g.first[i]; x < g.first[i + 1]; x++)
      for (uint32_t y = g.first[i]; y < x; y++)
        ck_assert_str_ne(d4[g.member[x]], d4[g.member[y]]);
  ctl_groups_release(&g);
}
END_TEST

START_TEST(domains_too_few)
{
  struct ctl_groups g;
  uint32_t worst;
  char why[512];

  /* 4 nodes of rack a, 2 groups: 2 of a in each, never 3 in one. */
  const char *const d0[] = {"a", "a", "a", "a", "b", "b"};
  ck_assert_str_eq(form(&g, 6, d0, 2, 1, &worst, why), "0,2,4|1,3,5");
  ck_assert_uint_eq(worst, 2);
  ck_assert_msg(strstr(why, "failure domain 'a' holds 2 members of node "
                            "group 0") != NULL &&
                    strstr(why, "2 domains") != NULL &&
                    strstr(why, "its code absorbs 1") != NULL,
                "%s", why);
  ctl_groups_release(&g);
  /* One domain for everything: still a valid split. */
  const char *const d1[] = {"r", "r", "r"};
  ck_assert_str_eq(form(&g, 3, d1, 2, 1, &worst, why), "0,1,2");
  ck_assert_uint_eq(worst, 3);
  ck_assert_msg(strstr(why, "'r' holds 3 members") != NULL, "%s", why);
  ctl_groups_release(&g);
}
END_TEST

/* Random labels: the most members of a group in one domain is the least any
 * split can reach, max over domains of ceil(count / groups). */
START_TEST(random_bound)
{
  static const char *const names[] = {"r0", "r1", "r2", "r3", "r4", "", ""};
  uint32_t seed = 12345;
  for (int iter = 0; iter < 3000; iter++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t nodes = 1 + (seed >> 16) % 64;
    seed = seed * 1103515245u + 12345u;
    uint32_t m = 1 + (seed >> 16) % 3;
    seed = seed * 1103515245u + 12345u;
    uint32_t k = 1 + (seed >> 16) % 6;
    if (k + m > nodes)
      continue;
    char why[512];
    if (ctl_groups_code_check(nodes, k, m, why, sizeof(why)) != PT_OK)
      continue;
    const char *doms[64];
    seed = seed * 1103515245u + 12345u;
    uint32_t ndom = 1 + (seed >> 16) % 7;
    for (uint32_t i = 0; i < nodes; i++) {
      seed = seed * 1103515245u + 12345u;
      doms[i] = names[(seed >> 16) % ndom];
    }
    struct ctl_groups g;
    uint32_t worst;
    form(&g, nodes, doms, k, m, &worst, why);
    uint32_t bound = 1;
    for (uint32_t i = 0; i < nodes; i++) {
      if (doms[i][0] == '\0')
        continue;
      uint32_t c = 0;
      for (uint32_t j = 0; j < nodes; j++)
        c += strcmp(doms[i], doms[j]) == 0;
      uint32_t b = (c + g.n - 1) / g.n;
      if (b > bound)
        bound = b;
    }
    ck_assert_msg(worst == bound, "%u nodes %u+%u: worst %u, bound %u",
                  nodes, k, m, worst, bound);
    ck_assert(worst == 1 ? why[0] == '\0' : why[0] != '\0');
    ctl_groups_release(&g);
  }
}
END_TEST

START_TEST(journaled)
{
  struct ctl_groups g;
  char err[256];
  const uint32_t a[] = {0, 2, 4, 6}, b[] = {1, 3, 5};
  const uint32_t *lists[] = {a, b};
  size_t lens[] = {4, 3};

  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, lists, lens, 2, err,
                                  sizeof(err)),
                   PT_OK);
  ck_assert_str_eq(str(&g), "0,2,4,6|1,3,5");
  ck_assert_uint_eq(g.group_of[5], 1);
  ck_assert_uint_eq(g.index_of[5], 2);
  ck_assert_uint_eq(ctl_groups_k(&g, 0), 3);
  ctl_groups_release(&g);
  ck_assert_int_eq(ctl_groups_set(&g, 7, 0, 0, NULL, NULL, 0, err,
                                  sizeof(err)),
                   PT_OK);
  ck_assert_uint_eq(g.n, 0);
  ctl_groups_release(&g);
  /* refusals: a group short, a node twice, one out of range, one left out,
   * groups for code none */
  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, lists, lens, 1, err,
                                  sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "1 coding groups") != NULL, "%s", err);
  const uint32_t c[] = {1, 3, 4};
  const uint32_t *l2[] = {a, c};
  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, l2, lens, 2, err,
                                  sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "node index 4 (twice)") != NULL, "%s", err);
  const uint32_t d[] = {1, 3, 9};
  const uint32_t *l3[] = {a, d};
  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, l3, lens, 2, err,
                                  sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "no such node") != NULL, "%s", err);
  size_t l4[] = {4, 2};
  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, lists, l4, 2, err,
                                  sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "has 2 members") != NULL, "%s", err);
  size_t l5[] = {3, 3};
  ck_assert_int_eq(ctl_groups_set(&g, 7, 2, 1, lists, l5, 2, err,
                                  sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "cover 6 of the 7") != NULL, "%s", err);
  ck_assert_int_eq(ctl_groups_set(&g, 7, 0, 0, lists, lens, 2, err,
                                  sizeof(err)),
                   PT_EFORMAT);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_groups");
  TCase *tc = tcase_create("groups");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, node_list);
  tcase_add_test(tc, domains_apart);
  tcase_add_test(tc, domains_too_few);
  tcase_add_test(tc, random_bound);
  tcase_add_test(tc, journaled);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
