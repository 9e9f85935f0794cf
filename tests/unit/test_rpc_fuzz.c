/*
 * test_rpc_fuzz.c — the fuzz target of tests/fuzz/fuzz_frame.c, run by the
 * suite without libFuzzer (which `make fuzz` needs clang for): every seed
 * in tests/fuzz/seeds, then deterministic mutations of each (bit flips,
 * edge bytes, cuts, the start of another seed spliced in). A finding aborts
 * the target, which fails the test; the ASan build watches memory as the
 * fuzzer would.
 *
 * The seeds must reach every outcome of the bulk receive path — a payload
 * delivered with its CRC32C matching, one with a mismatch, one the receiver
 * discarded, one cut off by the peer's EOF — so that a seed set or a
 * harness that stopped reaching it fails here rather than fuzzing nothing.
 */
#include "../fuzz/fuzz_frame.c"

#include <dirent.h>

#include "unit.h"

#define SEEDS_DIR "tests/fuzz/seeds"
#define SEEDS_MAX 64
#define INPUT_MAX (1u << 20)
#define MUTATIONS 150

static uint8_t *seed[SEEDS_MAX];
static size_t seed_len[SEEDS_MAX];
static unsigned nseeds;

static void seeds_load(void)
{
  DIR *d = opendir(SEEDS_DIR);
  struct dirent *e;

  ck_assert_msg(d != NULL, "%s: %s (run from the repository root)", SEEDS_DIR,
                strerror(errno));
  while ((e = readdir(d)) != NULL && nseeds < SEEDS_MAX) {
    char path[512];
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "%s/%s", SEEDS_DIR, e->d_name);
    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    seed[nseeds] = malloc(INPUT_MAX);
    ck_assert_ptr_nonnull(seed[nseeds]);
    seed_len[nseeds] = fread(seed[nseeds], 1, INPUT_MAX, f);
    fclose(f);
    nseeds++;
  }
  closedir(d);
  ck_assert_uint_ge(nseeds, 10);
}

static uint64_t next(uint64_t *x)
{
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

START_TEST(seeds_and_mutations)
{
  uint8_t *m = malloc(2 * INPUT_MAX);
  uint64_t x = 0x2545f4914f6cdd1dull, runs = 0;

  ck_assert_ptr_nonnull(m);
  seeds_load();
  for (unsigned f = 0; f < nseeds; f++) {
    LLVMFuzzerTestOneInput(seed[f], seed_len[f]);
    runs++;
    for (unsigned k = 0; k < MUTATIONS; k++) {
      size_t n = seed_len[f];
      memcpy(m, seed[f], n);
      switch (next(&x) % 4) {
      case 0: /* a few bits flipped */
        for (unsigned b = 0; n > 0 && b < 1 + next(&x) % 4; b++)
          m[next(&x) % n] ^= (uint8_t)(1u << (next(&x) % 8));
        break;
      case 1: { /* a byte set to an edge value */
        static const uint8_t v[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
        if (n > 0)
          m[next(&x) % n] = v[next(&x) % sizeof(v)];
        break;
      }
      case 2: /* cut short */
        n = n > 0 ? (size_t)(next(&x) % n) : 0;
        break;
      default: { /* cut, and another seed's start spliced in */
        unsigned g = (unsigned)(next(&x) % nseeds);
        size_t cut = n > 0 ? (size_t)(next(&x) % (n + 1)) : 0;
        memcpy(m + cut, seed[g], seed_len[g]);
        n = cut + seed_len[g];
        break;
      }
      }
      LLVMFuzzerTestOneInput(m, n);
      runs++;
    }
  }
  printf("fuzz target: %" PRIu64 " inputs, %" PRIu64
         " through a conn; bulk payloads: %" PRIu64 " delivered, %" PRIu64
         " CRC mismatches, %" PRIu64 " discarded, %" PRIu64 " cut off\n",
         runs, fuzz_conn_inputs, fuzz_bulk_ok, fuzz_bulk_bad_crc,
         fuzz_bulk_discarded, fuzz_bulk_cut);
  ck_assert_uint_eq(fuzz_conn_inputs, runs);
  ck_assert_uint_gt(fuzz_bulk_ok, 0);
  ck_assert_uint_gt(fuzz_bulk_bad_crc, 0);
  ck_assert_uint_gt(fuzz_bulk_discarded, 0);
  ck_assert_uint_gt(fuzz_bulk_cut, 0);
  for (unsigned f = 0; f < nseeds; f++)
    free(seed[f]);
  free(m);
}
END_TEST

static Suite *rpc_fuzz_suite(void)
{
  Suite *s = suite_create("rpc_fuzz");
  TCase *tc = tcase_create("replay");

  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, seeds_and_mutations);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(rpc_fuzz_suite());
}
