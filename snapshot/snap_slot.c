/*
 * snap_slot.c — the slot state machine of a snapshot object, where a slot's
 * data, blob and checksum table lie, and the checks of a slot's data against
 * its checksum table.
 *
 * Only the SMP changes slot states; the trainer maps the object too and reads
 * them. Every field of a slot-table entry is an atomic in the shared mapping,
 * and every record carries a CRC over its state and fields, written in the
 * order that "Slot records" in snap_store.h gives: the busy bit, the fields
 * (relaxed), then one release store of the state together with the CRC.
 * snap_slot_get() is the reader's side; the SMP's own reads (state_load)
 * need no retry, since it is the only writer, and take a record that fails
 * its CRC for one that holds nothing (SLOT_BAD). A slot that is taken over
 * for a new step is first set FREE, so that no reader can see its old state
 * next to the new step.
 *
 * Age is counted in steps: "older" and "newer" compare step numbers, and the
 * newest COMMITTED slot is the one with the highest step (the higher
 * generation on a tie). Generations grow over the whole life of the object:
 * each acquire stores one more than the highest generation any slot holds,
 * and freeing a slot keeps its generation, so a writer holding a slot that
 * was taken from it always gets PT_ESTALE.
 *
 * A commit runs in two phases across the ranks (ptd node drives them):
 * pin makes a SEALED slot PINNED (never handed out), commit makes it
 * COMMITTED, unpin drops the pin when the commit is abandoned. protect
 * makes a PINNED slot PROTECTED (its coding group holds its parity, and it
 * holds its share of theirs); every other function treats PROTECTED as
 * PINNED, the choice that never loses its bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "common/monotime.h"
#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_internal.h"

/* Internal: the state of a slot whose record fails its checksum (or was
 * left busy). It matches no state mask, so nothing treats it as holding a
 * step, and acquire may take it like a FREE one. */
#define SLOT_BAD 0xFFFFFFFEu

/* Bytes 8..63 of slot i's record, each field read as a relaxed atomic. */
static void fields_read(const struct snap_store *s, uint32_t i,
                        uint8_t out[SLOT_ENTRY_BYTES - SLOT_STEP])
{
  static const unsigned f64[] = {SLOT_STEP, SLOT_GENERATION, SLOT_T_WRITING,
                                 SLOT_T_SEALED, SLOT_T_COMMITTED};
  static const unsigned f32[] = {SLOT_TABLE_CRC, SLOT_BLOB_BYTES,
                                 SLOT_BLOB_CRC, SLOT_PAD};
  for (size_t k = 0; k < sizeof(f64) / sizeof(f64[0]); k++)
    snap_put64(out + f64[k] - SLOT_STEP,
               atomic_load_explicit(snap_slot_u64_ptr(s, i, f64[k]),
                                    memory_order_relaxed));
  for (size_t k = 0; k < sizeof(f32) / sizeof(f32[0]); k++)
    snap_put32(out + f32[k] - SLOT_STEP,
               atomic_load_explicit(snap_slot_u32_ptr(s, i, f32[k]),
                                    memory_order_relaxed));
}

static uint32_t crc_of(uint32_t state,
                       const uint8_t fields[SLOT_ENTRY_BYTES - SLOT_STEP])
{
  uint8_t rec[SLOT_CRC_COVERS];
  snap_put32(rec, state);
  memcpy(rec + 4, fields, SLOT_ENTRY_BYTES - SLOT_STEP);
  return crc32c(rec, sizeof(rec));
}

uint32_t snap_slot_record_crc(const struct snap_store *s, uint32_t i,
                              uint32_t state)
{
  uint8_t f[SLOT_ENTRY_BYTES - SLOT_STEP];
  fields_read(s, i, f);
  return crc_of(state & ~SNAP_STATE_BUSY, f);
}

/* True when word w (state and CRC) describes fields f: not busy, a known
 * state, a matching CRC. */
static bool word_matches(uint64_t w, const uint8_t *f)
{
  uint32_t st = (uint32_t)w;
  if ((st & SNAP_STATE_BUSY) != 0 || st > SNAP_STATE_MAX)
    return false;
  return (uint32_t)(w >> 32) == crc_of(st, f);
}

/* The SMP's own view of slot i: as the only writer it never sees a record
 * in the middle of a change, so a mismatch is damage: SLOT_BAD. */
static uint32_t state_load(const struct snap_store *s, uint32_t i)
{
  uint8_t f[SLOT_ENTRY_BYTES - SLOT_STEP];
  uint64_t w = atomic_load_explicit(snap_slot_word_ptr(s, i),
                                    memory_order_acquire);
  fields_read(s, i, f);
  return word_matches(w, f) ? (uint32_t)w : SLOT_BAD;
}

/* Step 3 of a transition (snap_store.h): the new state and the CRC over it
 * and the fields as they are now, in one release store. */
static void state_store(const struct snap_store *s, uint32_t i, uint32_t v)
{
  uint64_t w = (uint64_t)v | (uint64_t)snap_slot_record_crc(s, i, v) << 32;
  atomic_store_explicit(snap_slot_word_ptr(s, i), w, memory_order_release);
}

/* Step 1: before fields other than the state change, the busy bit tells
 * readers in other processes to read again. */
static void change_begin(const struct snap_store *s, uint32_t i)
{
  _Atomic uint64_t *wp = snap_slot_word_ptr(s, i);
  uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
  atomic_store_explicit(wp, w | SNAP_STATE_BUSY, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
}

static uint64_t get64(const struct snap_store *s, uint32_t i, unsigned field)
{
  return atomic_load_explicit(snap_slot_u64_ptr(s, i, field),
                              memory_order_relaxed);
}

static void set64(const struct snap_store *s, uint32_t i, unsigned field,
                  uint64_t v)
{
  atomic_store_explicit(snap_slot_u64_ptr(s, i, field), v,
                        memory_order_relaxed);
}

static void set32(const struct snap_store *s, uint32_t i, unsigned field,
                  uint32_t v)
{
  atomic_store_explicit(snap_slot_u32_ptr(s, i, field), v,
                        memory_order_relaxed);
}

/* Wall-clock stamps, kept in the object for status and logs. */
static uint64_t wall_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* True when slot a is older than slot b: a lower step, or on the same step a
 * lower generation. */
static bool older(const struct snap_store *s, uint32_t a, uint32_t b)
{
  uint64_t sa = get64(s, a, SLOT_STEP), sb = get64(s, b, SLOT_STEP);
  if (sa != sb)
    return sa < sb;
  return get64(s, a, SLOT_GENERATION) < get64(s, b, SLOT_GENERATION);
}

/* The newest slot in one of the states of mask (bit per state) holding step,
 * or any step when any_step; UINT32_MAX when none. */
static uint32_t newest_in(const struct snap_store *s, unsigned mask,
                          bool any_step, uint64_t step)
{
  uint32_t best = UINT32_MAX;
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    uint32_t st = state_load(s, i);
    if (st > SNAP_STATE_MAX || !(mask & (1u << st)))
      continue;
    if (!any_step && get64(s, i, SLOT_STEP) != step)
      continue;
    if (best == UINT32_MAX || older(s, best, i))
      best = i;
  }
  return best;
}

#define MASK_COMMITTED (1u << SNAP_COMMITTED)
/* A commit holds the slot: PINNED, or PROTECTED taken as PINNED. */
#define MASK_PINNED ((1u << SNAP_PINNED) | (1u << SNAP_PROTECTED))
#define MASK_SEALED (1u << SNAP_SEALED)
#define MASK_HOLDING (MASK_SEALED | MASK_PINNED | MASK_COMMITTED)

static void slot_free(const struct snap_store *s, uint32_t i)
{
  if (state_load(s, i) != SNAP_FREE)
    state_store(s, i, SNAP_FREE);
}

static void slot_make_committed(const struct snap_store *s, uint32_t i)
{
  if (state_load(s, i) == SNAP_COMMITTED)
    return;
  change_begin(s, i);
  set64(s, i, SLOT_T_COMMITTED, wall_ns());
  state_store(s, i, SNAP_COMMITTED);
}

void *snap_slot_data(const struct snap_store *s, uint32_t slot)
{
  if (slot >= s->lay.nslots)
    return NULL;
  return s->base + s->lay.data_off + (uint64_t)slot * s->lay.stride;
}

void *snap_slot_blob(const struct snap_store *s, uint32_t slot)
{
  if (slot >= s->lay.nslots)
    return NULL;
  return s->base + s->lay.data_off + (uint64_t)slot * s->lay.stride +
         s->lay.blob_off;
}

uint32_t *snap_slot_crcs(const struct snap_store *s, uint32_t slot)
{
  if (slot >= s->lay.nslots)
    return NULL;
  return (uint32_t *)(void *)(s->base + s->lay.crc_off +
                              (uint64_t)slot * s->lay.crc_stride);
}

void snap_slot_get(const struct snap_store *s, uint32_t slot,
                   struct snap_slot_info *out)
{
  uint8_t f[SLOT_ENTRY_BYTES - SLOT_STEP];
  uint64_t w, deadline = 0;
  bool ok = false;

  memset(out, 0, sizeof(*out));
  if (slot >= s->lay.nslots)
    return;
  /* The reader's side of "Slot records" in snap_store.h. */
  for (unsigned tries = 0;; tries++) {
    w = atomic_load_explicit(snap_slot_word_ptr(s, slot), memory_order_acquire);
    fields_read(s, slot, f);
    atomic_thread_fence(memory_order_acquire);
    uint64_t again = atomic_load_explicit(snap_slot_word_ptr(s, slot),
                                          memory_order_relaxed);
    if (w == again && ((uint32_t)w & SNAP_STATE_BUSY) == 0) {
      ok = word_matches(w, f);
      break;
    }
    /* A transition under way takes the SMP microseconds; one that stays
     * is an SMP that died in the middle of it. */
    if (tries == 0)
      deadline = monotime_ms() + SNAP_RECORD_WAIT_MS;
    else if (monotime_ms() >= deadline)
      break;
    if (tries < 64) {
      sched_yield();
    } else {
      struct timespec ts = {0, 50 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  out->record_ok = ok;
  out->state = ok ? (uint32_t)w : SNAP_FREE;
  out->step = snap_get64(f + SLOT_STEP - SLOT_STEP);
  out->generation = snap_get64(f + SLOT_GENERATION - SLOT_STEP);
  out->t_writing_ns = snap_get64(f + SLOT_T_WRITING - SLOT_STEP);
  out->t_sealed_ns = snap_get64(f + SLOT_T_SEALED - SLOT_STEP);
  out->t_committed_ns = snap_get64(f + SLOT_T_COMMITTED - SLOT_STEP);
  out->blob_bytes = snap_get32(f + SLOT_BLOB_BYTES - SLOT_STEP);
  out->blob_crc = snap_get32(f + SLOT_BLOB_CRC - SLOT_STEP);
}

uint32_t snap_slot_bad_records(const struct snap_store *s, char *msg,
                               size_t len)
{
  uint32_t n = 0;
  size_t used = 0;

  if (msg != NULL && len > 0)
    msg[0] = '\0';
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    struct snap_slot_info info;
    snap_slot_get(s, i, &info);
    if (info.record_ok)
      continue;
    n++;
    if (msg == NULL || used + 1 >= len)
      continue;
    uint64_t w = atomic_load_explicit(snap_slot_word_ptr(s, i),
                                      memory_order_acquire);
    int k = snprintf(msg + used, len - used,
                     "%s'%s': slot %" PRIu32 " record fails its checksum "
                     "(state %" PRIu32 ", step %" PRIu64 ", stored CRC %08"
                     PRIx32 ", computed %08" PRIx32 "): it holds nothing and "
                     "is never restored",
                     n > 1 ? "; " : "", s->name, i, (uint32_t)w, info.step,
                     (uint32_t)(w >> 32), snap_slot_record_crc(s, i, (uint32_t)w));
    if (k > 0)
      used += (size_t)k < len - used ? (size_t)k : len - used - 1;
  }
  return n;
}

int snap_slot_recover(struct snap_store *s)
{
  int n = 0;
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    uint32_t st = state_load(s, i);
    if (st == SNAP_WRITING || st == SLOT_BAD) {
      state_store(s, i, SNAP_FREE);
      n++;
    }
  }
  return n;
}

int snap_slot_acquire(struct snap_store *s, uint64_t step, uint32_t *slot,
                      uint64_t *generation)
{
  return snap_slot_acquire_avoiding(s, step, 0, slot, generation);
}

int snap_slot_acquire_avoiding(struct snap_store *s, uint64_t step,
                               uint32_t avoid, uint32_t *slot,
                               uint64_t *generation)
{
  if (slot == NULL || generation == NULL)
    return -EINVAL;
  uint64_t max_gen = 0;
  uint32_t pick = UINT32_MAX;
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    uint64_t g = get64(s, i, SLOT_GENERATION);
    if (g > max_gen)
      max_gen = g;
    uint32_t st = state_load(s, i);
    if (pick == UINT32_MAX && (st == SNAP_FREE || st == SLOT_BAD))
      pick = i;
  }
  if (pick == UINT32_MAX) {
    /* No FREE slot: the oldest SEALED or COMMITTED one, never the newest
     * COMMITTED (the restore point). PINNED and PROTECTED slots are held
     * by a commit under way and WRITING ones have a writer. */
    uint32_t keep = newest_in(s, MASK_COMMITTED, true, 0);
    for (uint32_t i = 0; i < s->lay.nslots; i++) {
      uint32_t st = state_load(s, i);
      if (i == keep || (st != SNAP_SEALED && st != SNAP_COMMITTED) ||
          (i < 32 && (avoid & (1u << i))))
        continue;
      if (pick == UINT32_MAX || older(s, i, pick))
        pick = i;
    }
    if (pick == UINT32_MAX)
      return PT_SKIPPED;
    state_store(s, pick, SNAP_FREE);
  }
  uint64_t gen = max_gen + 1;
  change_begin(s, pick);
  set64(s, pick, SLOT_STEP, step);
  set64(s, pick, SLOT_GENERATION, gen);
  set64(s, pick, SLOT_T_WRITING, wall_ns());
  set64(s, pick, SLOT_T_SEALED, 0);
  set64(s, pick, SLOT_T_COMMITTED, 0);
  set32(s, pick, SLOT_TABLE_CRC, 0);
  set32(s, pick, SLOT_BLOB_BYTES, 0);
  set32(s, pick, SLOT_BLOB_CRC, 0);
  set32(s, pick, SLOT_PAD, 0);
  state_store(s, pick, SNAP_WRITING);
  *slot = pick;
  *generation = gen;
  return PT_OK;
}

/* PT_OK when slot is WRITING under generation; -EINVAL or PT_ESTALE. */
static int check_writer(const struct snap_store *s, uint32_t slot,
                        uint64_t generation)
{
  if (slot >= s->lay.nslots)
    return -EINVAL;
  if (state_load(s, slot) != SNAP_WRITING ||
      get64(s, slot, SLOT_GENERATION) != generation)
    return PT_ESTALE;
  return PT_OK;
}

/* The CRC of slot's whole checksum table, trailer included. */
static uint32_t table_crc(const struct snap_store *s, uint32_t slot)
{
  return crc32c(snap_slot_crcs(s, slot),
                     ((size_t)s->lay.nblocks + SNAP_TABLE_TRAILER) * 4);
}

/* The trailer the trainer wrote, read once. */
static void trailer_get(const struct snap_store *s, uint32_t slot,
                        uint32_t *blob_bytes, uint32_t *blob_crc)
{
  const volatile uint32_t *t = snap_slot_crcs(s, slot) + s->lay.nblocks;
  *blob_bytes = t[0];
  *blob_crc = t[1];
}

int snap_slot_seal(struct snap_store *s, uint32_t slot, uint64_t generation,
                   uint64_t step)
{
  int rc = check_writer(s, slot, generation);
  if (rc != PT_OK)
    return rc;
  if (get64(s, slot, SLOT_STEP) != step)
    return -EINVAL;
  uint32_t blob_bytes, blob_crc;
  trailer_get(s, slot, &blob_bytes, &blob_crc);
  if (blob_bytes > s->lay.blob_max)
    return -EINVAL;
  uint32_t tcrc = table_crc(s, slot);
  change_begin(s, slot);
  set32(s, slot, SLOT_TABLE_CRC, tcrc);
  set32(s, slot, SLOT_BLOB_BYTES, blob_bytes);
  set32(s, slot, SLOT_BLOB_CRC, blob_crc);
  set64(s, slot, SLOT_T_SEALED, wall_ns());
  state_store(s, slot, SNAP_SEALED);
  return PT_OK;
}

int snap_slot_abort(struct snap_store *s, uint32_t slot, uint64_t generation)
{
  int rc = check_writer(s, slot, generation);
  if (rc != PT_OK)
    return rc;
  state_store(s, slot, SNAP_FREE);
  return PT_OK;
}

int snap_slot_pin(struct snap_store *s, uint64_t step)
{
  if (newest_in(s, MASK_PINNED, false, step) != UINT32_MAX)
    return PT_OK; /* pinned already */
  uint32_t i = newest_in(s, MASK_SEALED, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  state_store(s, i, SNAP_PINNED);
  return PT_OK;
}

int snap_slot_protect(struct snap_store *s, uint64_t step)
{
  uint32_t i = newest_in(s, MASK_PINNED, false, step);
  if (i != UINT32_MAX) {
    if (state_load(s, i) != SNAP_PROTECTED)
      state_store(s, i, SNAP_PROTECTED);
    return PT_OK;
  }
  return newest_in(s, MASK_SEALED, false, step) != UINT32_MAX ? PT_ESTATE
                                                              : -ENOENT;
}

int snap_slot_unpin(struct snap_store *s, uint64_t step)
{
  uint32_t i = newest_in(s, MASK_PINNED, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  state_store(s, i, SNAP_SEALED);
  return PT_OK;
}

/* What commit and set_restore share: slot `keep` holds the committed step.
 * Every other slot holding the same step is a duplicate and becomes FREE;
 * older SEALED slots are superseded and become FREE; older PINNED (or
 * PROTECTED) slots become SEALED (keep_pinned_bytes, a commit: the bytes
 * may be committed on other ranks) or FREE (a restore point, which clears
 * every pin); older COMMITTED slots stay as fallbacks. */
static void supersede_older(const struct snap_store *s, uint32_t keep,
                            bool keep_pinned_bytes)
{
  uint64_t step = get64(s, keep, SLOT_STEP);
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    if (i == keep)
      continue;
    uint32_t st = state_load(s, i);
    uint64_t si = get64(s, i, SLOT_STEP);
    if (!snap_state_holds_data(st) || si > step)
      continue;
    if (si == step || st == SNAP_SEALED)
      slot_free(s, i);
    else if (st == SNAP_PINNED || st == SNAP_PROTECTED)
      state_store(s, i, keep_pinned_bytes ? SNAP_SEALED : SNAP_FREE);
  }
}

int snap_slot_commit(struct snap_store *s, uint64_t step)
{
  uint32_t i = newest_in(s, MASK_HOLDING, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  slot_make_committed(s, i);
  supersede_older(s, i, true);
  return PT_OK;
}

int snap_slot_set_restore(struct snap_store *s, bool has_step, uint64_t step)
{
  if (!has_step) {
    for (uint32_t i = 0; i < s->lay.nslots; i++)
      slot_free(s, i);
    return PT_OK;
  }
  uint32_t keep = newest_in(s, MASK_HOLDING, false, step);
  if (keep == UINT32_MAX)
    return -ENOENT;
  /* Newer steps and slots in flight go first, so that no moment shows a
   * newer step beside the restore point. */
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    if (i == keep)
      continue;
    uint32_t st = state_load(s, i);
    if (!snap_state_holds_data(st) || get64(s, i, SLOT_STEP) > step)
      slot_free(s, i);
  }
  slot_make_committed(s, keep);
  supersede_older(s, keep, false);
  return PT_OK;
}

int snap_slot_set_restore_missing(struct snap_store *s, uint64_t step)
{
  int freed = 0;
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    uint32_t st = state_load(s, i);
    if (st == SNAP_FREE)
      continue;
    if (st != SNAP_COMMITTED || get64(s, i, SLOT_STEP) >= step) {
      slot_free(s, i);
      freed++;
    }
  }
  return freed;
}

/* snap_slot_verify() in three parts, so that snap_slot_verify_many() can
 * share one slot's blocks among threads: the record (before any block is
 * read), the blocks [b0, b1) of the slot's table, and the table's own CRC and
 * the blob (after every block matched). Each returns PT_OK or the code, with
 * *bad set as snap_slot_verify() documents. */
static int verify_head(const struct snap_store *s, uint32_t slot, uint32_t *bad)
{
  struct snap_slot_info info;
  snap_slot_get(s, slot, &info);
  if (!info.record_ok) {
    *bad = SNAP_BAD_RECORD(s->lay.nblocks);
    return PT_ECHECKSUM;
  }
  if (!snap_state_holds_data(info.state))
    return PT_ESTATE;
  return PT_OK;
}

static int verify_blocks(const struct snap_store *s, uint32_t slot, uint32_t b0,
                         uint32_t b1, uint32_t *bad)
{
  const uint32_t *crcs = snap_slot_crcs(s, slot);
  const uint8_t *data = snap_slot_data(s, slot);

  for (uint32_t r = 0; r < s->lay.nregions; r++) {
    const struct snap_region *reg = &s->regions[r];
    uint32_t lo = reg->first_block, hi = reg->first_block + reg->nblocks;
    if (hi <= b0 || lo >= b1)
      continue;
    for (uint32_t g = lo > b0 ? lo : b0; g < hi && g < b1; g++) {
      uint64_t off = (uint64_t)(g - lo) * KERN_BLOCK_SIZE;
      uint64_t len = reg->bytes - off;
      if (len > KERN_BLOCK_SIZE)
        len = KERN_BLOCK_SIZE;
      if (crc32c(data + reg->offset + off, len) != crcs[g]) {
        *bad = g;
        return PT_ECHECKSUM;
      }
    }
  }
  return PT_OK;
}

static int verify_tail(const struct snap_store *s, uint32_t slot, uint32_t *bad)
{
  struct snap_slot_info info;
  uint32_t recorded = atomic_load_explicit(
      snap_slot_u32_ptr(s, slot, SLOT_TABLE_CRC), memory_order_relaxed);

  if (table_crc(s, slot) != recorded) {
    /* Every block matches a table that is not the one sealed. */
    *bad = s->lay.nblocks;
    return PT_ECHECKSUM;
  }
  snap_slot_get(s, slot, &info);
  uint32_t tb, tc;
  trailer_get(s, slot, &tb, &tc);
  if (tb != info.blob_bytes || tc != info.blob_crc ||
      info.blob_bytes > s->lay.blob_max ||
      crc32c(snap_slot_blob(s, slot), info.blob_bytes) != info.blob_crc) {
    *bad = SNAP_BAD_BLOB(s->lay.nblocks);
    return PT_ECHECKSUM;
  }
  return PT_OK;
}

int snap_slot_verify(const struct snap_store *s, uint32_t slot,
                     uint32_t *bad_block)
{
  uint32_t bad = 0;
  int rc;

  if (slot >= s->lay.nslots)
    return -EINVAL;
  if ((rc = verify_head(s, slot, &bad)) == PT_OK &&
      (rc = verify_blocks(s, slot, 0, s->lay.nblocks, &bad)) == PT_OK)
    rc = verify_tail(s, slot, &bad);
  if (rc == PT_ECHECKSUM && bad_block != NULL)
    *bad_block = bad;
  return rc;
}

/* The shared work of snap_slot_verify_many(): the slots' blocks cut into
 * pieces of VERIFY_PIECE blocks, which the threads take in turn, so that one
 * slot is read by every thread; a piece of a slot already found damaged is
 * skipped. Each slot's first bad block is the smallest any piece found. */
#define VERIFY_PIECE 32u

struct verify_slot {
  int rc;
  atomic_uint bad; /* UINT32_MAX: no bad block yet */
};

struct verify_job {
  const struct snap_store *s;
  const uint32_t *slots;
  uint32_t n, per_slot; /* pieces per slot */
  atomic_uint next;
  atomic_bool faulted;  /* a helper thread's read faulted */
  struct verify_slot *v;
};

static int verify_pieces(void *arg)
{
  struct verify_job *j = arg;
  for (;;) {
    uint32_t p = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (p >= j->n * j->per_slot || atomic_load(&j->faulted))
      return 0;
    uint32_t i = p / j->per_slot, piece = p % j->per_slot;
    struct verify_slot *v = &j->v[i];
    uint32_t b0 = piece * VERIFY_PIECE, b1 = b0 + VERIFY_PIECE, bad;
    if (v->rc != PT_OK || b0 >= j->s->lay.nblocks ||
        atomic_load_explicit(&v->bad, memory_order_relaxed) < b0)
      continue;
    if (verify_blocks(j->s, j->slots[i], b0, b1, &bad) != PT_OK) {
      unsigned cur = atomic_load_explicit(&v->bad, memory_order_relaxed);
      while (bad < cur && !atomic_compare_exchange_weak_explicit(
                              &v->bad, &cur, bad, memory_order_relaxed,
                              memory_order_relaxed))
        ;
    }
  }
}

/* A helper thread: its reads guarded, a fault ends every thread's work (the
 * caller's thread is guarded too: a fault there must not leave this
 * function while helpers still read the mapping). */
static void *verify_worker(void *arg)
{
  struct verify_job *j = arg;
  if (snap_fault_run(j->s, verify_pieces, j) == -EFAULT)
    atomic_store(&j->faulted, true);
  return NULL;
}

/* The records before any block is read, and the tables and blobs after
 * every block matched: the caller's thread, guarded like the blocks. */
struct verify_ends {
  struct verify_job *j;
  int *rcs;
  uint32_t *bad_blocks;
};

static int verify_heads(void *arg)
{
  struct verify_job *j = ((struct verify_ends *)arg)->j;
  for (uint32_t i = 0; i < j->n; i++) {
    uint32_t bad = 0;
    j->v[i].rc = j->slots[i] >= j->s->lay.nslots ? -EINVAL
                                                 : verify_head(j->s, j->slots[i], &bad);
    atomic_init(&j->v[i].bad, j->v[i].rc == PT_ECHECKSUM ? bad : UINT32_MAX);
  }
  return 0;
}

static int verify_tails(void *arg)
{
  struct verify_ends *e = arg;
  struct verify_job *j = e->j;
  for (uint32_t i = 0; i < j->n; i++) {
    uint32_t bad = atomic_load_explicit(&j->v[i].bad, memory_order_relaxed);
    int rc = j->v[i].rc;
    if (rc == PT_OK && bad != UINT32_MAX)
      rc = PT_ECHECKSUM;
    else if (rc == PT_OK)
      rc = verify_tail(j->s, j->slots[i], &bad);
    e->rcs[i] = rc;
    if (e->bad_blocks != NULL)
      e->bad_blocks[i] = rc == PT_ECHECKSUM ? bad : 0;
  }
  return 0;
}

void snap_slot_verify_many(const struct snap_store *s, const uint32_t *slots,
                           uint32_t n, uint32_t threads, int *rcs,
                           uint32_t *bad_blocks)
{
  pthread_t tids[SNAP_MAX_SLOTS];
  struct verify_slot v[SNAP_MAX_SLOTS];
  uint32_t started = 0;
  bool faulted = false;

  if (n > SNAP_MAX_SLOTS) {
    /* No store has more slots; any beyond that many are not slots. */
    for (uint32_t i = SNAP_MAX_SLOTS; i < n; i++)
      rcs[i] = -EINVAL;
    n = SNAP_MAX_SLOTS;
  }
  struct verify_job job = {
      .s = s, .slots = slots, .n = n, .v = v,
      .per_slot = (s->lay.nblocks + VERIFY_PIECE - 1) / VERIFY_PIECE};
  struct verify_ends ends = {.j = &job, .rcs = rcs, .bad_blocks = bad_blocks};
  if (job.per_slot == 0)
    job.per_slot = 1;
  atomic_init(&job.next, 0);
  atomic_init(&job.faulted, false);
  if (snap_fault_run(s, verify_heads, &ends) == -EFAULT) {
    faulted = true;
    goto out;
  }
  uint64_t pieces = (uint64_t)n * job.per_slot;
  if (threads > SNAP_MAX_SLOTS)
    threads = SNAP_MAX_SLOTS;
  if (threads > pieces)
    threads = (uint32_t)pieces;
  for (uint32_t t = 1; t < threads; t++) {
    if (pthread_create(&tids[started], NULL, verify_worker, &job) != 0)
      break; /* the threads already started and the caller do the rest */
    started++;
  }
  if (snap_fault_run(s, verify_pieces, &job) == -EFAULT)
    atomic_store(&job.faulted, true);
  for (uint32_t t = 0; t < started; t++)
    pthread_join(tids[t], NULL);
  faulted = atomic_load(&job.faulted) ||
            snap_fault_run(s, verify_tails, &ends) == -EFAULT;
out:
  for (uint32_t i = 0; faulted && i < n; i++) {
    rcs[i] = -EFAULT;
    if (bad_blocks != NULL)
      bad_blocks[i] = 0;
  }
}

int snap_slot_newest_committed(const struct snap_store *s, uint32_t *slot,
                               uint64_t *step)
{
  uint32_t i = newest_in(s, MASK_COMMITTED, true, 0);
  if (i == UINT32_MAX)
    return PT_ENOSNAP;
  if (slot != NULL)
    *slot = i;
  if (step != NULL)
    *step = get64(s, i, SLOT_STEP);
  return PT_OK;
}

int snap_slot_find_step(const struct snap_store *s, uint64_t step,
                        uint32_t *slot)
{
  uint32_t i = newest_in(s, MASK_HOLDING, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  if (slot != NULL)
    *slot = i;
  return PT_OK;
}
