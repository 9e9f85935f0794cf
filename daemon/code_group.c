/*
 * code_group.c — the coding group on an SMP's command line: one member
 * written and read back, and the whole group checked (code_group.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/hex.h"
#include "daemon/code_group.h"

int code_group_code_parse(const char *s, uint32_t *k, uint32_t *m)
{
  uint32_t v[2] = {0, 0};
  const char *p = s;
  for (int i = 0; i < 2; i++) {
    if (p == NULL || *p < '0' || *p > '9')
      return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
      v[i] = v[i] * 10 + (uint32_t)(*p - '0');
      if (v[i] > RS_MAX_MEMBERS)
        return -EINVAL;
    }
    if (*p != (i == 0 ? '+' : '\0'))
      return -EINVAL;
    p++;
  }
  *k = v[0];
  *m = v[1];
  return PT_OK;
}

static bool plain(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
         c == ':' || c == '[' || c == ']';
}

/* s percent-encoded at out + *used. false when it does not fit. */
static bool put(char *out, size_t len, size_t *used, const char *s)
{
  static const char hex[] = "0123456789ABCDEF";
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    size_t need = plain(c) ? 1 : 3;
    if (*used + need >= len)
      return false;
    if (need == 1) {
      out[(*used)++] = (char)c;
    } else {
      out[(*used)++] = '%';
      out[(*used)++] = hex[c >> 4];
      out[(*used)++] = hex[c & 15];
    }
  }
  out[*used] = '\0';
  return true;
}

int code_group_member_format(const struct code_group_member *m, char *out,
                             size_t len)
{
  int n = snprintf(out, len, "%" PRIu32 ":", m->node_index);
  if (n < 0 || (size_t)n >= len)
    return -E2BIG;
  size_t used = (size_t)n;
  if (!put(out, len, &used, m->node_id) || used + 1 >= len)
    return -E2BIG;
  out[used++] = '=';
  out[used] = '\0';
  if (!put(out, len, &used, m->addr))
    return -E2BIG;
  return PT_OK;
}

/* [s, end) decoded into out (cap bytes with the NUL). false: a bad %XX, a
 * NUL byte, or too long. */
static bool get(const char *s, const char *end, char *out, size_t cap)
{
  size_t n = 0;
  while (s < end) {
    int c = (unsigned char)*s;
    if (c == '%') {
      if (end - s < 3)
        return false;
      int hi = hex_value(s[1]), lo = hex_value(s[2]);
      if (hi < 0 || lo < 0)
        return false;
      c = hi * 16 + lo;
      s += 3;
    } else {
      s++;
    }
    if (c == 0 || n + 1 >= cap)
      return false;
    out[n++] = (char)c;
  }
  out[n] = '\0';
  return true;
}

int code_group_member_parse(const char *s, struct code_group_member *m,
                            char *err, size_t errlen)
{
  const char *colon = s != NULL ? strchr(s, ':') : NULL;
  const char *eq = colon != NULL ? strchr(colon + 1, '=') : NULL;
  char *end;

  memset(m, 0, sizeof(*m));
  if (colon == NULL || eq == NULL || colon == s || s[0] < '0' || s[0] > '9')
    goto bad;
  unsigned long v = strtoul(s, &end, 10);
  if (end != colon || v > UINT32_MAX)
    goto bad;
  m->node_index = (uint32_t)v;
  if (!get(colon + 1, eq, m->node_id, sizeof(m->node_id)) ||
      m->node_id[0] == '\0')
    goto bad;
  if (!get(eq + 1, eq + strlen(eq), m->addr, sizeof(m->addr)))
    goto bad;
  for (const char *p = m->addr; *p != '\0'; p++)
    if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
      goto bad;
  return PT_OK;
bad:
  snprintf(err, errlen, "group member '%.300s' is not INDEX:NODE-ID=ADDRESS "
           "(a node index, a node id of 1..%u bytes, an address of at most "
           "%u printable bytes; other bytes as %%XX)",
           s != NULL ? s : "", RPC_NODE_ID_MAX, CODE_GROUP_ADDR_MAX);
  return -EINVAL;
}

int code_group_check(const struct code_group *g, const char *self,
                     char *err, size_t errlen)
{
  if (g->k < 1 || g->m < 1 || g->k + g->m > RS_MAX_MEMBERS) {
    snprintf(err, errlen, "code %" PRIu32 "+%" PRIu32 ": k >= 1, m >= 1 and "
             "k + m <= %u", g->k, g->m, RS_MAX_MEMBERS);
    return -EINVAL;
  }
  if (g->n != g->k + g->m) {
    snprintf(err, errlen, "coding group %" PRIu32 " has %" PRIu32 " members "
             "for code %" PRIu32 "+%" PRIu32 " (%" PRIu32 " expected)",
             g->group, g->n, g->k, g->m, g->k + g->m);
    return -EINVAL;
  }
  if (g->member >= g->n) {
    snprintf(err, errlen, "member %" PRIu32 " of coding group %" PRIu32
             " of %" PRIu32 " members", g->member, g->group, g->n);
    return -EINVAL;
  }
  for (uint32_t i = 0; i < g->n; i++)
    for (uint32_t j = 0; j < i; j++) {
      const struct code_group_member *a = &g->members[i], *b = &g->members[j];
      if (a->node_index == b->node_index ||
          strcmp(a->node_id, b->node_id) == 0) {
        snprintf(err, errlen, "coding group %" PRIu32 ": members %" PRIu32
                 " and %" PRIu32 " are on the same node (%s)", g->group, j,
                 i, a->node_index == b->node_index ? "node index" : "node id");
        return -EINVAL;
      }
    }
  if (self != NULL && strcmp(g->members[g->member].node_id, self) != 0) {
    snprintf(err, errlen, "coding group %" PRIu32 ": member %" PRIu32
             " is node '%.255s', not this node ('%.255s')", g->group,
             g->member, g->members[g->member].node_id, self);
    return -EINVAL;
  }
  return PT_OK;
}
