/*
 * rs_group.c — group-level encode and member verification, given every
 * member's buffers in one address space (a node holding the chunks it
 * received, a single-node group, the tests and the benchmark), and the slice
 * helpers rs_decode.c shares.
 *
 * Members keep their real sizes; the padding of the layout is virtual: a
 * slice of a chunk that lies past a member's S bytes reads as zeros (the
 * coder's zero slice, or a bounce buffer for the one slice that straddles S).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "ec/rs_internal.h"
#include "kernels/kernels.h"
#include "pt.h"

int rs_group_check(const struct rs_coder *c, const struct rs_layout *l,
                   const struct rs_member *mb, const char *what)
{
  if (c == NULL || l == NULL || mb == NULL)
    return rs_fail(-EINVAL, "rs: %s: %s is NULL", what,
                   c == NULL ? "coder" : l == NULL ? "layout" : "member array");
  if (l->k != c->k || l->m != c->m || l->g != l->k + l->m ||
      l->chunk_bytes == 0)
    return rs_fail(-EINVAL, "rs: %s: layout %u+%u does not match the %u+%u coder",
                   what, l->k, l->m, c->k, c->m);
  for (unsigned i = 0; i < l->g; i++) {
    if (mb[i].bytes != l->member_bytes[i])
      return rs_fail(-EINVAL,
                     "rs: %s: member %u has %zu bytes, the layout says %zu",
                     what, i, mb[i].bytes, l->member_bytes[i]);
  }
  return 0;
}

size_t rs_slice_len(const struct rs_coder *c, const struct rs_layout *l,
                    size_t s)
{
  size_t off = s * c->slice;
  return l->chunk_bytes - off < c->slice ? l->chunk_bytes - off : c->slice;
}

unsigned char *rs_data_in(const struct rs_coder *c, const struct rs_layout *l,
                          const struct rs_member *mb, unsigned i,
                          unsigned chunk, size_t off, size_t len,
                          unsigned char *bounce)
{
  size_t v = rs_layout_chunk_valid(l, i, chunk);
  const unsigned char *p;

  if (off >= v)
    return c->zero;
  p = (const unsigned char *)mb[i].data + (size_t)chunk * l->chunk_bytes + off;
  if (off + len <= v)
    return (unsigned char *)p;
  memcpy(bounce, p, v - off);
  memset(bounce + (v - off), 0, len - (v - off));
  return bounce;
}

/* ---- encode --------------------------------------------------------------------- */

struct encode_call {
  struct rs_coder *c;
  const struct rs_layout *l;
  const struct rs_member *mb;
  size_t nslices;
  uint32_t out[RS_MAX_MEMBERS];          /* parity positions computed */
  unsigned char *tbls[RS_MAX_MEMBERS];   /* their tables */
  unsigned char *owned[RS_MAX_MEMBERS];
};

static int encode_task(void *arg, size_t t, struct rs_worker *w)
{
  struct encode_call *e = arg;
  const struct rs_layout *l = e->l;
  unsigned j = (unsigned)(t / e->nslices), nout = 0;
  size_t s = t % e->nslices, off = s * e->c->slice;
  size_t len = rs_slice_len(e->c, l, s);
  unsigned char *src[RS_MAX_MEMBERS], *out[RS_MAX_MEMBERS];

  if (e->out[j] == 0)
    return 0;
  for (unsigned q = 0; q < l->k; q++)
    src[q] = rs_data_in(e->c, l, e->mb, rs_layout_piece_member(l, j, q), q, off,
                        len, w->scratch + (size_t)q * e->c->slice);
  for (unsigned q = l->k; q < l->g; q++)
    if (e->out[j] & (1u << q))
      out[nout++] = (unsigned char *)e->mb[rs_layout_piece_member(l, j, q)].parity +
                    (size_t)(q - l->k) * l->chunk_bytes + off;
  ec_encode_data((int)len, (int)l->k, (int)nout, e->tbls[j], src, out);
  return 0;
}

int rs_group_encode(struct rs_coder *c, const struct rs_layout *l,
                    const struct rs_member *members)
{
  struct encode_call *e;
  uint32_t data_mask, all_parity;
  uint64_t work = 0;
  int rc = rs_group_check(c, l, members, "encode");

  if (rc < 0)
    return rc;
  for (unsigned i = 0; i < l->g; i++)
    if (members[i].data == NULL && members[i].bytes > 0)
      return rs_fail(-EINVAL, "rs: encode: member %u has no data buffer", i);
  e = calloc(1, sizeof(*e));
  if (e == NULL)
    return rs_fail(-ENOMEM, "rs: encode: out of memory");
  e->c = c;
  e->l = l;
  e->mb = members;
  e->nslices = (l->chunk_bytes + c->slice - 1) / c->slice;
  data_mask = (1u << l->k) - 1;
  all_parity = (l->g == 32 ? 0xffffffffu : (1u << l->g) - 1) & ~data_mask;
  for (unsigned j = 0; j < l->g; j++) {
    /* A NULL parity area is not computed: a keeper may build only its own
     * rows. All rows use the encode tables; a subset, tables of its own. */
    for (unsigned q = l->k; q < l->g; q++)
      if (members[rs_layout_piece_member(l, j, q)].parity != NULL)
        e->out[j] |= 1u << q;
    if (e->out[j] == all_parity) {
      e->tbls[j] = c->enc_tbls;
    } else if (e->out[j] != 0) {
      rc = rs_tables_get(c, data_mask, e->out[j], &e->tbls[j], &e->owned[j]);
      if (rc < 0)
        goto out_free;
    }
    if (e->out[j] != 0)
      work += (uint64_t)l->chunk_bytes * (l->k + rs_popcount(e->out[j]));
  }
  rc = rs_run(c, (size_t)l->g * e->nslices, (size_t)l->k * c->slice, work,
              encode_task, e);

out_free:
  for (unsigned j = 0; j < l->g; j++)
    free(e->owned[j]);
  free(e);
  return rc;
}

/* ---- verification of one member ------------------------------------------------------ */

struct verify_call {
  const unsigned char *data;
  size_t bytes;
  const uint32_t *crcs;
  uint8_t *bad;
};

static int verify_task(void *arg, size_t b, struct rs_worker *w)
{
  struct verify_call *v = arg;
  size_t a = b * KERN_BLOCK_SIZE;
  size_t n = v->bytes - a < KERN_BLOCK_SIZE ? v->bytes - a : KERN_BLOCK_SIZE;

  (void)w;
  v->bad[b] = crc32c_update(CRC32C_SEED, v->data + a, n) != v->crcs[b];
  return 0;
}

int rs_member_verify(struct rs_coder *c, const struct rs_layout *l,
                     unsigned member, const struct rs_member *mb,
                     uint32_t *bad_chunks)
{
  struct verify_call v;
  size_t nb;
  uint32_t bad = 0;
  int rc;

  if (bad_chunks != NULL)
    *bad_chunks = 0;
  if (c == NULL || l == NULL || mb == NULL)
    return rs_fail(-EINVAL, "rs: verify: %s is NULL",
                   c == NULL ? "coder" : l == NULL ? "layout" : "member");
  if (l->k != c->k || l->m != c->m || member >= l->g)
    return rs_fail(-EINVAL,
                   "rs: verify: member %u of a %u+%u layout, coder %u+%u",
                   member, l->k, l->m, c->k, c->m);
  if (mb->bytes != l->member_bytes[member])
    return rs_fail(-EINVAL,
                   "rs: verify: member %u has %zu bytes, the layout says %zu",
                   member, mb->bytes, l->member_bytes[member]);
  nb = kern_nblocks(mb->bytes);
  if (nb == 0)
    return 0;
  if (mb->data == NULL || mb->crcs == NULL)
    return rs_fail(-EINVAL, "rs: verify: member %u has no %s", member,
                   mb->data == NULL ? "data buffer" : "checksum table");
  v = (struct verify_call){.data = mb->data, .bytes = mb->bytes,
                           .crcs = mb->crcs, .bad = calloc(nb, 1)};
  if (v.bad == NULL)
    return rs_fail(-ENOMEM, "rs: verify: out of memory");
  rc = rs_run(c, nb, 0, mb->bytes, verify_task, &v);
  if (rc == 0) {
    for (size_t b = 0; b < nb; b++) {
      size_t a = b * KERN_BLOCK_SIZE, e = a + KERN_BLOCK_SIZE;
      if (!v.bad[b])
        continue;
      if (e > mb->bytes)
        e = mb->bytes;
      for (size_t ch = a / l->chunk_bytes; ch <= (e - 1) / l->chunk_bytes; ch++)
        bad |= 1u << ch;
    }
    if (bad_chunks != NULL)
      *bad_chunks = bad;
    if (bad != 0)
      rc = rs_fail(PT_ECHECKSUM,
                   "rs: verify: member %u fails its checksums (chunks 0x%x)",
                   member, bad);
  }
  free(v.bad);
  return rc;
}
