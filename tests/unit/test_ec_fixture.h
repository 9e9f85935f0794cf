/*
 * test_ec_fixture.h — what the ec test files share (included, not compiled on
 * its own): pseudo-random data, a CRC32C written independently of ISA-L with
 * the conventions of kernels.h, and a fixture holding a coding group, its
 * data, checksum tables and encoded parity.
 */
#ifndef PT_TEST_EC_FIXTURE_H
#define PT_TEST_EC_FIXTURE_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ec/rs.h"
#include "kernels/kernels.h"
#include "pt.h"

/* ---- helpers: random bytes, an independent CRC32C ---------------------------- */

static inline uint64_t rng_next(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static inline void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(rng_next(&s) >> 24);
}

/* CRC32C (Castagnoli, reflected 0x82F63B78) with the conventions of
 * kernels.h: initial value 0xFFFFFFFF, no final inversion. */
static uint32_t crc_table[256]; /* crc_init() fills it */

static inline void crc_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int b = 0; b < 8; b++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
}

static inline uint32_t crc_ref(const uint8_t *p, size_t n)
{
  uint32_t c = CRC32C_SEED;
  for (size_t i = 0; i < n; i++)
    c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c;
}

static inline uint32_t *crcs_of(const uint8_t *p, size_t n)
{
  size_t nb = kern_nblocks(n);
  uint32_t *t = malloc((nb + 1) * sizeof(*t));
  ck_assert_ptr_nonnull(t);
  for (size_t b = 0; b < nb; b++) {
    size_t len = n - b * KERN_BLOCK_SIZE;
    if (len > KERN_BLOCK_SIZE)
      len = KERN_BLOCK_SIZE;
    t[b] = crc_ref(p + b * KERN_BLOCK_SIZE, len);
  }
  return t;
}

/* ---- a fixture: a group, its data, checksums and encoded parity ---------------- */

struct fx {
  unsigned k, m, g;
  struct rs_layout l;
  struct rs_coder *c;
  uint8_t *data[RS_MAX_MEMBERS]; /* originals */
  uint8_t *par[RS_MAX_MEMBERS];  /* parity computed by rs_group_encode */
  uint32_t *crcs[RS_MAX_MEMBERS];
  uint8_t *out_data[RS_MAX_MEMBERS], *out_par[RS_MAX_MEMBERS];
  uint8_t *in_data[RS_MAX_MEMBERS], *in_par[RS_MAX_MEMBERS]; /* survivors' */
  struct rs_member mb[RS_MAX_MEMBERS];
};

static inline uint8_t *xalloc(size_t n)
{
  uint8_t *p = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(p);
  return p;
}

static inline void fx_init(struct fx *f, unsigned k, unsigned m, const size_t *sizes,
                    unsigned threads, size_t slice, uint64_t seed)
{
  struct rs_coder_opts o = {.threads = threads, .slice_bytes = slice};
  struct rs_member mb[RS_MAX_MEMBERS];

  memset(f, 0, sizeof(*f));
  f->k = k;
  f->m = m;
  f->g = k + m;
  ck_assert_int_eq(rs_layout_init(&f->l, k, m, sizes, f->g), 0);
  ck_assert_int_eq(rs_coder_new(&f->c, k, m, &o), 0);
  for (unsigned i = 0; i < f->g; i++) {
    f->data[i] = xalloc(sizes[i]);
    fill_random(f->data[i], sizes[i], seed * 1000 + i);
    f->crcs[i] = crcs_of(f->data[i], sizes[i]);
    f->par[i] = xalloc(f->l.parity_bytes);
    memset(f->par[i], 0xEE, f->l.parity_bytes);
    f->out_data[i] = xalloc(sizes[i]);
    f->out_par[i] = xalloc(f->l.parity_bytes);
    f->in_data[i] = xalloc(sizes[i]);
    f->in_par[i] = xalloc(f->l.parity_bytes);
    mb[i] = (struct rs_member){.data = f->data[i], .bytes = sizes[i],
                               .parity = f->par[i], .crcs = f->crcs[i]};
  }
  ck_assert_int_eq(rs_group_encode(f->c, &f->l, mb), 0);
}

static inline void fx_free(struct fx *f)
{
  rs_coder_free(f->c);
  for (unsigned i = 0; i < f->g; i++) {
    free(f->data[i]);
    free(f->par[i]);
    free(f->crcs[i]);
    free(f->out_data[i]);
    free(f->out_par[i]);
    free(f->in_data[i]);
    free(f->in_par[i]);
  }
}

/* Members as a decode sees them: survivors read copies of the originals (so
 * a test may damage them), lost members write into garbage-filled buffers. */
static inline void fx_prepare(struct fx *f, uint32_t lost)
{
  for (unsigned i = 0; i < f->g; i++) {
    size_t s = f->l.member_bytes[i];
    if (lost & (1u << i)) {
      memset(f->out_data[i], 0xA5, s);
      memset(f->out_par[i], 0x5A, f->l.parity_bytes);
      f->mb[i] = (struct rs_member){.data = f->out_data[i], .bytes = s,
                                    .parity = f->out_par[i], .crcs = f->crcs[i]};
    } else {
      memcpy(f->in_data[i], f->data[i], s);
      memcpy(f->in_par[i], f->par[i], f->l.parity_bytes);
      f->mb[i] = (struct rs_member){.data = f->in_data[i], .bytes = s,
                                    .parity = f->in_par[i], .crcs = f->crcs[i]};
    }
  }
}

static inline void fx_check_rebuilt(const struct fx *f, uint32_t lost)
{
  for (unsigned i = 0; i < f->g; i++) {
    if (!(lost & (1u << i)))
      continue;
    ck_assert_msg(memcmp(f->out_data[i], f->data[i], f->l.member_bytes[i]) == 0,
                  "%u+%u lost 0x%x: member %u data differs", f->k, f->m, lost, i);
    ck_assert_msg(memcmp(f->out_par[i], f->par[i], f->l.parity_bytes) == 0,
                  "%u+%u lost 0x%x: member %u parity differs", f->k, f->m, lost,
                  i);
  }
}

static inline int fx_decode(struct fx *f, uint32_t lost, unsigned flags,
                     struct rs_decode_report *rep)
{
  fx_prepare(f, lost);
  return rs_group_decode(f->c, &f->l, f->mb, lost, flags, rep);
}

static inline void fx_round_trip(struct fx *f, uint32_t lost)
{
  struct rs_decode_report rep;
  int rc = fx_decode(f, lost, 0, &rep);

  ck_assert_msg(rc == 0, "%u+%u lost 0x%x: %s (%s)", f->k, f->m, lost,
                pt_err_name(rc), rs_last_error());
  ck_assert_uint_eq(rep.corrupt_members, 0);
  ck_assert_uint_eq(rep.rounds, 1);
  fx_check_rebuilt(f, lost);
}

#endif /* PT_TEST_EC_FIXTURE_H */
