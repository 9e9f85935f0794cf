/*
 * rs_layout.c — the coding group's layout: chunk size and padding, who sends
 * which chunk to whom, who keeps which parity row, and the rebuild plan for a
 * set of lost members. The mapping itself is the table at the top of rs.h;
 * everything here derives from its two formulas (piece at position q of
 * stripe j belongs to member (j + q) mod G; data chunk c is position c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ec/rs_internal.h"
#include "pt.h"

/* Largest member accepted: keeps every offset computation far from overflow. */
#define RS_MAX_MEMBER_BYTES ((size_t)1 << 50)

static _Thread_local char errmsg[256];

const char *rs_last_error(void)
{
  return errmsg;
}

int rs_fail(int err, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
  va_end(ap);
  return err;
}

int rs_layout_init(struct rs_layout *l, unsigned k, unsigned m,
                   const size_t *member_bytes, size_t nmembers)
{
  size_t max = 0, unit;

  if (l == NULL)
    return rs_fail(-EINVAL, "rs: layout: no layout to fill");
  if (k < 1 || m < 1 || k + m > RS_MAX_MEMBERS)
    return rs_fail(-EINVAL,
                   "rs: layout: code %u+%u refused: need k >= 1, m >= 1, "
                   "k + m <= %d",
                   k, m, RS_MAX_MEMBERS);
  if (member_bytes == NULL)
    return rs_fail(-EINVAL, "rs: layout: no member sizes given");
  if (nmembers != k + m)
    return rs_fail(-EINVAL,
                   "rs: layout: %zu member sizes given for a %u+%u group of %u",
                   nmembers, k, m, k + m);
  for (size_t i = 0; i < nmembers; i++) {
    if (member_bytes[i] > RS_MAX_MEMBER_BYTES)
      return rs_fail(-EINVAL, "rs: layout: member %zu has %zu bytes, above the "
                              "limit of %zu", i, member_bytes[i],
                     RS_MAX_MEMBER_BYTES);
    if (member_bytes[i] > max)
      max = member_bytes[i];
  }
  memset(l, 0, sizeof(*l));
  l->k = k;
  l->m = m;
  l->g = k + m;
  unit = (size_t)k * RS_ALIGN;
  l->padded_bytes = max == 0 ? unit : (max + unit - 1) / unit * unit;
  l->chunk_bytes = l->padded_bytes / k;
  l->parity_bytes = l->chunk_bytes * m;
  memcpy(l->member_bytes, member_bytes, nmembers * sizeof(size_t));
  return 0;
}

size_t rs_layout_chunk_valid(const struct rs_layout *l, unsigned member,
                             unsigned chunk)
{
  size_t start = (size_t)chunk * l->chunk_bytes, s = l->member_bytes[member];

  if (s <= start)
    return 0;
  return s - start < l->chunk_bytes ? s - start : l->chunk_bytes;
}

static int layout_check(const struct rs_layout *l, const char *what)
{
  if (l == NULL || l->k < 1 || l->m < 1 || l->g != l->k + l->m ||
      l->g > RS_MAX_MEMBERS || l->chunk_bytes == 0)
    return rs_fail(-EINVAL, "rs: %s: layout not initialised", what);
  return 0;
}

int rs_layout_sends(const struct rs_layout *l, unsigned member,
                    struct rs_send *out)
{
  int rc = layout_check(l, "sends");
  unsigned n = 0;

  if (rc < 0)
    return rc;
  if (member >= l->g || out == NULL)
    return rs_fail(-EINVAL, "rs: sends: member %u of %u, out %p", member,
                   l->g, (void *)out);
  for (unsigned c = 0; c < l->k; c++) {
    unsigned j = rs_layout_chunk_stripe(l, member, c);
    for (unsigned r = 0; r < l->m; r++) {
      out[n].chunk = c;
      out[n].stripe = j;
      out[n].to = rs_layout_piece_member(l, j, l->k + r);
      out[n].parity_row = r;
      out[n].offset = (size_t)c * l->chunk_bytes;
      out[n].valid = rs_layout_chunk_valid(l, member, c);
      n++;
    }
  }
  return (int)n;
}

int rs_layout_parity(const struct rs_layout *l, unsigned member,
                     struct rs_parity_ref *out)
{
  int rc = layout_check(l, "parity");

  if (rc < 0)
    return rc;
  if (member >= l->g || out == NULL)
    return rs_fail(-EINVAL, "rs: parity: member %u of %u, out %p", member,
                   l->g, (void *)out);
  for (unsigned r = 0; r < l->m; r++) {
    unsigned j = rs_layout_parity_stripe(l, member, r);
    memset(&out[r], 0, sizeof(out[r]));
    out[r].stripe = j;
    out[r].row = r;
    out[r].offset = (size_t)r * l->chunk_bytes;
    for (unsigned c = 0; c < l->k; c++)
      out[r].from[c] = (uint8_t)rs_layout_piece_member(l, j, c);
  }
  return (int)l->m;
}

static struct rs_piece piece_at(const struct rs_layout *l, unsigned j,
                                unsigned q)
{
  struct rs_piece p = {
      .stripe = (uint8_t)j,
      .pos = (uint8_t)q,
      .member = (uint8_t)rs_layout_piece_member(l, j, q),
      .is_parity = q >= l->k,
      .index = (uint8_t)(q < l->k ? q : q - l->k),
  };
  return p;
}

int rs_layout_plan(const struct rs_layout *l, uint32_t lost_members,
                   struct rs_plan *out)
{
  int rc = layout_check(l, "plan");
  unsigned nlost;

  if (rc < 0)
    return rc;
  if (out == NULL)
    return rs_fail(-EINVAL, "rs: plan: no plan to fill");
  if (l->g < 32 && (lost_members >> l->g) != 0)
    return rs_fail(-EINVAL, "rs: plan: lost set 0x%x names members beyond %u",
                   lost_members, l->g - 1);
  nlost = rs_popcount(lost_members);
  if (nlost > l->m)
    return rs_fail(PT_ENOFRAG,
                   "rs: plan: %u members lost, a %u+%u code rebuilds at most %u",
                   nlost, l->k, l->m, l->m);
  memset(out, 0, sizeof(*out));
  out->lost_members = lost_members;
  out->nstripes = l->g;
  for (unsigned j = 0; j < l->g; j++) {
    struct rs_stripe_plan *sp = &out->stripe[j];
    for (unsigned q = 0; q < l->g; q++) {
      unsigned i = rs_layout_piece_member(l, j, q);
      if (lost_members & (1u << i)) {
        sp->lost_mask |= 1u << q;
        sp->lost[sp->nlost++] = piece_at(l, j, q);
      }
    }
    if (sp->nlost == 0)
      continue;
    for (unsigned q = 0; q < l->g && sp->nsrc < l->k; q++) {
      if (sp->lost_mask & (1u << q))
        continue;
      sp->src_mask |= 1u << q;
      sp->src[sp->nsrc++] = piece_at(l, j, q);
    }
  }
  return 0;
}
