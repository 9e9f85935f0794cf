/*
 * ctl_groups.c — a job's erasure code and its coding groups (pure: no
 * sockets, no clock, no membership; unit-tested in test_ctl_groups.c).
 *
 * The code k+m is the job's (JobSpec code_k, code_m; default by the number
 * of nodes N: none for 1-2, 2+1 for 3-5, 4+2 from 6). The job's N nodes
 * (by node index) are split into node groups; local rank r of the nodes of
 * node group g is coding group g * ranks_per_node + r, and the member
 * order of the node group is the member numbering of ec/rs.h (rs_layout:
 * member i holds data chunks and parity rows as its table says).
 *
 * The rule, when N is not a multiple of G = k + m: there are floor(N / G)
 * node groups, as equal in size as they can be (the first N mod q one node
 * larger), and every node is in exactly one. A group of s > G nodes codes
 * as (s - m)+m: the nodes past a multiple of G are extra data members, so
 * every group still survives m of its members lost, as asked, at a lower
 * parity overhead (7 nodes at 2+1: groups of 4 and 3, coded 3+1 and 2+1).
 * Overlapping groups would make some SMPs members of two groups and double
 * their traffic; nodes left out would be unprotected. A group may not have
 * more than RS_MAX_MEMBERS members (what ec/ codes): a code whose groups
 * would (e.g. 20+12 on 40 nodes) is refused with the sizes named.
 *
 * Failure domains: never two members of one group in one failure domain
 * when the labels allow it (a node without a label is a domain of its
 * own). The groups are the consecutive node indices when that already
 * keeps every group's domains apart (DESIGN.md: "default order: the node
 * list"); otherwise the nodes, sorted by domain (the largest domain
 * first), are dealt to the groups in turn, so a domain of c nodes puts at
 * most ceil(c / q) of them in any group: none twice when c <= q for every
 * domain, and as few as any split can otherwise. Members are numbered by
 * node index within a group, and groups by their first node index.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "ec/rs.h"

void ctl_groups_default_code(uint32_t nodes, uint32_t *k, uint32_t *m)
{
  if (nodes >= 6) {
    *k = 4;
    *m = 2;
  } else if (nodes >= 3) {
    *k = 2;
    *m = 1;
  } else {
    *k = *m = 0;
  }
}

uint32_t ctl_groups_count(uint32_t nodes, uint32_t k, uint32_t m)
{
  if (k == 0 || m == 0 || (uint64_t)k + m > nodes)
    return 0;
  return nodes / (k + m);
}

int ctl_groups_code_check(uint32_t nodes, uint32_t k, uint32_t m, char *err,
                          size_t errlen)
{
  if (k == 0 && m == 0)
    return PT_OK;
  if (k == 0 || m == 0) {
    snprintf(err, errlen, "code %" PRIu32 "+%" PRIu32 ": k >= 1 and m >= 1 "
             "(or none)", k, m);
    return -EINVAL;
  }
  if ((uint64_t)k + m > RS_MAX_MEMBERS) {
    snprintf(err, errlen, "code %" PRIu32 "+%" PRIu32 ": k + m at most %u",
             k, m, RS_MAX_MEMBERS);
    return -EINVAL;
  }
  if (k + m > nodes) {
    snprintf(err, errlen, "code %" PRIu32 "+%" PRIu32 " needs at least %"
             PRIu32 " nodes; the job has %" PRIu32, k, m, k + m, nodes);
    return -EINVAL;
  }
  uint32_t q = nodes / (k + m), big = (nodes + q - 1) / q;
  if (big > RS_MAX_MEMBERS) {
    snprintf(err, errlen, "code %" PRIu32 "+%" PRIu32 " on %" PRIu32
             " nodes: %" PRIu32 " group%s of up to %" PRIu32 " nodes, more "
             "than the %u members a group can have (take a wider code, or "
             "a multiple of %" PRIu32 " nodes)", k, m, nodes, q,
             q == 1 ? "" : "s", big, RS_MAX_MEMBERS, k + m);
    return -EINVAL;
  }
  return PT_OK;
}

void ctl_groups_release(struct ctl_groups *g)
{
  free(g->first);
  free(g->member);
  free(g->group_of);
  free(g->index_of);
  memset(g, 0, sizeof(*g));
}

static int alloc(struct ctl_groups *g, uint32_t nodes, uint32_t n,
                 uint32_t m)
{
  memset(g, 0, sizeof(*g));
  g->m = m;
  g->n = n;
  g->nodes = nodes;
  g->first = calloc((size_t)n + 1, sizeof(*g->first));
  g->member = calloc(nodes > 0 ? nodes : 1, sizeof(*g->member));
  g->group_of = calloc(nodes > 0 ? nodes : 1, sizeof(*g->group_of));
  g->index_of = calloc(nodes > 0 ? nodes : 1, sizeof(*g->index_of));
  if (g->first == NULL || g->member == NULL || g->group_of == NULL ||
      g->index_of == NULL) {
    ctl_groups_release(g);
    return -ENOMEM;
  }
  return PT_OK;
}

/* group_of, index_of from first, member. */
static void build_index(struct ctl_groups *g)
{
  for (uint32_t i = 0; i < g->n; i++)
    for (uint32_t x = g->first[i]; x < g->first[i + 1]; x++) {
      g->group_of[g->member[x]] = i;
      g->index_of[g->member[x]] = x - g->first[i];
    }
}

static const char *dom(const char *const *domains, uint32_t i)
{
  return domains != NULL && domains[i] != NULL ? domains[i] : "";
}

/* The same failure domain (no label: a domain of its own). */
static bool same_domain(const char *const *domains, uint32_t a, uint32_t b)
{
  const char *x = dom(domains, a), *y = dom(domains, b);
  return a == b || (x[0] != '\0' && strcmp(x, y) == 0);
}

/* The most members group i has in one domain; OUT: *at (one of them). */
static uint32_t group_worst(const struct ctl_groups *g,
                            const char *const *domains, uint32_t i,
                            uint32_t *at)
{
  uint32_t worst = 0;
  for (uint32_t x = g->first[i]; x < g->first[i + 1]; x++) {
    uint32_t c = 0;
    for (uint32_t y = g->first[i]; y < g->first[i + 1]; y++)
      c += same_domain(domains, g->member[x], g->member[y]);
    if (c > worst) {
      worst = c;
      *at = g->member[x];
    }
  }
  return worst;
}

static uint32_t *sort_count; /* per node: its domain's size (qsort has */
static uint32_t *sort_rep;   /* no argument); its domain's first node */

/* By domain, the largest first (ties: the domain seen first), then by node
 * index: a domain's nodes are consecutive. */
static int by_domain(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  if (sort_count[x] != sort_count[y])
    return sort_count[x] > sort_count[y] ? -1 : 1;
  if (sort_rep[x] != sort_rep[y])
    return sort_rep[x] < sort_rep[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

static int by_value(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Groups by their first member. */
static void order_groups(struct ctl_groups *g)
{
  for (uint32_t i = 0; i < g->n; i++)
    qsort(&g->member[g->first[i]], g->first[i + 1] - g->first[i],
          sizeof(uint32_t), by_value);
  /* Insertion sort of whole groups (few of them) by their first member. */
  uint32_t *tmp = malloc((size_t)g->nodes * sizeof(*tmp));
  uint32_t *ord = malloc((size_t)g->n * sizeof(*ord));
  if (tmp == NULL || ord == NULL) {
    free(tmp);
    free(ord);
    return; /* still a valid split, only not in canonical order */
  }
  for (uint32_t i = 0; i < g->n; i++) {
    uint32_t j = i;
    while (j > 0 && g->member[g->first[ord[j - 1]]] >
                        g->member[g->first[i]]) {
      ord[j] = ord[j - 1];
      j--;
    }
    ord[j] = i;
  }
  uint32_t *nf = calloc((size_t)g->n + 1, sizeof(*nf));
  if (nf != NULL) {
    uint32_t off = 0;
    for (uint32_t j = 0; j < g->n; j++) {
      uint32_t i = ord[j], s = g->first[i + 1] - g->first[i];
      memcpy(&tmp[off], &g->member[g->first[i]], s * sizeof(*tmp));
      nf[j] = off;
      off += s;
    }
    nf[g->n] = off;
    memcpy(g->member, tmp, (size_t)g->nodes * sizeof(*tmp));
    free(g->first);
    g->first = nf;
  }
  free(tmp);
  free(ord);
}

int ctl_groups_form(struct ctl_groups *g, uint32_t nodes,
                    const char *const *domains, uint32_t k, uint32_t m,
                    uint32_t *worst_out, char *why, size_t whylen)
{
  uint32_t q = ctl_groups_count(nodes, k, m), worst = 0, at = 0, wg = 0;
  int rc;

  if (why != NULL && whylen > 0)
    why[0] = '\0';
  if (worst_out != NULL)
    *worst_out = 0;
  if (k == 0 && m == 0)
    return alloc(g, nodes, 0, 0);
  if (ctl_groups_code_check(nodes, k, m, why, whylen) != PT_OK || q == 0)
    return -EINVAL;
  rc = alloc(g, nodes, q, m);
  if (rc != PT_OK)
    return rc;
  /* Sizes: the first nodes % q groups one larger. */
  for (uint32_t i = 0; i < q; i++)
    g->first[i + 1] = g->first[i] + nodes / q + (i < nodes % q);
  /* The node list, cut in consecutive groups... */
  for (uint32_t x = 0; x < nodes; x++)
    g->member[x] = x;
  bool apart = true;
  for (uint32_t i = 0; i < q && apart; i++)
    apart = group_worst(g, domains, i, &at) <= 1;
  if (!apart) {
    /* ... or dealt by domain, the largest first. */
    uint32_t *count = calloc(nodes, sizeof(*count));
    uint32_t *rep = calloc(nodes, sizeof(*rep));
    uint32_t *seq = malloc((size_t)nodes * sizeof(*seq));
    if (count == NULL || rep == NULL || seq == NULL) {
      free(count);
      free(rep);
      free(seq);
      ctl_groups_release(g);
      return -ENOMEM;
    }
    for (uint32_t x = 0; x < nodes; x++) {
      seq[x] = x;
      rep[x] = x;
      for (uint32_t y = 0; y < nodes; y++)
        if (same_domain(domains, x, y)) {
          count[x]++;
          if (y < rep[x])
            rep[x] = y;
        }
    }
    sort_count = count;
    sort_rep = rep;
    qsort(seq, nodes, sizeof(*seq), by_domain);
    free(rep);
    /* Position t goes to group t mod q: group i gets ceil((N - i) / q)
     * of them, the sizes above. */
    uint32_t *fill = calloc(q, sizeof(*fill));
    if (fill == NULL) {
      free(count);
      free(seq);
      ctl_groups_release(g);
      return -ENOMEM;
    }
    for (uint32_t t = 0; t < nodes; t++) {
      uint32_t i = t % q;
      g->member[g->first[i] + fill[i]++] = seq[t];
    }
    free(fill);
    free(count);
    free(seq);
    order_groups(g);
  }
  build_index(g);
  for (uint32_t i = 0; i < q; i++) {
    uint32_t a = 0, w = group_worst(g, domains, i, &a);
    if (w > worst) {
      worst = w;
      at = a;
      wg = i;
    }
  }
  if (worst > 1 && why != NULL) {
    size_t ndom = 0;
    for (uint32_t x = 0; x < nodes; x++) {
      bool first = true;
      for (uint32_t y = 0; y < x && first; y++)
        first = !same_domain(domains, x, y);
      ndom += first;
    }
    snprintf(why, whylen, "failure domain '%s' holds %" PRIu32 " members of "
             "node group %" PRIu32 ": the job's %" PRIu32 " nodes are in %zu "
             "domains, too few to keep %" PRIu32 " groups of %" PRIu32
             "%s nodes apart; a loss of that domain costs the group %" PRIu32
             " members (its code absorbs %" PRIu32 ")",
             LOG_ESC(dom(domains, at)), worst, wg, nodes, ndom, q,
             nodes / q, nodes % q != 0 ? "+" : "", worst, m);
  }
  if (worst_out != NULL)
    *worst_out = worst;
  return PT_OK;
}

int ctl_groups_set(struct ctl_groups *g, uint32_t nodes, uint32_t k,
                   uint32_t m, const uint32_t *const *lists,
                   const size_t *lens, size_t ngroups, char *err,
                   size_t errlen)
{
  uint32_t q = ctl_groups_count(nodes, k, m);
  size_t total = 0;

  if (k == 0 && m == 0 && ngroups == 0)
    return alloc(g, nodes, 0, 0);
  if (ngroups != q) {
    snprintf(err, errlen, "%zu coding groups for code %" PRIu32 "+%" PRIu32
             " on %" PRIu32 " nodes (%" PRIu32 " expected)", ngroups, k, m,
             nodes, q);
    return PT_EFORMAT;
  }
  int rc = alloc(g, nodes, q, m);
  if (rc != PT_OK)
    return rc;
  bool *seen = calloc(nodes, sizeof(*seen));
  if (seen == NULL) {
    ctl_groups_release(g);
    return -ENOMEM;
  }
  for (size_t i = 0; i < ngroups && rc == PT_OK; i++) {
    if (lens[i] < (size_t)k + m || lens[i] > RS_MAX_MEMBERS) {
      snprintf(err, errlen, "coding group %zu has %zu members (%" PRIu32
               "..%u)", i, lens[i], k + m, RS_MAX_MEMBERS);
      rc = PT_EFORMAT;
      break;
    }
    g->first[i + 1] = g->first[i] + (uint32_t)lens[i];
    for (size_t x = 0; x < lens[i]; x++) {
      uint32_t v = lists[i][x];
      if (v >= nodes || seen[v]) {
        snprintf(err, errlen, "coding group %zu names node index %" PRIu32
                 " (%s)", i, v, v >= nodes ? "no such node" : "twice");
        rc = PT_EFORMAT;
        break;
      }
      seen[v] = true;
      g->member[total++] = v;
    }
  }
  free(seen);
  if (rc == PT_OK && total != nodes) {
    snprintf(err, errlen, "the coding groups cover %zu of the %" PRIu32
             " nodes", total, nodes);
    rc = PT_EFORMAT;
  }
  if (rc != PT_OK) {
    ctl_groups_release(g);
    return rc;
  }
  build_index(g);
  return PT_OK;
}
