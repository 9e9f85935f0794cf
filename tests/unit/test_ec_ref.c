/*
 * test_ec_ref.c — the erasure code checked against a slow textbook
 * Reed–Solomon written here, with nothing from ISA-L: GF(2^8) over the
 * polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) by shift-and-add, the
 * systematic Cauchy generator matrix of ISA-L's gf_gen_cauchy1_matrix
 * definition (identity rows, then row i, column j = 1 / (i XOR j) for
 * i = k..k+m-1, j = 0..k-1), Gauss–Jordan elimination for decoding.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ec/rs.h"
#include "kernels/kernels.h"
#include "pt.h"
#include "tests/unit/unit.h"

/* ---- textbook GF(2^8) ------------------------------------------------------------ */

static uint8_t gf_mul_slow(uint8_t a, uint8_t b)
{
  unsigned r = 0, x = a;

  while (b) {
    if (b & 1)
      r ^= x;
    x <<= 1;
    if (x & 0x100)
      x ^= 0x11d;
    b >>= 1;
  }
  return (uint8_t)r;
}

static uint8_t mul_tab[256][256];
static uint8_t inv_tab[256];

static void gf_setup(void)
{
  for (unsigned a = 0; a < 256; a++)
    for (unsigned b = 0; b < 256; b++) {
      mul_tab[a][b] = gf_mul_slow((uint8_t)a, (uint8_t)b);
      if (mul_tab[a][b] == 1)
        inv_tab[a] = (uint8_t)b;
    }
}

/* Generator matrix, g rows by k columns. */
static void cauchy_matrix(uint8_t *a, unsigned k, unsigned g)
{
  memset(a, 0, (size_t)g * k);
  for (unsigned i = 0; i < k; i++)
    a[i * k + i] = 1;
  for (unsigned i = k; i < g; i++)
    for (unsigned j = 0; j < k; j++)
      a[i * k + j] = inv_tab[i ^ j];
}

/* Inverts the n x n matrix m (destroyed) into out; false when singular. */
static bool gauss_jordan(uint8_t *m, uint8_t *out, unsigned n)
{
  memset(out, 0, (size_t)n * n);
  for (unsigned i = 0; i < n; i++)
    out[i * n + i] = 1;
  for (unsigned col = 0; col < n; col++) {
    unsigned piv = col;
    uint8_t f;
    while (piv < n && m[piv * n + col] == 0)
      piv++;
    if (piv == n)
      return false;
    for (unsigned t = 0; t < n; t++) {
      uint8_t x = m[col * n + t];
      m[col * n + t] = m[piv * n + t];
      m[piv * n + t] = x;
      x = out[col * n + t];
      out[col * n + t] = out[piv * n + t];
      out[piv * n + t] = x;
    }
    f = inv_tab[m[col * n + col]];
    for (unsigned t = 0; t < n; t++) {
      m[col * n + t] = mul_tab[f][m[col * n + t]];
      out[col * n + t] = mul_tab[f][out[col * n + t]];
    }
    for (unsigned r = 0; r < n; r++) {
      uint8_t e = m[r * n + col];
      if (r == col || e == 0)
        continue;
      for (unsigned t = 0; t < n; t++) {
        m[r * n + t] ^= mul_tab[e][m[col * n + t]];
        out[r * n + t] ^= mul_tab[e][out[col * n + t]];
      }
    }
  }
  return true;
}

/* pieces[q] = sum_c a[q][c] * data[c], byte by byte, for q = 0..g-1. */
static void ref_encode(const uint8_t *a, unsigned k, unsigned g, size_t len,
                       uint8_t *const *data, uint8_t **pieces)
{
  for (unsigned q = 0; q < g; q++)
    for (size_t x = 0; x < len; x++) {
      uint8_t s = 0;
      for (unsigned c = 0; c < k; c++)
        s ^= mul_tab[a[q * k + c]][data[c][x]];
      pieces[q][x] = s;
    }
}

static uint64_t rng_next(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint8_t *xalloc(size_t n)
{
  uint8_t *p = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(p);
  return p;
}

/* ---- the field itself --------------------------------------------------------------- */

START_TEST(test_ref_field)
{
  /* 2 generates the multiplicative group (0x11d is primitive), every
   * non-zero element has an inverse, and a known product holds. */
  unsigned x = 1, order = 0;
  do {
    x = gf_mul_slow((uint8_t)x, 2);
    order++;
  } while (x != 1);
  ck_assert_uint_eq(order, 255);
  for (unsigned a = 1; a < 256; a++)
    ck_assert_uint_eq(mul_tab[a][inv_tab[a]], 1);
  ck_assert_uint_eq(gf_mul_slow(0x80, 2), 0x1d);
  ck_assert_uint_eq(gf_mul_slow(0x53, 0xca), mul_tab[0xca][0x53]);
}
END_TEST

/* ---- encode ------------------------------------------------------------------------ */

/* Loop index -> code k+m, k = 2..10, m = 1..4. */
static void code_of(int n, unsigned *k, unsigned *m)
{
  *k = 2 + (unsigned)n / 4;
  *m = 1 + (unsigned)n % 4;
}

START_TEST(test_ref_group_encode)
{
  unsigned k, m, g;
  size_t sizes[RS_MAX_MEMBERS];
  uint8_t *data[RS_MAX_MEMBERS], *par[RS_MAX_MEMBERS];
  uint8_t a[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  struct rs_member mb[RS_MAX_MEMBERS];
  struct rs_layout l;
  struct rs_coder *c;
  uint64_t s = 1000 + (uint64_t)_i;

  code_of(_i, &k, &m);
  g = k + m;
  cauchy_matrix(a, k, g);
  for (unsigned i = 0; i < g; i++) {
    sizes[i] = rng_next(&s) % 3000;
    data[i] = xalloc(sizes[i]);
    for (size_t x = 0; x < sizes[i]; x++)
      data[i][x] = (uint8_t)rng_next(&s);
  }
  ck_assert_int_eq(rs_layout_init(&l, k, m, sizes, g), 0);
  ck_assert_int_eq(rs_coder_new(&c, k, m, NULL), 0);
  for (unsigned i = 0; i < g; i++) {
    par[i] = xalloc(l.parity_bytes);
    mb[i] = (struct rs_member){.data = data[i], .bytes = sizes[i],
                               .parity = par[i]};
  }
  ck_assert_int_eq(rs_group_encode(c, &l, mb), 0);

  /* Stripe j by the book: data row c is chunk c of member j+c, zero-padded;
   * parity row r must equal what member j+k+r keeps at r*C. */
  for (unsigned j = 0; j < g; j++) {
    uint8_t *chunks[RS_MAX_MEMBERS], *pieces[RS_MAX_MEMBERS];
    size_t C = l.chunk_bytes;
    for (unsigned c2 = 0; c2 < k; c2++) {
      unsigned i = (j + c2) % g;
      size_t start = c2 * C;
      chunks[c2] = xalloc(C);
      memset(chunks[c2], 0, C);
      if (sizes[i] > start)
        memcpy(chunks[c2], data[i] + start,
               sizes[i] - start < C ? sizes[i] - start : C);
    }
    for (unsigned q = 0; q < g; q++)
      pieces[q] = xalloc(C);
    ref_encode(a, k, g, C, chunks, pieces);
    for (unsigned q = 0; q < k; q++)
      ck_assert(memcmp(pieces[q], chunks[q], C) == 0); /* systematic */
    for (unsigned r = 0; r < m; r++) {
      unsigned keeper = (j + k + r) % g;
      ck_assert_msg(memcmp(pieces[k + r], par[keeper] + r * C, C) == 0,
                    "%u+%u stripe %u row %u differs from the textbook code",
                    k, m, j, r);
    }
    for (unsigned q = 0; q < g; q++)
      free(pieces[q]);
    for (unsigned c2 = 0; c2 < k; c2++)
      free(chunks[c2]);
  }
  for (unsigned i = 0; i < g; i++) {
    free(data[i]);
    free(par[i]);
  }
  rs_coder_free(c);
}
END_TEST

START_TEST(test_ref_known_rows)
{
  /* 1+m: parity row r is data times 1/((1+r) XOR 0); row 0 is a copy. */
  uint8_t d[128], p[3][128], e[128];
  void *pp[3] = {p[0], p[1], p[2]};
  const void *dp[1] = {d};
  struct rs_coder *c;
  uint64_t s = 5;

  for (unsigned x = 0; x < sizeof(d); x++)
    d[x] = (uint8_t)rng_next(&s);
  ck_assert_int_eq(rs_coder_new(&c, 1, 3, NULL), 0);
  ck_assert_int_eq(rs_stripe_encode(c, sizeof(d), dp, pp), 0);
  ck_assert(memcmp(p[0], d, sizeof(d)) == 0);
  for (unsigned r = 0; r < 3; r++) {
    for (unsigned x = 0; x < sizeof(d); x++)
      e[x] = gf_mul_slow(d[x], inv_tab[1 + r]);
    ck_assert(memcmp(p[r], e, sizeof(d)) == 0);
  }
  rs_coder_free(c);
}
END_TEST

/* ---- decode ------------------------------------------------------------------------ */

START_TEST(test_ref_stripe_decode)
{
  unsigned k, m, g;
  size_t len = 64 * (1 + (size_t)_i % 5);
  uint8_t a[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  uint8_t *data[RS_MAX_MEMBERS], *pieces[RS_MAX_MEMBERS], *work[RS_MAX_MEMBERS];
  struct rs_coder *c;
  uint64_t s = 2000 + (uint64_t)_i;

  code_of(_i, &k, &m);
  g = k + m;
  cauchy_matrix(a, k, g);
  for (unsigned q = 0; q < g; q++) {
    pieces[q] = xalloc(len);
    work[q] = xalloc(len);
  }
  for (unsigned c2 = 0; c2 < k; c2++) {
    data[c2] = xalloc(len);
    for (size_t x = 0; x < len; x++)
      data[c2][x] = (uint8_t)rng_next(&s);
  }
  ref_encode(a, k, g, len, data, pieces);
  ck_assert_int_eq(rs_coder_new(&c, k, m, NULL), 0);

  for (unsigned trial = 0; trial < 30; trial++) {
    uint32_t avail = (g == 32 ? 0xffffffffu : (1u << g) - 1), want;
    uint8_t sub[RS_MAX_MEMBERS * RS_MAX_MEMBERS], inv[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
    unsigned rows[RS_MAX_MEMBERS], n = 0;

    /* Erase up to m random positions (the first trial: the first m). */
    for (unsigned e = 0; e < m; e++)
      avail &= ~(1u << (trial == 0 ? e : rng_next(&s) % g));
    want = ~avail & ((1u << g) - 1);
    for (unsigned q = 0; q < g; q++) {
      if (avail & (1u << q))
        memcpy(work[q], pieces[q], len);
      else
        memset(work[q], 0xCC, len);
    }
    ck_assert_int_eq(rs_stripe_decode(c, len, (void *const *)work, avail, want), 0);
    for (unsigned q = 0; q < g; q++)
      ck_assert_msg(memcmp(work[q], pieces[q], len) == 0,
                    "%u+%u avail 0x%x: piece %u differs from the textbook code",
                    k, m, avail, q);

    /* And the textbook decode from the k highest available positions (the
     * coder uses the lowest) gives the data back. */
    for (unsigned q = g; q-- > 0 && n < k;)
      if (avail & (1u << q))
        rows[n++] = q;
    for (unsigned t = 0; t < k; t++)
      memcpy(&sub[t * k], &a[rows[t] * k], k);
    ck_assert(gauss_jordan(sub, inv, k));
    for (unsigned d = 0; d < k; d++)
      for (size_t x = 0; x < len; x++) {
        uint8_t v = 0;
        for (unsigned t = 0; t < k; t++)
          v ^= mul_tab[inv[d * k + t]][pieces[rows[t]][x]];
        ck_assert_uint_eq(v, data[d][x]);
      }
  }
  rs_coder_free(c);
  for (unsigned q = 0; q < g; q++) {
    free(pieces[q]);
    free(work[q]);
  }
  for (unsigned c2 = 0; c2 < k; c2++)
    free(data[c2]);
}
END_TEST

START_TEST(test_ref_crc_convention)
{
  /* The checksum the decoder verifies is CRC32C without the final
   * inversion: the standard check value of "123456789" is 0xE3069283. A
   * table built that way verifies; the standard (inverted) value does not. */
  static const uint8_t msg[9] = "123456789";
  uint32_t crc = CRC32C_SEED;
  size_t sizes[2] = {9, 9};
  uint8_t d0[9], d1[9], p0[64], p1[64];
  struct rs_member mb[2];
  struct rs_layout l;
  struct rs_coder *c;
  uint32_t good, bad;

  for (unsigned i = 0; i < 9; i++) {
    crc ^= msg[i];
    for (int b = 0; b < 8; b++)
      crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  ck_assert_uint_eq(~crc, 0xE3069283u);
  good = crc;
  bad = ~crc;
  memcpy(d0, msg, 9);
  memcpy(d1, msg, 9);
  ck_assert_int_eq(rs_layout_init(&l, 1, 1, sizes, 2), 0);
  ck_assert_int_eq(rs_coder_new(&c, 1, 1, NULL), 0);
  mb[0] = (struct rs_member){.data = d0, .bytes = 9, .parity = p0, .crcs = &good};
  mb[1] = (struct rs_member){.data = d1, .bytes = 9, .parity = p1, .crcs = &good};
  ck_assert_int_eq(rs_group_encode(c, &l, mb), 0);
  memset(d0, 0, 9);
  ck_assert_int_eq(rs_group_decode(c, &l, mb, 1u << 0, 0, NULL), 0);
  ck_assert(memcmp(d0, msg, 9) == 0);
  mb[0].crcs = &bad;
  ck_assert_int_eq(rs_group_decode(c, &l, mb, 1u << 0, 0, NULL), PT_ECHECKSUM);
  rs_coder_free(c);
}
END_TEST

static Suite *ref_suite(void)
{
  Suite *s = suite_create("ec_ref");
  TCase *tc = tcase_create("textbook");

  gf_setup();
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_ref_field);
  tcase_add_test(tc, test_ref_known_rows);
  tcase_add_loop_test(tc, test_ref_group_encode, 0, 36);
  tcase_add_loop_test(tc, test_ref_stripe_decode, 0, 36);
  tcase_add_test(tc, test_ref_crc_convention);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(ref_suite());
}
