/*
 * test_snap_slot.c — the slot state machine of a snapshot object (acquire,
 * seal, abort, pin, unpin, commit, set_restore, recover),
 * generations, verification of a slot's data against its checksum table,
 * a random walk checked against a model of the rules in snap_store.h, and
 * one writer process publishing slots to an observer in another process.
 *
 * Data and checksum tables are written the way libpt writes them: region i
 * into slot_data + region.offset, its per-1-MiB-block CRC32C (ISA-L
 * crc32_iscsi, seed 0xFFFFFFFF) into slot_crcs + region.first_block.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

#define MIB ((uint64_t)1 << 20)

static pid_t runner_pid;

static void shm_name(char *out, size_t len, const char *tag)
{
  snprintf(out, len, "/pt-tsnap-slot.%d.%s", (int)runner_pid, tag);
}

/* The oracle: ISA-L called directly, not through common/crc32c.c. */
static uint32_t oracle_crc(const void *p, size_t n)
{
  return crc32_iscsi((unsigned char *)p, (int)n, 0xFFFFFFFFu);
}

static struct snap_region_desc regs3[3];

/* nslots slots of three regions: one block plus 5 bytes, three pages plus 7
 * bytes, two whole blocks. */
static struct snap_store *make_store(const char *tag, uint32_t nslots,
                                     char *name, size_t len)
{
  memset(regs3, 0, sizeof(regs3));
  strcpy(regs3[0].name, "params");
  regs3[0].bytes = MIB + 5;
  strcpy(regs3[1].name, "rng");
  regs3[1].bytes = 3 * 4096 + 7;
  strcpy(regs3[2].name, "moments");
  regs3[2].bytes = 2 * MIB;
  struct snap_params p = {.job = "slots", .rank = 0, .world = 1,
                          .nslots = nslots, .regions = regs3, .nregions = 3};
  shm_name(name, len, tag);
  struct snap_store *s = NULL;
  char err[256] = "";
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  return s;
}

static uint32_t state_of(const struct snap_store *s, uint32_t slot)
{
  struct snap_slot_info i;
  snap_slot_get(s, slot, &i);
  return i.state;
}

static uint64_t step_of(const struct snap_store *s, uint32_t slot)
{
  struct snap_slot_info i;
  snap_slot_get(s, slot, &i);
  return i.step;
}

static uint8_t pattern(uint64_t step, uint32_t region, uint64_t at)
{
  return (uint8_t)(step * 131 + region * 17 + at * 7 + (at >> 12));
}

/* The blob of a step: 100 + step % 50 bytes. */
static uint32_t blob_bytes_of(uint64_t step) { return 100 + (uint32_t)(step % 50); }

/* What libpt does for one snapshot: copy every region and the blob, write
 * the table and its trailer. */
static void fill_slot(struct snap_store *s, uint32_t slot, uint64_t step)
{
  uint8_t *data = snap_slot_data(s, slot);
  uint32_t *crcs = snap_slot_crcs(s, slot);
  uint8_t *blob = snap_slot_blob(s, slot);
  uint32_t nb = blob_bytes_of(step);
  for (uint32_t k = 0; k < nb; k++)
    blob[k] = (uint8_t)(step * 3 + k);
  crcs[snap_store_nblocks(s)] = nb;
  crcs[snap_store_nblocks(s) + 1] = oracle_crc(blob, nb);
  for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
    const struct snap_region *reg = snap_store_region(s, r);
    uint8_t *dst = data + reg->offset;
    for (uint64_t k = 0; k < reg->bytes; k++)
      dst[k] = pattern(step, r, k);
    for (uint32_t b = 0; b < reg->nblocks; b++) {
      uint64_t off = (uint64_t)b * MIB;
      uint64_t len = reg->bytes - off < MIB ? reg->bytes - off : MIB;
      crcs[reg->first_block + b] = oracle_crc(dst + off, len);
    }
  }
}

static bool slot_has_step_data(const struct snap_store *s, uint32_t slot,
                               uint64_t step)
{
  const uint8_t *data = snap_slot_data(s, slot);
  for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
    const struct snap_region *reg = snap_store_region(s, r);
    for (uint64_t k = 0; k < reg->bytes; k++)
      if (data[reg->offset + k] != pattern(step, r, k))
        return false;
  }
  return true;
}

/* acquire + fill + seal; returns the slot. */
static uint32_t take(struct snap_store *s, uint64_t step, bool fill)
{
  uint32_t slot;
  uint64_t gen;
  ck_assert_int_eq(snap_slot_acquire(s, step, &slot, &gen), 0);
  if (fill)
    fill_slot(s, slot, step);
  ck_assert_int_eq(snap_slot_seal(s, slot, gen, step), 0);
  return slot;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_fresh_store)
{
  char name[64];
  struct snap_store *s = make_store("fresh", 3, name, sizeof(name));
  uint32_t slot = 99;
  uint64_t step = 99;
  ck_assert_int_eq(snap_slot_newest_committed(s, &slot, &step), PT_ENOSNAP);
  ck_assert_uint_eq(slot, 99);
  ck_assert_int_eq(snap_slot_find_step(s, 0, &slot), -ENOENT);
  ck_assert_int_eq(snap_slot_recover(s), 0);
  for (uint32_t i = 0; i < 3; i++)
    ck_assert_int_eq(snap_slot_verify(s, i, NULL), PT_ESTATE);
  ck_assert_int_eq(snap_slot_verify(s, 3, NULL), -EINVAL);
  struct snap_slot_info info;
  memset(&info, 0xff, sizeof(info));
  snap_slot_get(s, 3, &info);
  ck_assert_uint_eq(info.state, 0);
  ck_assert_uint_eq(info.generation, 0);
  ck_assert_int_eq(snap_slot_commit(s, 0), -ENOENT);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 0), -ENOENT);
  ck_assert_int_eq(snap_slot_set_restore(s, false, 0), 0);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

START_TEST(test_acquire_seal_commit)
{
  char name[64];
  struct snap_store *s = make_store("basic", 3, name, sizeof(name));
  uint32_t a, b;
  uint64_t ga, gb;
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  uint64_t t0 = (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;

  ck_assert_int_eq(snap_slot_acquire(s, 10, &a, &ga), 0);
  ck_assert_uint_eq(a, 0);
  ck_assert_uint_eq(ga, 1);
  struct snap_slot_info info;
  snap_slot_get(s, a, &info);
  ck_assert_uint_eq(info.state, SNAP_WRITING);
  ck_assert_uint_eq(info.step, 10);
  ck_assert_uint_eq(info.generation, 1);
  ck_assert_uint_ge(info.t_writing_ns, t0);
  ck_assert_uint_eq(info.t_sealed_ns, 0);
  ck_assert_uint_eq(info.t_committed_ns, 0);
  ck_assert_int_eq(snap_slot_verify(s, a, NULL), PT_ESTATE);

  ck_assert_int_eq(snap_slot_acquire(s, 11, &b, &gb), 0);
  ck_assert_uint_eq(b, 1);
  ck_assert_uint_eq(gb, 2);

  /* Seal refusals. */
  ck_assert_int_eq(snap_slot_seal(s, a, ga + 5, 10), PT_ESTALE);
  ck_assert_int_eq(snap_slot_seal(s, a, ga, 11), -EINVAL);
  ck_assert_int_eq(snap_slot_seal(s, 3, ga, 10), -EINVAL);
  ck_assert_int_eq(snap_slot_seal(s, 2, 0, 0), PT_ESTALE); /* FREE */
  ck_assert_uint_eq(state_of(s, a), SNAP_WRITING);

  fill_slot(s, a, 10);
  ck_assert_int_eq(snap_slot_seal(s, a, ga, 10), 0);
  snap_slot_get(s, a, &info);
  ck_assert_uint_eq(info.state, SNAP_SEALED);
  ck_assert_uint_ge(info.t_sealed_ns, info.t_writing_ns);
  ck_assert_int_eq(snap_slot_seal(s, a, ga, 10), PT_ESTALE);
  ck_assert_int_eq(snap_slot_abort(s, a, ga), PT_ESTALE);
  ck_assert_int_eq(snap_slot_verify(s, a, NULL), 0);
  /* A sealed step is found but not yet committed. */
  uint32_t f;
  ck_assert_int_eq(snap_slot_find_step(s, 10, &f), 0);
  ck_assert_uint_eq(f, a);
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), PT_ENOSNAP);

  ck_assert_int_eq(snap_slot_commit(s, 10), 0);
  snap_slot_get(s, a, &info);
  ck_assert_uint_eq(info.state, SNAP_COMMITTED);
  ck_assert_uint_ge(info.t_committed_ns, info.t_sealed_ns);
  uint64_t tc = info.t_committed_ns;
  /* Committing again changes nothing. */
  ck_assert_int_eq(snap_slot_commit(s, 10), 0);
  snap_slot_get(s, a, &info);
  ck_assert_uint_eq(info.t_committed_ns, tc);
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, a);
  ck_assert_uint_eq(st, 10);
  ck_assert_int_eq(snap_slot_verify(s, a, NULL), 0);

  /* A WRITING slot cannot be committed or found. */
  ck_assert_int_eq(snap_slot_commit(s, 11), -ENOENT);
  ck_assert_int_eq(snap_slot_find_step(s, 11, &f), -ENOENT);
  ck_assert_int_eq(snap_slot_abort(s, b, gb + 1), PT_ESTALE);
  ck_assert_int_eq(snap_slot_abort(s, 7, gb), -EINVAL);
  ck_assert_int_eq(snap_slot_abort(s, b, gb), 0);
  ck_assert_uint_eq(state_of(s, b), SNAP_FREE);
  ck_assert_int_eq(snap_slot_acquire(s, 12, NULL, &gb), -EINVAL);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

START_TEST(test_skipped_and_newest_kept)
{
  char name[64];
  struct snap_store *s = make_store("skip", 2, name, sizeof(name));
  uint32_t c = take(s, 1, false), w, x;
  uint64_t gw, gx;
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 2, &w, &gw), 0);
  ck_assert_uint_ne(w, c);
  /* One slot is the newest COMMITTED, the other WRITING: nothing to give. */
  x = 77;
  gx = 77;
  ck_assert_int_eq(snap_slot_acquire(s, 3, &x, &gx), PT_SKIPPED);
  ck_assert_uint_eq(x, 77);
  ck_assert_uint_eq(gx, 77);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, w), SNAP_WRITING);

  /* Sealed but not committed: the SEALED slot is the one handed out, the
   * newest COMMITTED one never. */
  ck_assert_int_eq(snap_slot_seal(s, w, gw, 2), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 3, &x, &gx), 0);
  ck_assert_uint_eq(x, w);
  ck_assert_uint_gt(gx, gw);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED);
  ck_assert_int_eq(snap_slot_seal(s, x, gx, 3), 0);
  ck_assert_int_eq(snap_slot_commit(s, 3), 0);
  /* Now slot c holds an older COMMITTED step and is the one to reuse. */
  ck_assert_int_eq(snap_slot_acquire(s, 4, &x, &gx), 0);
  ck_assert_uint_eq(x, c);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* A slot whose step is being protected (acquire's avoid mask) is not
 * handed out: the next oldest is, or none (PT_SKIPPED), and without the
 * mask it is again. */
START_TEST(test_acquire_avoiding)
{
  char name[64];
  struct snap_store *s = make_store("avoid", 3, name, sizeof(name));
  uint32_t c = take(s, 1, false), a = take(s, 2, false), b = take(s, 3, false);
  uint32_t x = 77;
  uint64_t gx = 77;
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  /* a (step 2) and b (step 3) sealed; a is the oldest, but avoided */
  ck_assert_int_eq(snap_slot_acquire_avoiding(s, 4, 1u << a, &x, &gx), 0);
  ck_assert_uint_eq(x, b);
  ck_assert_int_eq(snap_slot_seal(s, x, gx, 4), 0);
  /* both avoided, c the restore point: nothing to give */
  x = 77;
  ck_assert_int_eq(snap_slot_acquire_avoiding(s, 5, (1u << a) | (1u << b), &x, &gx),
                   PT_SKIPPED);
  ck_assert_uint_eq(x, 77);
  ck_assert_uint_eq(state_of(s, a), SNAP_SEALED);
  ck_assert_uint_eq(state_of(s, b), SNAP_SEALED);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED);
  /* without the mask, the oldest sealed one is taken */
  ck_assert_int_eq(snap_slot_acquire_avoiding(s, 5, 0, &x, &gx), 0);
  ck_assert_uint_eq(x, a);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* Many rounds with 2..4 slots: the newest committed slot is never handed
 * out, the oldest is, generations only grow, and older committed steps stay
 * readable as fallbacks. */
START_TEST(test_rotation)
{
  for (uint32_t n = 2; n <= 4; n++) {
    char name[64], tag[16];
    snprintf(tag, sizeof(tag), "rot%u", n);
    struct snap_store *s = make_store(tag, n, name, sizeof(name));
    uint64_t last_gen = 0;
    for (uint64_t step = 1; step <= 12; step++) {
      uint32_t newest = UINT32_MAX, slot;
      uint64_t nstep = 0, gen;
      bool have = snap_slot_newest_committed(s, &newest, &nstep) == 0;
      /* The expected pick: a FREE slot, else the one with the lowest step
       * that is not the newest committed. */
      uint32_t want = UINT32_MAX;
      for (uint32_t i = 0; i < n && want == UINT32_MAX; i++)
        if (state_of(s, i) == SNAP_FREE)
          want = i;
      if (want == UINT32_MAX)
        for (uint32_t i = 0; i < n; i++)
          if (i != newest && (want == UINT32_MAX || step_of(s, i) < step_of(s, want)))
            want = i;
      ck_assert_int_eq(snap_slot_acquire(s, step, &slot, &gen), 0);
      ck_assert_uint_eq(slot, want);
      if (have)
        ck_assert_uint_ne(slot, newest);
      ck_assert_uint_gt(gen, last_gen);
      last_gen = gen;
      fill_slot(s, slot, step);
      ck_assert_int_eq(snap_slot_seal(s, slot, gen, step), 0);
      ck_assert_int_eq(snap_slot_commit(s, step), 0);
      ck_assert_int_eq(snap_slot_newest_committed(s, &newest, &nstep), 0);
      ck_assert_uint_eq(newest, slot);
      ck_assert_uint_eq(nstep, step);
      /* Every step still held is intact and where find_step says. */
      uint32_t committed = 0;
      for (uint32_t i = 0; i < n; i++) {
        if (state_of(s, i) != SNAP_COMMITTED)
          continue;
        committed++;
        uint32_t f;
        ck_assert_int_eq(snap_slot_find_step(s, step_of(s, i), &f), 0);
        ck_assert_uint_eq(f, i);
        ck_assert_int_eq(snap_slot_verify(s, i, NULL), 0);
        ck_assert(slot_has_step_data(s, i, step_of(s, i)));
      }
      ck_assert_uint_eq(committed, step < n ? step : n);
    }
    snap_store_close(s);
    snap_store_unlink(name);
  }
}
END_TEST

START_TEST(test_stale_generation)
{
  char name[64];
  struct snap_store *s = make_store("stale", 2, name, sizeof(name));
  uint32_t a, b;
  uint64_t ga, gb;
  ck_assert_int_eq(snap_slot_acquire(s, 5, &a, &ga), 0);
  ck_assert_int_eq(snap_slot_abort(s, a, ga), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 6, &b, &gb), 0);
  ck_assert_uint_eq(b, a); /* the same slot, reassigned */
  ck_assert_uint_gt(gb, ga);
  ck_assert_int_eq(snap_slot_seal(s, a, ga, 5), PT_ESTALE);
  ck_assert_int_eq(snap_slot_abort(s, a, ga), PT_ESTALE);
  ck_assert_uint_eq(state_of(s, b), SNAP_WRITING);
  ck_assert_int_eq(snap_slot_seal(s, b, gb, 6), 0);

  /* Generations survive freeing, reopening and a restart from scratch. */
  ck_assert_int_eq(snap_slot_set_restore(s, false, 0), 0);
  snap_store_close(s);
  char err[256];
  ck_assert_int_eq(snap_store_open(&s, name, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 1, &a, &ga), 0);
  ck_assert_uint_gt(ga, gb);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

START_TEST(test_recover)
{
  char name[64], err[256];
  struct snap_store *s = make_store("recover", 4, name, sizeof(name));
  uint32_t a, b;
  uint64_t ga, gb;
  uint32_t c = take(s, 1, true);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t d = take(s, 2, true);
  ck_assert_int_eq(snap_slot_acquire(s, 3, &a, &ga), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 4, &b, &gb), 0);
  /* The SMP dies here: the mapping goes away without any cleanup. */
  snap_store_close(s);

  ck_assert_int_eq(snap_store_open(&s, name, err, sizeof(err)), 0);
  ck_assert_uint_eq(state_of(s, a), SNAP_WRITING);
  ck_assert_int_eq(snap_slot_recover(s), 2);
  ck_assert_uint_eq(state_of(s, a), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, b), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, d), SNAP_SEALED);
  ck_assert_int_eq(snap_slot_verify(s, c, NULL), 0);
  ck_assert_int_eq(snap_slot_verify(s, d, NULL), 0);
  ck_assert_int_eq(snap_slot_recover(s), 0);
  /* The writer of the old slot comes back too late. */
  ck_assert_int_eq(snap_slot_seal(s, a, ga, 3), PT_ESTALE);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

START_TEST(test_commit_semantics)
{
  char name[64];
  struct snap_store *s = make_store("commit", 4, name, sizeof(name));
  uint32_t s1 = take(s, 1, false);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t s2 = take(s, 2, false);
  uint32_t s3 = take(s, 3, false);
  uint32_t s4 = take(s, 4, false);
  /* Commit 3: older SEALED (2) freed, newer SEALED (4) kept, older
   * COMMITTED (1) kept as a fallback. */
  ck_assert_int_eq(snap_slot_commit(s, 3), 0);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s3), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s4), SNAP_SEALED);
  ck_assert_int_eq(snap_slot_commit(s, 2), -ENOENT);
  ck_assert_int_eq(snap_slot_commit(s, 3), 0);
  uint32_t f;
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, s3);
  ck_assert_uint_eq(st, 3);
  ck_assert_int_eq(snap_slot_find_step(s, 4, &f), 0);
  ck_assert_uint_eq(f, s4);
  ck_assert_int_eq(snap_slot_find_step(s, 1, &f), 0);
  ck_assert_uint_eq(f, s1);
  ck_assert_int_eq(snap_slot_commit(s, 4), 0);
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, s4);
  ck_assert_uint_eq(state_of(s, s3), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);

  /* A PINNED slot is never handed out and can be committed. */
  uint32_t s5 = take(s, 5, false);
  ck_assert_int_eq(snap_slot_pin(s, 5), 0);
  ck_assert_uint_eq(state_of(s, s5), SNAP_PINNED);
  uint32_t x;
  uint64_t gx;
  ck_assert_int_eq(snap_slot_acquire(s, 6, &x, &gx), 0);
  ck_assert_uint_ne(x, s5);
  ck_assert_uint_ne(x, s4);
  ck_assert_int_eq(snap_slot_abort(s, x, gx), 0);
  ck_assert_int_eq(snap_slot_commit(s, 5), 0);
  ck_assert_uint_eq(state_of(s, s5), SNAP_COMMITTED);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* pin / unpin on their own: which slot they pick, repeats, and what
 * they refuse. */
START_TEST(test_pin_unpin)
{
  char name[64];
  struct snap_store *s = make_store("pin", 3, name, sizeof(name));
  uint32_t w;
  uint64_t gw;

  ck_assert_int_eq(snap_slot_pin(s, 1), -ENOENT);   /* nothing sealed */
  ck_assert_int_eq(snap_slot_unpin(s, 1), -ENOENT);
  ck_assert_int_eq(snap_slot_acquire(s, 1, &w, &gw), 0);
  ck_assert_int_eq(snap_slot_pin(s, 1), -ENOENT);   /* WRITING */
  fill_slot(s, w, 1);
  ck_assert_int_eq(snap_slot_seal(s, w, gw, 1), 0);
  ck_assert_int_eq(snap_slot_unpin(s, 1), -ENOENT); /* only SEALED */
  ck_assert_int_eq(snap_slot_pin(s, 2), -ENOENT);   /* another step */
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_PINNED);
  struct snap_slot_info before, after;
  snap_slot_get(s, w, &before);
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);         /* a repeat */
  snap_slot_get(s, w, &after);
  ck_assert_mem_eq(&before, &after, sizeof(before));
  /* Pinned bytes are still a step that can be found, verified, restored. */
  uint32_t f;
  ck_assert_int_eq(snap_slot_find_step(s, 1, &f), 0);
  ck_assert_uint_eq(f, w);
  ck_assert_int_eq(snap_slot_verify(s, w, NULL), 0);
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), PT_ENOSNAP);

  /* Abandoned: SEALED again, then an ordinary candidate for reuse. */
  ck_assert_int_eq(snap_slot_unpin(s, 1), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_SEALED);
  ck_assert_uint_eq(step_of(s, w), 1);
  ck_assert_int_eq(snap_slot_unpin(s, 1), -ENOENT);
  ck_assert_int_eq(snap_slot_verify(s, w, NULL), 0);

  /* A committed step is no longer pinned or unpinned. */
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_COMMITTED);
  ck_assert_int_eq(snap_slot_pin(s, 1), -ENOENT);
  ck_assert_int_eq(snap_slot_unpin(s, 1), -ENOENT);
  ck_assert_uint_eq(state_of(s, w), SNAP_COMMITTED);

  /* Two slots holding one step (a step redone): the newer is pinned. */
  uint32_t a = take(s, 2, false), b = take(s, 2, false);
  ck_assert_uint_ne(a, b);
  ck_assert_int_eq(snap_slot_pin(s, 2), 0);
  ck_assert_uint_eq(state_of(s, b), SNAP_PINNED);
  ck_assert_uint_eq(state_of(s, a), SNAP_SEALED);
  ck_assert_int_eq(snap_slot_unpin(s, 2), 0);
  ck_assert_uint_eq(state_of(s, b), SNAP_SEALED);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* The case two-phase commits exist for, with two slots: a rank that pinned
 * step 2 cannot lose it to step 3 (nor the committed step 1): the snapshot
 * of step 3 is skipped until the commit of 2 ends either way. */
START_TEST(test_pinned_never_reused)
{
  char name[64];
  struct snap_store *s = make_store("pin2", 2, name, sizeof(name));
  uint32_t c = take(s, 1, true), x;
  uint64_t gx;
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t p = take(s, 2, true);
  ck_assert_int_eq(snap_slot_pin(s, 2), 0);
  x = 77;
  ck_assert_int_eq(snap_slot_acquire(s, 3, &x, &gx), PT_SKIPPED);
  ck_assert_uint_eq(x, 77);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, p), SNAP_PINNED);
  ck_assert(slot_has_step_data(s, p, 2));
  ck_assert(slot_has_step_data(s, c, 1));

  /* Abandoned: step 2 is an ordinary sealed step again and is reused. */
  ck_assert_int_eq(snap_slot_unpin(s, 2), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 3, &x, &gx), 0);
  ck_assert_uint_eq(x, p);
  fill_slot(s, x, 3);
  ck_assert_int_eq(snap_slot_seal(s, x, gx, 3), 0);

  /* Committed: the previous committed step's slot is the one reused. */
  ck_assert_int_eq(snap_slot_pin(s, 3), 0);
  ck_assert_int_eq(snap_slot_acquire(s, 4, &x, &gx), PT_SKIPPED);
  ck_assert_int_eq(snap_slot_commit(s, 3), 0);
  ck_assert_uint_eq(state_of(s, p), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, c), SNAP_COMMITTED); /* fallback */
  ck_assert_int_eq(snap_slot_acquire(s, 4, &x, &gx), 0);
  ck_assert_uint_eq(x, c);
  ck_assert(slot_has_step_data(s, p, 3));

  /* A pin survives the SMP: it lives in the object, and recovery frees
   * only WRITING slots. */
  ck_assert_int_eq(snap_slot_abort(s, x, gx), 0);
  uint32_t q = take(s, 4, false);
  ck_assert_int_eq(snap_slot_pin(s, 4), 0);
  snap_store_close(s);
  char err[256];
  ck_assert_int_eq(snap_store_open(&s, name, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_recover(s), 0);
  ck_assert_uint_eq(state_of(s, q), SNAP_PINNED);
  ck_assert_int_eq(snap_slot_acquire(s, 5, &x, &gx), PT_SKIPPED);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* What a commit does to the other slots: older SEALED freed, older
 * PINNED back to SEALED with its bytes, duplicates freed, older
 * COMMITTED kept, newer slots untouched. */
START_TEST(test_commit_releases_pins)
{
  char name[64];
  struct snap_store *s = make_store("commitpin", 6, name, sizeof(name));
  uint32_t s1 = take(s, 1, true);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t s2 = take(s, 2, true);
  ck_assert_int_eq(snap_slot_pin(s, 2), 0);   /* a pin left behind */
  uint32_t s3 = take(s, 3, true);                 /* older, never pinned */
  uint32_t s4 = take(s, 4, true);
  ck_assert_int_eq(snap_slot_pin(s, 4), 0);
  uint32_t s6 = take(s, 6, true);
  ck_assert_int_eq(snap_slot_pin(s, 6), 0);   /* newer pin */
  uint32_t w;
  uint64_t gw;
  ck_assert_int_eq(snap_slot_acquire(s, 7, &w, &gw), 0);

  ck_assert_int_eq(snap_slot_commit(s, 4), 0);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_SEALED);
  ck_assert(slot_has_step_data(s, s2, 2));
  ck_assert_uint_eq(state_of(s, s3), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s4), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s6), SNAP_PINNED);
  ck_assert_uint_eq(state_of(s, w), SNAP_WRITING);
  ck_assert_int_eq(snap_slot_verify(s, s2, NULL), 0);

  /* A SEALED step commits directly (an SMP alone, --autocommit), and a
   * duplicate of the committed step goes. */
  ck_assert_int_eq(snap_slot_seal(s, w, gw, 7), 0);
  ck_assert_int_eq(snap_slot_commit(s, 7), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s6), SNAP_SEALED);  /* an older pin now */
  ck_assert_uint_eq(state_of(s, s2), SNAP_FREE);    /* older SEALED */
  uint32_t d = take(s, 7, true);
  ck_assert_int_eq(snap_slot_pin(s, 7), 0);
  ck_assert_uint_eq(state_of(s, d), SNAP_PINNED);
  ck_assert_int_eq(snap_slot_commit(s, 7), 0);
  ck_assert_uint_eq(state_of(s, d), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, w), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s4), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* ---- a model of the rules written in snap_store.h, for the random walk ---- */

struct model_slot {
  uint32_t state;
  uint64_t step, gen;
};
struct model {
  struct model_slot v[8];
  uint32_t n;
  uint64_t max_gen;
  uint32_t skipped, pinned, unpinned, committed, pins_released;
};

static bool m_holds(uint32_t st)
{
  return st == SNAP_SEALED || st == SNAP_PINNED || st == SNAP_COMMITTED;
}

/* a older than b: lower step, then lower generation */
static bool m_older(const struct model *m, uint32_t a, uint32_t b)
{
  if (m->v[a].step != m->v[b].step)
    return m->v[a].step < m->v[b].step;
  return m->v[a].gen < m->v[b].gen;
}

/* The newest slot in a state accepted by want() holding step (any step when
 * any); UINT32_MAX when none. */
static uint32_t m_newest(const struct model *m, bool (*want)(uint32_t),
                         bool any, uint64_t step)
{
  uint32_t best = UINT32_MAX;
  for (uint32_t i = 0; i < m->n; i++) {
    if (!want(m->v[i].state) || (!any && m->v[i].step != step))
      continue;
    if (best == UINT32_MAX || m_older(m, best, i))
      best = i;
  }
  return best;
}

static bool m_is_committed(uint32_t st) { return st == SNAP_COMMITTED; }
static bool m_is_sealed(uint32_t st) { return st == SNAP_SEALED; }
static bool m_is_pinned(uint32_t st) { return st == SNAP_PINNED; }

static int m_acquire(struct model *m, uint64_t step, uint32_t *slot)
{
  uint32_t pick = UINT32_MAX;
  for (uint32_t i = 0; i < m->n && pick == UINT32_MAX; i++)
    if (m->v[i].state == SNAP_FREE)
      pick = i;
  if (pick == UINT32_MAX) {
    uint32_t keep = m_newest(m, m_is_committed, true, 0);
    for (uint32_t i = 0; i < m->n; i++) {
      uint32_t st = m->v[i].state;
      if (i == keep || (st != SNAP_SEALED && st != SNAP_COMMITTED))
        continue;
      if (pick == UINT32_MAX || m_older(m, i, pick))
        pick = i;
    }
  }
  if (pick == UINT32_MAX) {
    m->skipped++;
    return PT_SKIPPED;
  }
  m->v[pick] = (struct model_slot){SNAP_WRITING, step, ++m->max_gen};
  *slot = pick;
  return 0;
}

static int m_pin(struct model *m, uint64_t step)
{
  if (m_newest(m, m_is_pinned, false, step) != UINT32_MAX)
    return 0;
  uint32_t i = m_newest(m, m_is_sealed, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  m->v[i].state = SNAP_PINNED;
  m->pinned++;
  return 0;
}

static int m_unpin(struct model *m, uint64_t step)
{
  uint32_t i = m_newest(m, m_is_pinned, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  m->v[i].state = SNAP_SEALED;
  m->unpinned++;
  return 0;
}

static int m_commit(struct model *m, uint64_t step, bool restore)
{
  uint32_t keep = m_newest(m, m_holds, false, step);
  if (keep == UINT32_MAX)
    return -ENOENT;
  for (uint32_t i = 0; i < m->n; i++) {
    struct model_slot *v = &m->v[i];
    if (i == keep)
      continue;
    if (restore && (!m_holds(v->state) || v->step > step))
      v->state = SNAP_FREE;
    else if (!m_holds(v->state) || v->step > step)
      continue;
    else if (v->step == step || v->state == SNAP_SEALED)
      v->state = SNAP_FREE;
    else if (v->state == SNAP_PINNED) {
      v->state = restore ? SNAP_FREE : SNAP_SEALED;
      m->pins_released += !restore;
    }
  }
  m->v[keep].state = SNAP_COMMITTED;
  m->committed++;
  return 0;
}

static void m_check(const struct model *m, const struct snap_store *s,
                    int op, uint32_t round)
{
  for (uint32_t i = 0; i < m->n; i++) {
    struct snap_slot_info info;
    snap_slot_get(s, i, &info);
    ck_assert_msg(info.state == m->v[i].state,
                  "round %u op %d: slot %u is %s, the model says %s", round,
                  op, i, snap_state_name(info.state),
                  snap_state_name(m->v[i].state));
    if (info.state != SNAP_FREE) {
      ck_assert_uint_eq(info.step, m->v[i].step);
      ck_assert_uint_eq(info.generation, m->v[i].gen);
    }
  }
}

/* Thousands of random operations on 2..4 slots, each checked against the
 * model, with steps drawn from a small range so that repeats, duplicates and
 * stale requests happen. A PINNED slot's bytes must survive every
 * acquire. */
START_TEST(test_pin_random)
{
  uint32_t x = 20240611u;
  for (uint32_t n = 2; n <= 4; n++) {
    char name[64], tag[16];
    snprintf(tag, sizeof(tag), "rnd%u", n);
    struct snap_store *s = make_store(tag, n, name, sizeof(name));
    struct model m = {.n = n};
    uint32_t counts[8] = {0};
    for (uint32_t round = 0; round < 4000; round++) {
      x = x * 1664525u + 1013904223u;
      int op = (int)((x >> 24) % 8);
      uint64_t step = 1 + (x >> 8) % 6;
      uint32_t slot = (x >> 16) % n, ms = 0, got = 0;
      if (op >= 4 && (x & 2))
        step = m.v[slot].step; /* most requests name a step held */
      uint64_t gen = 0;
      int want, rc;
      switch (op) {
      case 0: /* acquire */
        want = m_acquire(&m, step, &ms);
        rc = snap_slot_acquire(s, step, &got, &gen);
        ck_assert_int_eq(rc, want);
        if (rc == 0) {
          ck_assert_uint_eq(got, ms);
          ck_assert_uint_eq(gen, m.max_gen);
        }
        break;
      case 1: /* seal whatever is being written in slot */
      case 2:
        if (m.v[slot].state == SNAP_WRITING) {
          ck_assert_int_eq(snap_slot_seal(s, slot, m.v[slot].gen,
                                          m.v[slot].step), 0);
          m.v[slot].state = SNAP_SEALED;
        } else {
          ck_assert_int_eq(snap_slot_seal(s, slot, m.v[slot].gen,
                                          m.v[slot].step), PT_ESTALE);
        }
        break;
      case 3: /* the writer fails */
        if (m.v[slot].state == SNAP_WRITING && (x & 1)) {
          ck_assert_int_eq(snap_slot_abort(s, slot, m.v[slot].gen), 0);
          m.v[slot].state = SNAP_FREE;
        }
        break;
      case 4:
        ck_assert_int_eq(snap_slot_pin(s, step), m_pin(&m, step));
        break;
      case 5:
        ck_assert_int_eq(snap_slot_unpin(s, step), m_unpin(&m, step));
        break;
      case 6:
        ck_assert_int_eq(snap_slot_commit(s, step), m_commit(&m, step, false));
        break;
      case 7: /* rarely: a restore point */
        if ((x & 15) != 0)
          break;
        if (x & 16) {
          ck_assert_int_eq(snap_slot_set_restore(s, true, step),
                           m_commit(&m, step, true));
        } else {
          ck_assert_int_eq(snap_slot_set_restore(s, false, 0), 0);
          for (uint32_t i = 0; i < n; i++)
            m.v[i].state = SNAP_FREE;
        }
        break;
      }
      counts[op]++;
      m_check(&m, s, op, round);
    }
    /* Every rule was exercised, not only called. */
    for (int op = 0; op < 8; op++)
      ck_assert_uint_gt(counts[op], 100);
    ck_assert_uint_gt(m.skipped, 10);
    ck_assert_uint_gt(m.pinned, 10);
    ck_assert_uint_gt(m.unpinned, 5);
    ck_assert_uint_gt(m.committed, 10);
    ck_assert_uint_gt(m.pins_released, 0);
    snap_store_close(s);
    snap_store_unlink(name);
  }
}
END_TEST

START_TEST(test_set_restore)
{
  char name[64];
  struct snap_store *s = make_store("restore", 5, name, sizeof(name));
  uint32_t s1 = take(s, 1, false);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t s2 = take(s, 2, false);
  ck_assert_int_eq(snap_slot_commit(s, 2), 0);
  uint32_t s3 = take(s, 3, false);
  uint32_t s4 = take(s, 4, false);
  uint32_t w;
  uint64_t gw;
  ck_assert_int_eq(snap_slot_acquire(s, 5, &w, &gw), 0);

  /* A step nobody holds changes nothing. */
  ck_assert_int_eq(snap_slot_set_restore(s, true, 9), -ENOENT);
  ck_assert_uint_eq(state_of(s, s3), SNAP_SEALED);
  ck_assert_uint_eq(state_of(s, w), SNAP_WRITING);

  /* Restore to the SEALED step 3: it becomes the committed step, 4 (newer)
   * and the writer go, 1 and 2 stay as older committed steps. */
  ck_assert_int_eq(snap_slot_set_restore(s, true, 3), 0);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s3), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s4), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, w), SNAP_FREE);
  ck_assert_int_eq(snap_slot_seal(s, w, gw, 5), PT_ESTALE);
  uint32_t f;
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, s3);
  ck_assert_uint_eq(st, 3);

  /* Back to COMMITTED step 1: 2 and 3 are newer and go. */
  ck_assert_int_eq(snap_slot_set_restore(s, true, 1), 0);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s3), SNAP_FREE);
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(st, 1);

  /* A newer SEALED step goes; an older one is superseded by the restore
   * point, as by a commit. */
  uint32_t s6 = take(s, 6, false);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 1), 0);
  ck_assert_uint_eq(state_of(s, s6), SNAP_FREE);
  uint32_t s2b = take(s, 2, false);
  uint32_t s3b = take(s, 3, false);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 3), 0);
  ck_assert_uint_eq(state_of(s, s2b), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s3b), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);

  /* Pins are cleared: an older PINNED slot goes like an older SEALED
   * one, a newer one like any newer step, and a PINNED restore point
   * becomes COMMITTED. */
  uint32_t p4 = take(s, 4, false);
  ck_assert_int_eq(snap_slot_pin(s, 4), 0);
  uint32_t p5 = take(s, 5, false);
  ck_assert_int_eq(snap_slot_pin(s, 5), 0);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 3), 0);
  ck_assert_uint_eq(state_of(s, p4), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, p5), SNAP_FREE);
  p4 = take(s, 4, false);
  ck_assert_int_eq(snap_slot_pin(s, 4), 0);
  p5 = take(s, 5, false);
  ck_assert_int_eq(snap_slot_pin(s, 5), 0);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 5), 0);
  ck_assert_uint_eq(state_of(s, p5), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, p4), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s3b), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);

  /* No restore point: everything goes. */
  ck_assert_int_eq(snap_slot_set_restore(s, false, 0), 0);
  for (uint32_t i = 0; i < 5; i++)
    ck_assert_uint_eq(state_of(s, i), SNAP_FREE);
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), PT_ENOSNAP);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* A restore point this object must rebuild: its copy of the step (here
 * damaged: COMMITTED) and everything newer, the writer and every older pin
 * go; the older committed steps stay for the job to fall back on, and the
 * newest of them is the newest committed one until the rebuilt step
 * commits. */
START_TEST(test_set_restore_missing)
{
  char name[64];
  struct snap_store *s = make_store("missing", 6, name, sizeof(name));
  uint32_t s1 = take(s, 1, false);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  uint32_t s2 = take(s, 2, false);
  ck_assert_int_eq(snap_slot_commit(s, 2), 0);
  uint32_t s3 = take(s, 3, false);
  ck_assert_int_eq(snap_slot_pin(s, 3), 0);
  uint32_t s4 = take(s, 4, false);
  ck_assert_int_eq(snap_slot_commit(s, 4), 0); /* 3 is SEALED again */
  uint32_t s5 = take(s, 5, false);
  uint32_t w;
  uint64_t gw;
  ck_assert_int_eq(snap_slot_acquire(s, 6, &w, &gw), 0);

  ck_assert_int_eq(snap_slot_set_restore_missing(s, 4), 4);
  ck_assert_uint_eq(state_of(s, s1), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s3), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s4), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, s5), SNAP_FREE);
  ck_assert_uint_eq(state_of(s, w), SNAP_FREE);
  uint32_t f;
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(st, 2);
  /* The rebuilt step, written and committed, supersedes nothing older. */
  uint32_t r4 = take(s, 4, false);
  ck_assert_int_eq(snap_slot_commit(s, 4), 0);
  ck_assert_uint_eq(state_of(s, r4), SNAP_COMMITTED);
  ck_assert_uint_eq(state_of(s, s2), SNAP_COMMITTED);
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(st, 4);
  /* Nothing older than the step: everything goes; again: nothing. */
  ck_assert_int_eq(snap_slot_set_restore_missing(s, 1), 3);
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), PT_ENOSNAP);
  ck_assert_int_eq(snap_slot_set_restore_missing(s, 1), 0);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* Rewrites slot's record CRC over what its record holds now: a forger who
 * knows the format. */
static void record_fix(struct snap_store *s, uint32_t slot)
{
  uint8_t *e = (uint8_t *)snap_store_base(s) + 4096 +
               320 * (uint64_t)snap_store_nregions(s) + 64 * (uint64_t)slot;
  uint8_t rec[60];
  memcpy(rec, e, 4);
  memcpy(rec + 4, e + 8, 56);
  uint32_t c = oracle_crc(rec, sizeof(rec));
  memcpy(e + 4, &c, 4);
}

/* Sets slot's state to st with a valid record, as a future SMP would. */
static void state_force(struct snap_store *s, uint32_t slot, uint32_t st)
{
  uint8_t *e = (uint8_t *)snap_store_base(s) + 4096 +
               320 * (uint64_t)snap_store_nregions(s) + 64 * (uint64_t)slot;
  memcpy(e, &st, 4);
  record_fix(s, slot);
}

/* PROTECTED (parity acknowledged; set only from PINNED by
 * snap_slot_protect, test_protect) is forced here; the rest treats it as
 * PINNED: it holds data, is never handed out, may be
 * committed, pinning it again is a repeat, unpinning or an older commit
 * makes it SEALED with its bytes, and a restore clears it. */
START_TEST(test_protected_as_pinned)
{
  char name[64];
  struct snap_store *s = make_store("protected", 3, name, sizeof(name));
  ck_assert(snap_state_holds_data(SNAP_PROTECTED));
  uint32_t p = take(s, 2, true);
  state_force(s, p, SNAP_PROTECTED);
  struct snap_slot_info info;
  snap_slot_get(s, p, &info);
  ck_assert(info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_verify(s, p, NULL), 0);
  uint32_t f;
  ck_assert_int_eq(snap_slot_find_step(s, 2, &f), 0);
  ck_assert_uint_eq(f, p);
  /* Never handed out, even when every other slot is taken. */
  uint32_t a = take(s, 3, false), b = take(s, 4, false);
  ck_assert_uint_ne(a, p);
  ck_assert_uint_ne(b, p);
  for (int k = 0; k < 4; k++) {
    uint32_t x;
    uint64_t gx;
    ck_assert_int_eq(snap_slot_acquire(s, 5 + k, &x, &gx), 0);
    ck_assert_uint_ne(x, p);
    ck_assert_int_eq(snap_slot_seal(s, x, gx, 5 + k), 0);
  }
  ck_assert_uint_eq(state_of(s, p), SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_pin(s, 2), 0); /* a repeat */
  ck_assert_uint_eq(state_of(s, p), SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_unpin(s, 2), 0);
  ck_assert_uint_eq(state_of(s, p), SNAP_SEALED);
  ck_assert(slot_has_step_data(s, p, 2));

  /* An older PROTECTED step keeps its bytes when a newer one commits. */
  state_force(s, p, SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_commit(s, 8), 0);
  ck_assert_uint_eq(state_of(s, p), SNAP_SEALED);
  ck_assert(slot_has_step_data(s, p, 2));
  /* A PROTECTED step commits; a restore point elsewhere clears it. */
  state_force(s, p, SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_commit(s, 2), 0);
  ck_assert_uint_eq(state_of(s, p), SNAP_COMMITTED);
  state_force(s, p, SNAP_PROTECTED);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 8), 0);
  ck_assert_uint_eq(state_of(s, p), SNAP_FREE);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* snap_slot_protect: only a PINNED step becomes PROTECTED (a SEALED one is
 * PT_ESTATE and stays SEALED, a WRITING, COMMITTED or unknown one -ENOENT),
 * with a valid record and its fields unchanged; a repeat is PT_OK and
 * changes nothing; the newer of two slots pinned for a step is the one;
 * the slot then commits, and an unpin makes it SEALED with its bytes. */
START_TEST(test_protect)
{
  char name[64];
  struct snap_store *s = make_store("protect", 3, name, sizeof(name));
  uint32_t w;
  uint64_t gw;

  ck_assert_int_eq(snap_slot_protect(s, 1), -ENOENT); /* nothing there */
  ck_assert_int_eq(snap_slot_acquire(s, 1, &w, &gw), 0);
  ck_assert_int_eq(snap_slot_protect(s, 1), -ENOENT); /* WRITING */
  fill_slot(s, w, 1);
  ck_assert_int_eq(snap_slot_seal(s, w, gw, 1), 0);
  ck_assert_int_eq(snap_slot_protect(s, 1), PT_ESTATE); /* not pinned */
  ck_assert_uint_eq(state_of(s, w), SNAP_SEALED);
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);
  ck_assert_int_eq(snap_slot_protect(s, 2), -ENOENT); /* another step */
  struct snap_slot_info before, after;
  snap_slot_get(s, w, &before);
  ck_assert_int_eq(snap_slot_protect(s, 1), 0);
  snap_slot_get(s, w, &after);
  ck_assert(after.record_ok);
  ck_assert_uint_eq(after.state, SNAP_PROTECTED);
  ck_assert_uint_eq(after.step, before.step);
  ck_assert_uint_eq(after.generation, before.generation);
  ck_assert_uint_eq(after.t_sealed_ns, before.t_sealed_ns);
  ck_assert_int_eq(snap_slot_verify(s, w, NULL), 0);
  ck_assert_int_eq(snap_slot_protect(s, 1), 0); /* a repeat */
  snap_slot_get(s, w, &before);
  ck_assert_mem_eq(&before, &after, sizeof(before));
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);     /* pinned already */
  ck_assert_uint_eq(state_of(s, w), SNAP_PROTECTED);

  /* abandoned: SEALED with its bytes; pinned and protected again, then
   * committed */
  ck_assert_int_eq(snap_slot_unpin(s, 1), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_SEALED);
  ck_assert(slot_has_step_data(s, w, 1));
  ck_assert_int_eq(snap_slot_pin(s, 1), 0);
  ck_assert_int_eq(snap_slot_protect(s, 1), 0);
  ck_assert_int_eq(snap_slot_commit(s, 1), 0);
  ck_assert_uint_eq(state_of(s, w), SNAP_COMMITTED);
  ck_assert_int_eq(snap_slot_protect(s, 1), -ENOENT); /* committed */

  /* two slots of step 2: the pinned (newer) one is protected */
  uint32_t a = take(s, 2, false), b = take(s, 2, false);
  ck_assert_int_eq(snap_slot_pin(s, 2), 0);
  ck_assert_int_eq(snap_slot_protect(s, 2), 0);
  ck_assert_uint_eq(state_of(s, b), SNAP_PROTECTED);
  ck_assert_uint_eq(state_of(s, a), SNAP_SEALED);
  ck_assert_uint_eq(snap_slot_bad_records(s, NULL, 0), 0);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* The slot record of snap_store.h: a step number, generation or state
 * changed in the mapping without the record CRC is never taken for true;
 * the slot holds nothing until recover frees it. Before record CRCs, the
 * changed step was restored as if true. */
START_TEST(test_record_checksum)
{
  char name[64], err[256], msg[512];
  struct snap_store *s = make_store("record", 3, name, sizeof(name));
  uint32_t a = take(s, 10, true);
  ck_assert_int_eq(snap_slot_commit(s, 10), 0);
  uint32_t b = take(s, 11, true);
  ck_assert_int_eq(snap_slot_commit(s, 11), 0);
  uint32_t f;
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, b);
  ck_assert_uint_eq(snap_slot_bad_records(s, msg, sizeof(msg)), 0);
  ck_assert_str_eq(msg, "");

  /* The newest committed step renumbered 11 -> 12. */
  uint8_t *eb = (uint8_t *)snap_store_base(s) + 4096 + 3 * 320 + 64 * b;
  uint64_t forged = 12;
  memcpy(eb + 8, &forged, 8);
  struct snap_slot_info info;
  snap_slot_get(s, b, &info);
  ck_assert(!info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_FREE);
  ck_assert_uint_eq(info.step, 12); /* as read, flagged untrusted */
  /* Never restored: the fallback, step 10, is the newest committed one. */
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(f, a);
  ck_assert_uint_eq(st, 10);
  ck_assert_int_eq(snap_slot_find_step(s, 12, &f), -ENOENT);
  ck_assert_int_eq(snap_slot_find_step(s, 11, &f), -ENOENT);
  ck_assert_int_eq(snap_slot_commit(s, 12), -ENOENT);
  ck_assert_int_eq(snap_slot_set_restore(s, true, 12), -ENOENT);
  uint32_t bad = 0;
  ck_assert_int_eq(snap_slot_verify(s, b, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, SNAP_BAD_RECORD(snap_store_nblocks(s)));
  ck_assert_int_eq(snap_slot_verify(s, a, &bad), 0);

  /* Another process opening the object is told, and sees the same. */
  struct snap_store *o = NULL;
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  ck_assert_uint_eq(snap_slot_bad_records(o, msg, sizeof(msg)), 1);
  char want[64];
  snprintf(want, sizeof(want), "slot %u record fails its checksum", b);
  ck_assert_msg(strstr(msg, want) != NULL && strstr(msg, name) != NULL, "%s",
                msg);
  ck_assert_int_eq(snap_slot_newest_committed(o, &f, &st), 0);
  ck_assert_uint_eq(st, 10);
  snap_store_close(o);

  /* The damaged slot may be reused; recover frees it for good. */
  ck_assert_int_eq(snap_slot_recover(s), 1);
  snap_slot_get(s, b, &info);
  ck_assert(info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_FREE);

  /* A generation or a state changed alone is caught the same way. */
  uint8_t *ea = (uint8_t *)snap_store_base(s) + 4096 + 3 * 320 + 64 * a;
  ea[16] ^= 1;
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), PT_ENOSNAP);
  ea[16] ^= 1;
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), 0);
  uint32_t sealed = SNAP_SEALED;
  memcpy(ea, &sealed, 4);
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), PT_ENOSNAP);
  ck_assert_int_eq(snap_slot_pin(s, 10), -ENOENT);
  /* A forger who rewrites the CRC too is out of scope of a checksum: the
   * record is then as good as any. */
  record_fix(s, a);
  ck_assert_int_eq(snap_slot_pin(s, 10), 0);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* A reader in another process never takes a record in the middle of a
 * transition for a damaged one (the busy bit and the word re-read of
 * snap_store.h), however fast the SMP changes it. */
START_TEST(test_record_concurrent)
{
  char name[64], err[256];
  struct snap_store *s = make_store("recconc", 3, name, sizeof(name));
  for (uint32_t i = 0; i < 3; i++)
    memset(snap_slot_crcs(s, i) + snap_store_nblocks(s), 0, 8);
  int done[2];
  ck_assert_int_eq(pipe(done), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(done[0]);
    struct snap_store *w = NULL;
    if (snap_store_open(&w, name, err, sizeof(err)) != 0)
      _exit(10);
    for (uint64_t k = 1; k <= 300000; k++) {
      uint32_t slot;
      uint64_t gen;
      if (snap_slot_acquire(w, k, &slot, &gen) != 0 ||
          snap_slot_seal(w, slot, gen, k) != 0 ||
          snap_slot_pin(w, k) != 0 || snap_slot_commit(w, k) != 0)
        _exit(11);
    }
    snap_store_close(w);
    _exit(0);
  }
  close(done[1]);
  uint64_t reads = 0;
  int status = 0;
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    for (uint32_t i = 0; i < 3; i++) {
      struct snap_slot_info info;
      snap_slot_get(s, i, &info);
      ck_assert_msg(info.record_ok, "slot %u read as damaged after %llu reads",
                    i, (unsigned long long)reads);
      reads++;
    }
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ck_assert_msg(now.tv_sec - t0.tv_sec < 20, "the writer did not finish");
  }
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  ck_assert_uint_eq(snap_slot_bad_records(s, NULL, 0), 0);
  close(done[0]);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

START_TEST(test_verify)
{
  char name[64];
  struct snap_store *s = make_store("verify", 2, name, sizeof(name));
  uint32_t slot = take(s, 42, true);
  uint32_t nblocks = snap_store_nblocks(s);
  ck_assert_uint_eq(nblocks, 2 + 1 + 2);
  uint32_t *crcs = snap_slot_crcs(s, slot);
  /* The table CRC sits at offset 48 of the slot entry and covers the
   * trailer; the blob's bytes and CRC follow it. */
  uint8_t *ent = (uint8_t *)snap_store_base(s) + 4096 + 3 * 320 + 64 * slot;
  uint32_t recorded, rb, rc32;
  memcpy(&recorded, ent + 48, 4);
  ck_assert_uint_eq(recorded, oracle_crc(crcs, (nblocks + 2) * 4));
  memcpy(&rb, ent + 52, 4);
  memcpy(&rc32, ent + 56, 4);
  ck_assert_uint_eq(rb, blob_bytes_of(42));
  ck_assert_uint_eq(rc32, oracle_crc(snap_slot_blob(s, slot), rb));
  struct snap_slot_info info;
  snap_slot_get(s, slot, &info);
  ck_assert(info.record_ok);
  ck_assert_uint_eq(info.blob_bytes, rb);
  ck_assert_uint_eq(info.blob_crc, rc32);
  uint32_t bad = 1234;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);
  ck_assert_uint_eq(bad, 1234);

  /* One data byte flipped in region 2, block 1. */
  const struct snap_region *r2 = snap_store_region(s, 2);
  uint8_t *data = snap_slot_data(s, slot);
  uint8_t *victim = data + r2->offset + MIB + 777;
  *victim ^= 0x01;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, r2->first_block + 1);
  ck_assert_int_eq(snap_slot_verify(s, slot, NULL), PT_ECHECKSUM);
  *victim ^= 0x01;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);

  /* The last byte of the short last block of region 0. */
  const struct snap_region *r0 = snap_store_region(s, 0);
  data[r0->offset + r0->bytes - 1] ^= 0x80;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, 1);
  data[r0->offset + r0->bytes - 1] ^= 0x80;

  /* Padding between regions is no data and not checked. */
  const struct snap_region *r1 = snap_store_region(s, 1);
  data[r1->offset + r1->bytes] ^= 0xff;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);

  /* One byte of the checksum table flipped. */
  ((uint8_t *)crcs)[4 * 3 + 2] ^= 0x10;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, 3);
  ((uint8_t *)crcs)[4 * 3 + 2] ^= 0x10;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);

  /* The recorded table CRC flipped: the slot record no longer matches its
   * own CRC. With the record CRC made to match, no block disagrees, the
   * table does. */
  uint8_t *rec = ent + 48;
  rec[0] ^= 0x01;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, SNAP_BAD_RECORD(nblocks));
  record_fix(s, slot);
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, nblocks);
  rec[0] ^= 0x01;
  record_fix(s, slot);
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);

  /* A blob byte flipped; the trailer changed (the table CRC sees it). */
  uint8_t *blob = snap_slot_blob(s, slot);
  blob[rb - 1] ^= 0x04;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, SNAP_BAD_BLOB(nblocks));
  blob[rb - 1] ^= 0x04;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);
  crcs[nblocks] ^= 1;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, nblocks);
  crcs[nblocks] ^= 1;
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);

  /* Committed slots verify too; the other slot, FREE, does not. */
  ck_assert_int_eq(snap_slot_commit(s, 42), 0);
  ck_assert_int_eq(snap_slot_verify(s, slot, &bad), 0);
  ck_assert_int_eq(snap_slot_verify(s, 1 - slot, &bad), PT_ESTATE);

  /* A seal whose trailer claims more blob bytes than the area holds. */
  uint32_t w;
  uint64_t g;
  ck_assert_int_eq(snap_slot_acquire(s, 43, &w, &g), 0);
  fill_slot(s, w, 43);
  snap_slot_crcs(s, w)[nblocks] = snap_store_blob_max(s) + 1;
  ck_assert_int_eq(snap_slot_seal(s, w, g, 43), -EINVAL);
  snap_slot_crcs(s, w)[nblocks] = snap_store_blob_max(s);
  ck_assert_int_eq(snap_slot_seal(s, w, g, 43), 0);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* snap_slot_verify_many() on several threads says per slot what snap_slot_verify()
 * says: intact, a damaged block, a damaged blob, a FREE slot. */
START_TEST(test_verify_parallel)
{
  char name[64];
  struct snap_store *s = make_store("verifypar", 5, name, sizeof(name));
  uint32_t slots[5];
  for (uint32_t k = 0; k < 4; k++)
    slots[k] = take(s, 10 + k, true);
  for (uint32_t i = 0; i < 5; i++) {
    bool used = false;
    for (uint32_t k = 0; k < 4; k++)
      used = used || slots[k] == i;
    if (!used)
      slots[4] = i; /* the one FREE slot */
  }
  const struct snap_region *r2 = snap_store_region(s, 2);
  ((uint8_t *)snap_slot_data(s, slots[1]))[r2->offset + MIB + 3] ^= 0x20;
  ((uint8_t *)snap_slot_blob(s, slots[3]))[0] ^= 0x01;
  uint32_t nblocks = snap_store_nblocks(s);
  const int want_rc[5] = {0, PT_ECHECKSUM, 0, PT_ECHECKSUM, PT_ESTATE};
  const uint32_t want_bad[4] = {0, r2->first_block + 1, 0, SNAP_BAD_BLOB(nblocks)};

  for (uint32_t threads = 1; threads <= 6; threads++) {
    int rcs[5];
    uint32_t bad[5];
    for (uint32_t k = 0; k < 5; k++) {
      rcs[k] = 12345;
      bad[k] = 0;
    }
    snap_slot_verify_many(s, slots, 5, threads, rcs, bad);
    for (uint32_t k = 0; k < 5; k++) {
      ck_assert_msg(rcs[k] == want_rc[k], "threads %u slot %u: rc %d", threads, k, rcs[k]);
      if (k < 4 && want_rc[k] != 0)
        ck_assert_uint_eq(bad[k], want_bad[k]);
      uint32_t one = 0;
      ck_assert_int_eq(snap_slot_verify(s, slots[k], &one), rcs[k]);
    }
    /* bad_blocks may be NULL; a subset in another order. */
    uint32_t two[2] = {slots[3], slots[0]};
    int rc2[2] = {1, 1};
    snap_slot_verify_many(s, two, 2, threads, rc2, NULL);
    ck_assert_int_eq(rc2[0], PT_ECHECKSUM);
    ck_assert_int_eq(rc2[1], 0);
  }
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* One slot of many blocks is shared among the threads in pieces: the first
 * bad block is the smallest whichever thread finds which, damage in a piece
 * that spans two regions or in the very last block is found, and a slot
 * alone is still read right with more threads than pieces. */
START_TEST(test_verify_one_slot_threads)
{
  static struct snap_region_desc big[2];
  memset(big, 0, sizeof(big));
  strcpy(big[0].name, "a");
  big[0].bytes = 45 * MIB + 3;
  strcpy(big[1].name, "b");
  big[1].bytes = 60 * MIB;
  struct snap_params p = {.job = "slots", .rank = 0, .world = 1,
                          .nslots = 2, .regions = big, .nregions = 2};
  char name[64], err[256] = "";
  struct snap_store *s = NULL;
  shm_name(name, sizeof(name), "verifyone");
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  uint32_t slot = take(s, 7, true);
  const struct snap_region *ra = snap_store_region(s, 0), *rb = snap_store_region(s, 1);
  uint8_t *data = snap_slot_data(s, slot);
  uint32_t nblocks = snap_store_nblocks(s);
  ck_assert_uint_gt(nblocks, 96); /* more than three pieces */

  for (uint32_t threads = 1; threads <= 3; threads++) {
    int rc = 1;
    uint32_t bad = 0;
    snap_slot_verify_many(s, &slot, 1, threads, &rc, &bad);
    ck_assert_int_eq(rc, 0);
  }
  /* Two damaged blocks in different pieces: the first is reported. */
  data[rb->offset + 20 * MIB + 9] ^= 0x40;
  data[ra->offset + 40 * MIB + 1] ^= 0x40;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    int rc = 1;
    uint32_t bad = 0;
    snap_slot_verify_many(s, &slot, 1, threads, &rc, &bad);
    ck_assert_int_eq(rc, PT_ECHECKSUM);
    ck_assert_uint_eq(bad, ra->first_block + 40);
  }
  data[ra->offset + 40 * MIB + 1] ^= 0x40;
  data[rb->offset + 20 * MIB + 9] ^= 0x40;
  /* The block of region a's last 3 bytes shares a piece with region b. */
  data[ra->offset + 45 * MIB + 2] ^= 0x01;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    int rc = 1;
    uint32_t bad = 0;
    snap_slot_verify_many(s, &slot, 1, threads, &rc, &bad);
    ck_assert_int_eq(rc, PT_ECHECKSUM);
    ck_assert_uint_eq(bad, ra->first_block + 45);
  }
  data[ra->offset + 45 * MIB + 2] ^= 0x01;
  data[rb->offset + rb->bytes - 1] ^= 0x80;
  for (uint32_t threads = 1; threads <= 3; threads++) {
    int rc = 1;
    uint32_t bad = 0;
    snap_slot_verify_many(s, &slot, 1, threads, &rc, &bad);
    ck_assert_int_eq(rc, PT_ECHECKSUM);
    ck_assert_uint_eq(bad, nblocks - 1);
    ck_assert_int_eq(snap_slot_verify(s, slot, &bad), PT_ECHECKSUM);
    ck_assert_uint_eq(bad, nblocks - 1);
  }
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* An object truncated under a verify: every thread's read faults, and each
 * is caught (snap_slot_verify_many guards all its threads, also inside an
 * outer snap_fault_run), so the process lives and the slot reports -EFAULT;
 * a SIGBUS outside any guard still kills. */
static struct snap_store *fault_store;
static int fault_verify(void *arg)
{
  uint32_t *slot = arg;
  int rc = 1;
  snap_slot_verify_many(fault_store, slot, 1, 4, &rc, NULL);
  return rc == -EFAULT ? -EFAULT : 7;
}

static void on_bus(int sig, siginfo_t *si, void *uc)
{
  (void)uc;
  (void)snap_fault_catch(si->si_addr);
  signal(sig, SIG_DFL);
  raise(sig);
}

START_TEST(test_verify_truncated)
{
  static struct snap_region_desc big[1];
  memset(big, 0, sizeof(big));
  strcpy(big[0].name, "a");
  big[0].bytes = 64 * MIB;
  struct snap_params p = {.job = "slots", .rank = 0, .world = 1,
                          .nslots = 2, .regions = big, .nregions = 1};
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "verifybus");
  ck_assert_msg(snap_store_create(&fault_store, name, &p, err, sizeof(err)) == 0, "%s", err);
  uint32_t slot = take(fault_store, 3, true);

  for (int guarded = 1; guarded >= 0; guarded--) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof(sa));
      sa.sa_sigaction = on_bus;
      sa.sa_flags = SA_SIGINFO | SA_NODEFER;
      sigaction(SIGBUS, &sa, NULL);
      int fd = shm_open(name, O_RDWR, 0);
      if (fd < 0 || ftruncate(fd, 4096) != 0)
        _exit(3);
      close(fd);
      if (!guarded) {
        volatile uint8_t *d = snap_slot_data(fault_store, slot);
        (void)d[4 * MIB]; /* a read no guard covers */
        _exit(4); /* not reached */
      }
      /* Every thread's reads fault: the helpers' and the caller's. */
      int rc = 1;
      snap_slot_verify_many(fault_store, &slot, 1, 4, &rc, NULL);
      if (rc != -EFAULT)
        _exit(5);
      rc = snap_fault_run(fault_store, fault_verify, &slot); /* nested */
      _exit(rc == -EFAULT ? 0 : 6);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (guarded)
      ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    else
      ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "status %#x", st);
    /* The child truncated the shared object: make it whole again. */
    int fd = shm_open(name, O_RDWR, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)snap_store_total_bytes(fault_store)), 0);
    close(fd);
    slot = take(fault_store, 4 + (uint64_t)guarded, true);
  }
  snap_store_close(fault_store);
  snap_store_unlink(name);
}
END_TEST

/* Waits up to ms for one byte on fd. */
static bool wait_byte(int fd, int ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, ms) != 1)
    return false;
  char c;
  return read(fd, &c, 1) == 1;
}

/* The writer process: for each step, acquire, copy, seal, commit, then wait
 * for the observer to acknowledge before the next step may reuse a slot. */
static int writer_main(const char *name, int ack_fd, int rounds)
{
  char err[256];
  struct snap_store *s = NULL;
  if (snap_store_open(&s, name, err, sizeof(err)) != 0)
    return 10;
  for (int k = 1; k <= rounds; k++) {
    uint32_t slot;
    uint64_t gen;
    if (snap_slot_acquire(s, (uint64_t)k, &slot, &gen) != 0)
      return 11;
    fill_slot(s, slot, (uint64_t)k);
    if (snap_slot_seal(s, slot, gen, (uint64_t)k) != 0)
      return 12;
    if (!wait_byte(ack_fd, 10000))
      return 13;
    if (snap_slot_commit(s, (uint64_t)k) != 0)
      return 14;
  }
  snap_store_close(s);
  return 0;
}

START_TEST(test_cross_process)
{
  char name[64];
  struct snap_store *s = make_store("xproc", 3, name, sizeof(name));
  int ack[2];
  ck_assert_int_eq(pipe(ack), 0);
  const int rounds = 6;
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(ack[1]);
    _exit(writer_main(name, ack[0], rounds));
  }
  close(ack[0]);

  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += 15;
  for (int k = 1; k <= rounds; k++) {
    /* Poll with acquire loads until some slot shows step k SEALED; then
     * every byte the writer copied before sealing must be visible here. */
    uint32_t found = UINT32_MAX;
    while (found == UINT32_MAX) {
      for (uint32_t i = 0; i < 3; i++) {
        struct snap_slot_info info;
        snap_slot_get(s, i, &info);
        if (info.state == SNAP_SEALED && info.step == (uint64_t)k)
          found = i;
      }
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      ck_assert_msg(now.tv_sec < deadline.tv_sec, "step %d never sealed", k);
      if (found == UINT32_MAX)
        nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
    }
    ck_assert(slot_has_step_data(s, found, (uint64_t)k));
    ck_assert_int_eq(snap_slot_verify(s, found, NULL), 0);
    ck_assert_int_eq(write(ack[1], "k", 1), 1);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  uint32_t f;
  uint64_t st;
  ck_assert_int_eq(snap_slot_newest_committed(s, &f, &st), 0);
  ck_assert_uint_eq(st, (uint64_t)rounds);
  close(ack[1]);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_slot");
  TCase *tc = tcase_create("slot");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_fresh_store);
  tcase_add_test(tc, test_acquire_seal_commit);
  tcase_add_test(tc, test_acquire_avoiding);
  tcase_add_test(tc, test_skipped_and_newest_kept);
  tcase_add_test(tc, test_rotation);
  tcase_add_test(tc, test_stale_generation);
  tcase_add_test(tc, test_recover);
  tcase_add_test(tc, test_commit_semantics);
  tcase_add_test(tc, test_pin_unpin);
  tcase_add_test(tc, test_pinned_never_reused);
  tcase_add_test(tc, test_protected_as_pinned);
  tcase_add_test(tc, test_protect);
  tcase_add_test(tc, test_commit_releases_pins);
  tcase_add_test(tc, test_pin_random);
  tcase_add_test(tc, test_set_restore);
  tcase_add_test(tc, test_set_restore_missing);
  tcase_add_test(tc, test_verify);
  tcase_add_test(tc, test_verify_parallel);
  tcase_add_test(tc, test_verify_one_slot_threads);
  tcase_add_test(tc, test_verify_truncated);
  tcase_add_test(tc, test_record_checksum);
  tcase_add_test(tc, test_record_concurrent);
  tcase_add_test(tc, test_cross_process);
  suite_add_tcase(su, tc);
  int rc = unit_run(su);
  /* Every object a test of this run left behind. */
  unit_shm_sweep("pt-tsnap-slot.%d.", (int)runner_pid);
  return rc;
}
