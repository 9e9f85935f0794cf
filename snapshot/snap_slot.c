/*
 * snap_slot.c — the slot state machine of a snapshot object and the checks
 * of a slot's data against its checksum table.
 *
 * Only the SMP changes slot states; the trainer maps the object too and reads
 * them. Every field of a slot-table entry is an atomic in the shared mapping:
 * the SMP writes the step, generation, times and table checksum first
 * (relaxed) and then publishes them with one release store of the state;
 * readers load the state with acquire before they read the rest. A slot that
 * is taken over for a new step is first set FREE, so that no reader can see
 * its old state next to the new step.
 *
 * Age is counted in steps: "older" and "newer" compare step numbers, and the
 * newest COMMITTED slot is the one with the highest step (the higher
 * generation on a tie). Generations grow over the whole life of the object:
 * each acquire stores one more than the highest generation any slot holds,
 * and freeing a slot keeps its generation, so a writer holding a slot that
 * was taken from it always gets PT_ESTALE.
 *
 * A commit runs in two phases across the ranks (ptd node drives them):
 * protect pins a SEALED slot (PROTECTED: never handed out), commit makes it
 * COMMITTED, unprotect drops the pin when the commit is abandoned.
 */
#include <errno.h>
#include <time.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_internal.h"

static uint32_t state_load(const struct snap_store *s, uint32_t i)
{
  return atomic_load_explicit(snap_slot_state_ptr(s, i), memory_order_acquire);
}

static void state_store(const struct snap_store *s, uint32_t i, uint32_t v)
{
  atomic_store_explicit(snap_slot_state_ptr(s, i), v, memory_order_release);
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

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool holds_data(uint32_t state)
{
  return state == SNAP_SEALED || state == SNAP_PROTECTED ||
         state == SNAP_COMMITTED;
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
    if (st > SNAP_COMMITTED || !(mask & (1u << st)))
      continue;
    if (!any_step && get64(s, i, SLOT_STEP) != step)
      continue;
    if (best == UINT32_MAX || older(s, best, i))
      best = i;
  }
  return best;
}

#define MASK_COMMITTED (1u << SNAP_COMMITTED)
#define MASK_PROTECTED (1u << SNAP_PROTECTED)
#define MASK_SEALED (1u << SNAP_SEALED)
#define MASK_HOLDING (MASK_SEALED | MASK_PROTECTED | MASK_COMMITTED)

static void slot_free(const struct snap_store *s, uint32_t i)
{
  if (state_load(s, i) != SNAP_FREE)
    state_store(s, i, SNAP_FREE);
}

static void slot_make_committed(const struct snap_store *s, uint32_t i)
{
  if (state_load(s, i) == SNAP_COMMITTED)
    return;
  set64(s, i, SLOT_T_COMMITTED, now_ns());
  state_store(s, i, SNAP_COMMITTED);
}

void snap_slot_get(const struct snap_store *s, uint32_t slot,
                   struct snap_slot_info *out)
{
  memset(out, 0, sizeof(*out));
  if (slot >= s->lay.nslots)
    return;
  out->state = state_load(s, slot);
  out->step = get64(s, slot, SLOT_STEP);
  out->generation = get64(s, slot, SLOT_GENERATION);
  out->t_writing_ns = get64(s, slot, SLOT_T_WRITING);
  out->t_sealed_ns = get64(s, slot, SLOT_T_SEALED);
  out->t_committed_ns = get64(s, slot, SLOT_T_COMMITTED);
}

int snap_store_recover(struct snap_store *s)
{
  int n = 0;
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    if (state_load(s, i) == SNAP_WRITING) {
      state_store(s, i, SNAP_FREE);
      n++;
    }
  }
  return n;
}

int snap_slot_acquire(struct snap_store *s, uint64_t step, uint32_t *slot,
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
    if (pick == UINT32_MAX && state_load(s, i) == SNAP_FREE)
      pick = i;
  }
  if (pick == UINT32_MAX) {
    /* No FREE slot: the oldest SEALED or COMMITTED one, never the newest
     * COMMITTED (the restore point). PROTECTED slots are pinned by a commit
     * under way and WRITING ones have a writer. */
    uint32_t keep = newest_in(s, MASK_COMMITTED, true, 0);
    for (uint32_t i = 0; i < s->lay.nslots; i++) {
      uint32_t st = state_load(s, i);
      if (i == keep || (st != SNAP_SEALED && st != SNAP_COMMITTED))
        continue;
      if (pick == UINT32_MAX || older(s, i, pick))
        pick = i;
    }
    if (pick == UINT32_MAX)
      return PT_SKIPPED;
    state_store(s, pick, SNAP_FREE);
  }
  uint64_t gen = max_gen + 1;
  set64(s, pick, SLOT_STEP, step);
  set64(s, pick, SLOT_GENERATION, gen);
  set64(s, pick, SLOT_T_WRITING, now_ns());
  set64(s, pick, SLOT_T_SEALED, 0);
  set64(s, pick, SLOT_T_COMMITTED, 0);
  atomic_store_explicit(snap_slot_u32_ptr(s, pick, SLOT_TABLE_CRC), 0,
                        memory_order_relaxed);
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

static uint32_t table_crc(const struct snap_store *s, uint32_t slot)
{
  return snap_crc32c(snap_slot_crcs(s, slot), (size_t)s->lay.nblocks * 4);
}

int snap_slot_seal(struct snap_store *s, uint32_t slot, uint64_t generation,
                   uint64_t step)
{
  int rc = check_writer(s, slot, generation);
  if (rc != PT_OK)
    return rc;
  if (get64(s, slot, SLOT_STEP) != step)
    return -EINVAL;
  atomic_store_explicit(snap_slot_u32_ptr(s, slot, SLOT_TABLE_CRC),
                        table_crc(s, slot), memory_order_relaxed);
  set64(s, slot, SLOT_T_SEALED, now_ns());
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

int snap_slot_protect(struct snap_store *s, uint64_t step)
{
  if (newest_in(s, MASK_PROTECTED, false, step) != UINT32_MAX)
    return PT_OK; /* pinned already */
  uint32_t i = newest_in(s, MASK_SEALED, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  state_store(s, i, SNAP_PROTECTED);
  return PT_OK;
}

int snap_slot_unprotect(struct snap_store *s, uint64_t step)
{
  uint32_t i = newest_in(s, MASK_PROTECTED, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  state_store(s, i, SNAP_SEALED);
  return PT_OK;
}

/* What commit and set_restore share: slot `keep` holds the committed step.
 * Every other slot holding the same step is a duplicate and becomes FREE;
 * older SEALED slots are superseded and become FREE; older PROTECTED slots
 * become SEALED (keep_pinned_bytes, a commit: the bytes may be committed on
 * other ranks) or FREE (a restore point, which clears every pin); older
 * COMMITTED slots stay as fallbacks. */
static void supersede_older(const struct snap_store *s, uint32_t keep,
                            bool keep_pinned_bytes)
{
  uint64_t step = get64(s, keep, SLOT_STEP);
  for (uint32_t i = 0; i < s->lay.nslots; i++) {
    if (i == keep)
      continue;
    uint32_t st = state_load(s, i);
    uint64_t si = get64(s, i, SLOT_STEP);
    if (!holds_data(st) || si > step)
      continue;
    if (si == step || st == SNAP_SEALED)
      slot_free(s, i);
    else if (st == SNAP_PROTECTED)
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

int snap_store_set_restore(struct snap_store *s, bool has_step, uint64_t step)
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
    if (!holds_data(st) || get64(s, i, SLOT_STEP) > step)
      slot_free(s, i);
  }
  slot_make_committed(s, keep);
  supersede_older(s, keep, false);
  return PT_OK;
}

int snap_slot_verify(const struct snap_store *s, uint32_t slot,
                     uint32_t *bad_block)
{
  if (slot >= s->lay.nslots)
    return -EINVAL;
  if (!holds_data(state_load(s, slot)))
    return PT_ESTATE;
  const uint32_t *crcs = snap_slot_crcs(s, slot);
  const uint8_t *data = snap_slot_data(s, slot);
  uint32_t recorded = atomic_load_explicit(
      snap_slot_u32_ptr(s, slot, SLOT_TABLE_CRC), memory_order_relaxed);
  bool table_ok = table_crc(s, slot) == recorded;

  for (uint32_t r = 0; r < s->lay.nregions; r++) {
    const struct snap_region *reg = &s->regions[r];
    for (uint32_t b = 0; b < reg->nblocks; b++) {
      uint64_t off = (uint64_t)b * KERN_BLOCK_SIZE;
      uint64_t len = reg->bytes - off;
      if (len > KERN_BLOCK_SIZE)
        len = KERN_BLOCK_SIZE;
      if (snap_crc32c(data + reg->offset + off, len) !=
          crcs[reg->first_block + b]) {
        if (bad_block != NULL)
          *bad_block = reg->first_block + b;
        return PT_ECHECKSUM;
      }
    }
  }
  if (!table_ok) {
    /* Every block matches a table that is not the one sealed. */
    if (bad_block != NULL)
      *bad_block = s->lay.nblocks;
    return PT_ECHECKSUM;
  }
  return PT_OK;
}

int snap_store_newest_committed(const struct snap_store *s, uint32_t *slot,
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

int snap_store_find_step(const struct snap_store *s, uint64_t step,
                         uint32_t *slot)
{
  uint32_t i = newest_in(s, MASK_HOLDING, false, step);
  if (i == UINT32_MAX)
    return -ENOENT;
  if (slot != NULL)
    *slot = i;
  return PT_OK;
}
