/*
 * snap_store.h — one rank's snapshot object in POSIX shared memory.
 *
 * Ownership. The SMP of rank r creates the object /<prefix>pt.<job>.<r> (mode
 * 0600) the first time its trainer says hello, and is the only process that
 * changes slot states. The trainer (libpt) maps the same object read-write to
 * copy its regions into the slot the SMP assigned and to write that slot's
 * checksum table, and reads a committed slot back on restore. The object
 * outlives every process; ptd node unlinks it when the job completes (unless
 * told to keep it) and renames a damaged one aside. After any crash the next
 * SMP re-opens and re-validates it with snap_store_open().
 *
 * Layout (all integers little-endian, offsets from the start of the object):
 *
 *   offset  bytes  field
 *   0       8      magic "PTSNAP\0\1"
 *   8       4      format version (SNAP_VERSION)
 *   12      4      header bytes (= SNAP_HEADER_BYTES)
 *   16      8      total object bytes
 *   24      64     job name, NUL-padded
 *   88      4      rank
 *   92      4      world size
 *   96      4      number of slots (2..SNAP_MAX_SLOTS)
 *   100     4      number of regions (1..SNAP_MAX_REGIONS)
 *   104     4      checksum block size (KERN_BLOCK_SIZE)
 *   108     4      checksum blocks per slot (nblocks)
 *   112     8      slot data bytes (sum of regions, each 4 KiB aligned)
 *   120     8      slot stride (data bytes rounded up to 2 MiB)
 *   128     8      offset of the region table
 *   136     8      offset of the slot table
 *   144     8      offset of the checksum tables
 *   152     8      offset of the first slot's data (2 MiB aligned)
 *   160     8      offset of the parity area (2 MiB aligned; 0 bytes today)
 *   168     8      parity area bytes
 *   176     8      creation time, ns since the epoch
 *   184     16     job instance id (random, made when the job started)
 *   200     4      CRC32C of bytes 0..199 (the immutable header)
 *   204     ...    zero up to the region table
 *
 *   region table: nregions entries of 128 bytes:
 *     0 name[64] NUL-padded, 64 bytes u64, 72 offset in slot u64,
 *     80 kind u32 (0 host, 1 device), 84 first checksum block u32,
 *     88 number of blocks u32, 92..123 zero, 124 CRC32C of bytes 0..123
 *   slot table: nslots entries of 64 bytes:
 *     0 state u32 (atomic; enum snap_state), 4 reserved u32,
 *     8 step u64, 16 generation u64, 24 time writing began ns u64,
 *     32 time sealed ns u64, 40 time committed ns u64,
 *     48 CRC32C of the slot's checksum table u32 (set at seal), 52..63 zero
 *   checksum tables: nslots tables of nblocks u32, each table 64-byte aligned
 *   slot data: nslots areas of slot-stride bytes, 2 MiB aligned
 *   parity: parity-bytes, 2 MiB aligned (room for erasure coding)
 *
 * Slot states go FREE -> WRITING -> SEALED -> PROTECTED -> COMMITTED -> FREE.
 * Each transition is one atomic release store made after the data it describes
 * is complete; readers load the state with acquire. A slot found WRITING by
 * snap_store_recover() is invalid and becomes FREE. The newest COMMITTED slot
 * is never handed out for writing; older COMMITTED slots stay readable (a
 * fallback when the newest is damaged) until a writer needs their space.
 *
 * PROTECTED is the first phase of a commit that must hold on every rank or on
 * none: ptd node pins a step that every rank sealed (snap_slot_protect), and
 * only when every rank pinned it does it commit the step everywhere; if one
 * rank no longer holds it, the others drop their pin (snap_slot_unprotect).
 * A PROTECTED slot is never handed out for writing, so between the two
 * phases no rank can lose the step that the others are about to commit, and
 * the previous committed step (still the newest COMMITTED one) stays too.
 * When erasure coding lands, PROTECTED will also mean that the slot's parity
 * was acknowledged by the other nodes of its coding group.
 */
#ifndef PT_SNAP_STORE_H
#define PT_SNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC "PTSNAP\0\1"
#define SNAP_VERSION 2u
#define SNAP_HEADER_BYTES 4096u
#define SNAP_ALIGN ((uint64_t)2 << 20)
#define SNAP_REGION_ALIGN 4096u
#define SNAP_NAME_MAX 64      /* including the NUL */
#define SNAP_JOB_MAX 64       /* including the NUL */
#define SNAP_MAX_REGIONS 1024
#define SNAP_MAX_SLOTS 8
#define SNAP_INSTANCE_BYTES 16 /* the job instance id */

enum snap_state {
  SNAP_FREE = 0,
  SNAP_WRITING = 1,
  SNAP_SEALED = 2,
  SNAP_PROTECTED = 3,
  SNAP_COMMITTED = 4,
};
const char *snap_state_name(uint32_t state);

/* A region as the trainer declares it. */
struct snap_region_desc {
  char name[SNAP_NAME_MAX];
  uint64_t bytes;
  uint32_t kind; /* 0 host, 1 device */
};

/* A region as laid out in the object. */
struct snap_region {
  char name[SNAP_NAME_MAX];
  uint64_t bytes;
  uint64_t offset;      /* within a slot's data area */
  uint32_t kind;
  uint32_t first_block; /* index into a slot's checksum table */
  uint32_t nblocks;
};

struct snap_slot_info {
  uint32_t state;
  uint64_t step, generation;
  uint64_t t_writing_ns, t_sealed_ns, t_committed_ns;
};

struct snap_params {
  const char *job;
  uint32_t rank, world;
  uint32_t nslots;                        /* 2..SNAP_MAX_SLOTS */
  const struct snap_region_desc *regions; /* IN: nregions entries */
  uint32_t nregions;
  uint64_t parity_bytes;                  /* 0 for now */
  uint64_t budget_bytes;                  /* 0: no budget */
  const uint8_t *instance;                /* IN: SNAP_INSTANCE_BYTES, the
                                           * job instance; NULL: all zero */
  bool huge_pages;                        /* back the object with huge pages
                                           * where /dev/shm allows it */
};

struct snap_store;

/* Object name for a job and rank: "/<prefix>pt.<job>.<rank>". prefix may be
 * NULL or "". -ENAMETOOLONG when it does not fit in len; -EINVAL for an empty
 * job or a '/' in job or prefix. */
int snap_store_name(char *out, size_t len, const char *prefix, const char *job,
                    uint32_t rank);

/* Total bytes of the object these params describe; 0 when they are invalid. */
uint64_t snap_store_bytes_needed(const struct snap_params *p);

/* Creates, sizes with posix_fallocate and pre-faults a new object.
 * Refusals, each with a sentence in errbuf naming the numbers:
 * PT_EBUDGET (needs more than budget_bytes), -ENOSPC (not enough room in
 * /dev/shm: bytes needed and available), -EEXIST, -EINVAL (bad params).
 * OUT: *out, closed with snap_store_close(). errbuf may be NULL. */
int snap_store_create(struct snap_store **out, const char *name,
                      const struct snap_params *p, char *errbuf, size_t errlen);

/* Huge pages (snap_huge.c). With snap_params.huge_pages the object is made
 * under MADV_HUGEPAGE and pre-faulted before it is fallocated, so tmpfs
 * gives it 2 MiB pages when /dev/shm is mounted with huge=within_size,
 * huge=always or huge=advise (shmem_enabled not "deny"); /dev/shm's default,
 * huge=never, gives 4 KiB pages, and so does a kernel without THP. Names,
 * layout and restart survival are the same either way; every process that
 * maps a huge-page object maps it with one entry per 2 MiB.
 *
 * snap_store_huge_bytes: bytes of the creator's mapping backed by huge pages
 * (ShmemPmdMapped in /proc/self/smaps), measured by snap_store_create when
 * huge pages were asked for; 0 otherwise and for an opened object.
 * snap_huge_pages_why: why /dev/shm gives no huge pages, as one sentence
 * (what to change), or "" when nothing configured forbids them. */
uint64_t snap_store_huge_bytes(const struct snap_store *s);
void snap_huge_pages_why(char *buf, size_t len);
/* Bytes of the mapping that starts at base that are mapped with huge pages
 * in this process; 0 when unknown. */
uint64_t snap_huge_mapped_bytes(const void *base);

/* Opens and validates an existing object: size, magic, version, header and
 * region-table checksums, every offset and count in range, slot states known.
 * Never crashes on a garbage, truncated or foreign object: returns
 * PT_EFORMAT / PT_EVERSION / -ENOENT with a sentence in errbuf. */
int snap_store_open(struct snap_store **out, const char *name, char *errbuf,
                    size_t errlen);

/* Unmaps (the object stays). s may be NULL. */
void snap_store_close(struct snap_store *s);
/* shm_unlink; -ENOENT when absent. */
int snap_store_unlink(const char *name);
/* Renames a damaged object aside in /dev/shm as "<name>.bad-<unix time>" so
 * nothing is lost and the name is free again. OUT: newname (may be NULL). */
int snap_store_quarantine(const char *name, char *newname, size_t len);

/* Accessors. */
const char *snap_store_job(const struct snap_store *s);
uint32_t snap_store_rank(const struct snap_store *s);
uint32_t snap_store_world(const struct snap_store *s);
uint32_t snap_store_nslots(const struct snap_store *s);
uint32_t snap_store_nregions(const struct snap_store *s);
uint32_t snap_store_nblocks(const struct snap_store *s);
uint64_t snap_store_total_bytes(const struct snap_store *s);
uint64_t snap_store_slot_bytes(const struct snap_store *s); /* data bytes */
/* Creation time (ns since the epoch): tells a re-created object under the
 * same name from the one mapped earlier. */
uint64_t snap_store_ctime_ns(const struct snap_store *s);
/* The job instance id recorded at creation: SNAP_INSTANCE_BYTES bytes. */
const uint8_t *snap_store_instance(const struct snap_store *s);
void *snap_store_base(const struct snap_store *s);         /* the mapping */
const struct snap_region *snap_store_region(const struct snap_store *s,
                                            uint32_t i);
/* True when the object's region table equals regions[] (names, sizes, kinds,
 * order). */
bool snap_store_regions_match(const struct snap_store *s,
                              const struct snap_region_desc *regions,
                              uint32_t n);
void *snap_slot_data(const struct snap_store *s, uint32_t slot);
uint32_t *snap_slot_crcs(const struct snap_store *s, uint32_t slot);
void snap_slot_get(const struct snap_store *s, uint32_t slot,
                   struct snap_slot_info *out);

/* ---- the slot state machine; only the SMP calls these ---- */

/* After a crash: every WRITING slot becomes FREE. Returns how many. */
int snap_store_recover(struct snap_store *s);

/* Picks a slot for step and marks it WRITING with a new generation: a FREE
 * slot first, else the oldest SEALED slot or COMMITTED slot that is not the
 * newest COMMITTED one. Never a PROTECTED slot (pinned by a commit under
 * way), never the newest COMMITTED one (the restore point), never a WRITING
 * one. PT_SKIPPED when none may be used. OUT: slot, generation.
 * Age is by step (then generation): "oldest" is the lowest step and the
 * newest COMMITTED slot is the one with the highest step. Generations grow
 * over the object's life (one more than any slot's), so a slot taken from a
 * writer never comes back to it under the same generation. */
int snap_slot_acquire(struct snap_store *s, uint64_t step, uint32_t *slot,
                      uint64_t *generation);

/* WRITING(slot, generation) -> SEALED. The checksum table must already be
 * written. PT_ESTALE when the slot is no longer WRITING with that generation;
 * -EINVAL for a bad slot or a step that differs from the acquired one. */
int snap_slot_seal(struct snap_store *s, uint32_t slot, uint64_t generation,
                   uint64_t step);

/* WRITING -> FREE for a writer that went away or failed. */
int snap_slot_abort(struct snap_store *s, uint32_t slot, uint64_t generation);

/* The first phase of a commit: the SEALED slot holding step becomes
 * PROTECTED (the newest one, should two hold it). PT_OK too when a slot
 * holding step is PROTECTED already (a repeated request). -ENOENT when no
 * SEALED or PROTECTED slot holds step: it was never sealed here, it was
 * handed to a newer step, or it is COMMITTED already. */
int snap_slot_protect(struct snap_store *s, uint64_t step);

/* The commit of step is abandoned: its PROTECTED slot becomes SEALED again
 * (an ordinary uncommitted step, reusable by the next acquire). -ENOENT when
 * no PROTECTED slot holds step. */
int snap_slot_unprotect(struct snap_store *s, uint64_t step);

/* The slot holding step becomes COMMITTED: a PROTECTED one (the second phase
 * of a commit), or a SEALED one (an SMP that commits alone, --autocommit).
 * PT_OK also when step is COMMITTED already (a repeated request). Then, for
 * every other slot:
 *   - SEALED with an older step, or SEALED/PROTECTED/COMMITTED with the same
 *     step (a duplicate): FREE, as no commit of it can follow any more;
 *   - PROTECTED with an older step: SEALED. Its commit is over (one commit
 *     runs at a time, and a newer one just ended), but ptd node decides it
 *     before this rank hears of it, so other ranks may hold that step
 *     COMMITTED: its bytes are kept, as a restore candidate, and only the
 *     pin is released so that the slot can be reused;
 *   - COMMITTED with an older step: stays, as a fallback;
 *   - newer steps and WRITING slots: untouched.
 * -ENOENT, nothing changed, when no SEALED/PROTECTED/COMMITTED slot holds
 * step. */
int snap_slot_commit(struct snap_store *s, uint64_t step);

/* Restore point chosen: the slot holding step stays (becomes COMMITTED if it
 * was SEALED or PROTECTED); every slot with a newer step, and every slot
 * neither SEALED, PROTECTED nor COMMITTED, becomes FREE; every other SEALED
 * or PROTECTED slot (older steps, duplicates) becomes FREE too, so that no
 * pin outlives the restore; older COMMITTED ones stay. has_step false:
 * every slot becomes FREE (the job starts over). -ENOENT, nothing changed,
 * when no SEALED/PROTECTED/COMMITTED slot holds step. */
int snap_store_set_restore(struct snap_store *s, bool has_step, uint64_t step);

/* Checks slot's checksum table against its recorded CRC and every data block
 * against the table. PT_OK, PT_ECHECKSUM, or PT_ESTATE when the slot is not
 * SEALED/PROTECTED/COMMITTED. OUT: bad_block (first bad block) may be NULL;
 * it is nblocks when every block matches a table whose recorded CRC does not
 * (the table or its CRC was damaged). */
int snap_slot_verify(const struct snap_store *s, uint32_t slot,
                     uint32_t *bad_block);

/* The newest COMMITTED slot. PT_ENOSNAP when none. */
int snap_store_newest_committed(const struct snap_store *s, uint32_t *slot,
                                uint64_t *step);
/* The slot holding step in state SEALED, PROTECTED or COMMITTED; -ENOENT. */
int snap_store_find_step(const struct snap_store *s, uint64_t step,
                         uint32_t *slot);

#endif /* PT_SNAP_STORE_H */
