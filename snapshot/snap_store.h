/*
 * snap_store.h — one rank's snapshot object in POSIX shared memory.
 *
 * Ownership. The SMP of rank r creates the object /<prefix>pt.<job>.<r> (mode
 * 0600, O_EXCL: never one that someone else made) the first time its trainer
 * says hello, and is the only process that changes slot states; it holds an
 * exclusive flock on the object for as long as it maps it, so that a second
 * SMP cannot drive the same slots. The trainer (libpt) maps the same object
 * read-write to copy its regions into the slot the SMP assigned and to write
 * that slot's checksum table, and reads a committed slot back on restore.
 * The object outlives every process; ptd node unlinks it when the job
 * completes (unless told to keep it); the SMP renames a damaged one aside.
 * After any crash the next SMP re-opens and re-validates it with
 * snap_store_open(), which refuses an object of another owner or mode, and
 * uses it only when its job instance id, world size and code are its
 * job's.
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
 *   112     8      slot data bytes (the regions, each 64-byte aligned, then
 *                  the blob area)
 *   120     8      slot stride (data bytes rounded up to 2 MiB)
 *   128     8      offset of the region table
 *   136     8      offset of the slot table
 *   144     8      offset of the checksum tables
 *   152     8      offset of the first slot's data (2 MiB aligned)
 *   160     8      offset of slot 0's parity area (2 MiB aligned)
 *   168     8      parity bytes per slot (see "Parity" below; 0: no code)
 *   176     8      creation time, ns since the epoch
 *   184     16     job instance id (random, made when the job started)
 *   200     8      blob area bytes per slot (SNAP_BLOB_MAX)
 *   208     8      offset of the blob area within a slot's data (64-aligned)
 *   216     4      code k: data chunks per stripe (0: the job has no code)
 *   220     4      code m: parity chunks per stripe (0: no code)
 *   224     8      parity stride (parity bytes per slot rounded up to 2 MiB)
 *   232     4      CRC32C of bytes 0..231 (the immutable header)
 *   236     ...    zero up to the region table
 *
 *   region table: nregions entries of 320 bytes:
 *     0 name[256] NUL-padded, 256 bytes u64, 264 offset in slot u64,
 *     272 kind u32 (0 host, 1 device), 276 first checksum block u32,
 *     280 number of blocks u32, 284..315 zero, 316 CRC32C of bytes 0..315
 *   slot table: nslots records of 64 bytes:
 *     0 state u32 and 4 record CRC u32, together one 64-bit atomic word,
 *     8 step u64, 16 generation u64, 24 time writing began ns u64,
 *     32 time sealed ns u64, 40 time committed ns u64,
 *     48 CRC32C of the slot's checksum table u32 (set at seal),
 *     52 blob bytes u32, 56 blob CRC32C u32 (both set at seal), 60 zero u32.
 *     The record CRC is the CRC32C of the state (4 bytes, without the busy
 *     bit) followed by bytes 8..63.
 *   checksum tables: nslots tables of nblocks + 2 u32, each table 64-byte
 *     aligned: one CRC per block, then the trailer (the blob's bytes, then
 *     the blob's CRC32C), all written by the trainer
 *   slot data: nslots areas of slot-stride bytes, 2 MiB aligned; in each,
 *     region i at its offset (64-byte aligned, so a 4-byte region costs 64
 *     bytes a slot), then the blob area of SNAP_BLOB_MAX bytes
 *   parity: nslots areas of parity-stride bytes, 2 MiB aligned, after the
 *     slot data; slot i's area (parity-bytes used) at parity offset + i *
 *     parity stride; none (0 bytes) when the job has no code
 *
 * Parity. Under a code k+m (a coding group of k+m members, DESIGN.md) each
 * member's slot data (S = slot data bytes, regions and blob area) is cut
 * into k chunks, and the member holds m parity chunks of other members'
 * stripes for each slot. So a slot's parity area is m chunks of
 *   chunk = ceil(S / k) rounded up to SNAP_PARITY_CHUNK_ALIGN (64: ISA-L's
 *           fragments are 64-byte aligned, and shorter ones run scalar)
 * that is parity bytes per slot = m * chunk, and each slot's area starts on
 * a 2 MiB boundary (huge pages; one area per slot so that a slot's parity is
 * reused, pinned and freed with its slot). The code is in the header: an
 * object made under another code is not the job's (snap_store_code()).
 * Nothing fills the areas yet; they are pre-faulted with the rest.
 *
 * Slot records. The SMP is the only writer. A record is valid when its CRC
 * matches the state and fields beside it; a record that does not match
 * (damaged, forged, or left half-written by an SMP that died) is treated as
 * holding nothing: never restored, never committed, and freed by
 * snap_slot_recover(). The writer's order for a transition:
 *   1. when fields other than the state change: store the word with the
 *      busy bit (SNAP_STATE_BUSY) set, then a release fence;
 *   2. store the fields (relaxed atomics);
 *   3. one release store of the word: the new state and the CRC over it
 *      and the fields of step 2.
 * A reader in another process (snap_slot_get) loads the word with acquire,
 * the fields, then after an acquire fence the word again: a busy bit or a
 * word that changed means a transition was under way, and it reads again
 * (for at most SNAP_RECORD_WAIT_MS); a stable word whose CRC does not match
 * the fields is a damaged record.
 *
 * Slot states go FREE -> WRITING -> SEALED -> PINNED -> COMMITTED -> FREE.
 * Each transition is one atomic release store made after the data it describes
 * is complete; readers load the state with acquire. A slot found WRITING by
 * snap_slot_recover() is invalid and becomes FREE. The newest COMMITTED slot
 * is never handed out for writing; older COMMITTED slots stay readable (a
 * fallback when the newest is damaged) until a writer needs their space.
 *
 * PINNED is the first phase of a commit that must hold on every rank or on
 * none: ptd node pins a step that every rank sealed (snap_slot_pin), and
 * only when every rank pinned it does it commit the step everywhere; if one
 * rank no longer holds it, the others drop their pin (snap_slot_unpin).
 * A PINNED slot is never handed out for writing, so between the two
 * phases no rank can lose the step that the others are about to commit, and
 * the previous committed step (still the newest COMMITTED one) stays too.
 *
 * PROTECTED is a PINNED slot whose chunks the other members of its coding
 * group acknowledged and whose parity rows for the step are complete
 * (SEALED -> PINNED -> PROTECTED -> COMMITTED; snap_slot_protect, driven
 * by daemon/smp/smp_protect.h). Every other function treats a PROTECTED
 * slot as a PINNED one (holds data, never handed out, committed, unpinned
 * or cleared by a restore as PINNED is), which never drops bytes a commit
 * may still need; an unpin makes it SEALED, as it does a PINNED one.
 */
#ifndef PT_SNAP_STORE_H
#define PT_SNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC "PTSNAP\0\1"
#define SNAP_VERSION 4u /* 3 -> 4: PINNED named apart from PROTECTED;
                         * a parity area per slot, sized from the code */
#define SNAP_HEADER_BYTES 4096u
#define SNAP_ALIGN ((uint64_t)2 << 20)
#define SNAP_REGION_ALIGN 64u  /* of each region within a slot */
#define SNAP_NAME_MAX 256      /* region names, including the NUL */
#define SNAP_JOB_MAX 64        /* including the NUL */
#define SNAP_MAX_REGIONS 65536
#define SNAP_BLOB_MAX ((uint32_t)1 << 20) /* blob area bytes per slot */
#define SNAP_TABLE_TRAILER 2   /* u32 after a slot's block CRCs: blob bytes,
                                * blob CRC32C */
#define SNAP_STATE_BUSY 0x80000000u /* in a record's state: fields changing */
#define SNAP_RECORD_WAIT_MS 100 /* snap_slot_get: longest wait for a
                                 * transition under way */
#define SNAP_MAX_SLOTS 8
#define SNAP_INSTANCE_BYTES 16 /* the job instance id */
#define SNAP_EC_MAX_MEMBERS 32 /* k+m of a code, at most */
#define SNAP_PARITY_CHUNK_ALIGN 64u /* of a parity chunk's bytes */

/* The values are stored in the object; renumbering them is a new
 * SNAP_VERSION. Version 3 had PROTECTED = 3 meaning what PINNED means now
 * and COMMITTED = 4. */
enum snap_state {
  SNAP_FREE = 0,
  SNAP_WRITING = 1,
  SNAP_SEALED = 2,
  SNAP_PINNED = 3,    /* the first phase of a commit: never handed out */
  SNAP_PROTECTED = 4, /* PINNED, and its parity acknowledged by the coding
                       * group (snap_slot_protect); the functions below
                       * treat it as PINNED (holds data, never handed out,
                       * may be committed) */
  SNAP_COMMITTED = 5,
  SNAP_STATE_MAX = SNAP_COMMITTED, /* the highest known state */
};
/* "FREE", "WRITING", ... ; "UNKNOWN" for a value not above. */
const char *snap_state_name(uint32_t state);
/* True for the states whose slot holds a complete, sealed step: SEALED,
 * PINNED, PROTECTED and COMMITTED. Such a slot is a restore candidate and
 * can be verified; a slot in any other state holds nothing. */
static inline bool snap_state_holds_data(uint32_t state)
{
  return state == SNAP_SEALED || state == SNAP_PINNED ||
         state == SNAP_PROTECTED || state == SNAP_COMMITTED;
}

/* PINNED, or PINNED and protected by the group (PROTECTED). */
static inline bool snap_state_pinned(uint32_t state)
{
  return state == SNAP_PINNED || state == SNAP_PROTECTED;
}

/* True for the states of a sealed step whose commit is still to come:
 * SEALED, PINNED and PROTECTED. */
static inline bool snap_state_awaits_commit(uint32_t state)
{
  return snap_state_holds_data(state) && state != SNAP_COMMITTED;
}

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
  uint32_t state;  /* SNAP_FREE when !record_ok */
  uint64_t step, generation;
  uint64_t t_writing_ns, t_sealed_ns, t_committed_ns;
  uint32_t blob_bytes, blob_crc; /* the blob sealed with the slot */
  bool record_ok;  /* false: the record fails its checksum (or stayed busy
                    * past SNAP_RECORD_WAIT_MS); its fields are as read but
                    * must not be trusted, and the slot holds nothing */
};

struct snap_params {
  const char *job;
  uint32_t rank, world;
  uint32_t nslots;                        /* 2..SNAP_MAX_SLOTS */
  const struct snap_region_desc *regions; /* IN: nregions entries */
  uint32_t nregions;
  uint32_t ec_k, ec_m;                    /* the job's code k+m (see
                                           * "Parity"); both 0: no code,
                                           * no parity bytes */
  uint64_t budget_bytes;                  /* 0: no budget */
  const uint8_t *instance;                /* IN: SNAP_INSTANCE_BYTES, the
                                           * job instance; NULL: all zero */
  bool lock;                              /* take the object's lock
                                           * (snap_store_lock) at creation */
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

/* Creates (O_CREAT|O_EXCL, mode 0600: never an object someone else made),
 * sizes with posix_fallocate and pre-faults a new object.
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

/* Opens and validates an existing object: owner and mode, size, magic,
 * version, header and region-table checksums, every offset and count in
 * range, slot states known. Never crashes on a garbage, truncated or foreign
 * object: returns PT_EFORMAT / PT_EVERSION / -ENOENT with a sentence in
 * errbuf, and -EPERM (naming owner and mode) for an object not owned by the
 * effective uid or of a mode other than 0600, which is never read. */
int snap_store_open(struct snap_store **out, const char *name, char *errbuf,
                    size_t errlen);

/* Unmaps and closes the object's fd, dropping its lock (the object stays).
 * s may be NULL. */
void snap_store_close(struct snap_store *s);
/* The object's fd, open for the store's life (close-on-exec). */
int snap_store_fd(const struct snap_store *s);

/* The SMP's claim on its object: flock(LOCK_EX|LOCK_NB) on the store's fd,
 * held until snap_store_close(). -EBUSY, with a sentence naming the object
 * and (from /proc/locks) the pid holding it, when another process holds it. */
int snap_store_lock(struct snap_store *s, const char *name, char *errbuf,
                    size_t errlen);
/* Whether another process holds the lock of the object called name, without
 * opening it as a store: -EBUSY with a sentence, PT_OK (also when there is no
 * such object). For a caller about to set an object aside. */
int snap_store_lock_probe(const char *name, char *errbuf, size_t errlen);

/* Checks that the mapping may still be used: the object is not shorter than
 * the mapping (a truncated object faults, SIGBUS, when the mapping beyond
 * its end is touched) and, when full, that its header is the one validated
 * at open and that name still refers to this object. PT_EFORMAT (truncated,
 * header overwritten), -ENOENT (unlinked), -ESTALE (name replaced), each with
 * a sentence. A cheap fstat when !full; call it before every access that
 * could fault. */
int snap_store_check(const struct snap_store *s, const char *name, bool full,
                     char *errbuf, size_t errlen);
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
/* An instance id as 32 lowercase hex digits (+ NUL), and back: parse is
 * false unless hex is exactly 32 hex digits. */
void snap_store_instance_hex(const uint8_t id[SNAP_INSTANCE_BYTES],
                             char out[33]);
bool snap_store_instance_parse(const char *hex,
                               uint8_t id[SNAP_INSTANCE_BYTES]);
void *snap_store_base(const struct snap_store *s);         /* the mapping */
const struct snap_region *snap_store_region(const struct snap_store *s,
                                            uint32_t i);
/* True when the object's region table equals regions[] (names, sizes, kinds,
 * order). */
bool snap_store_regions_match(const struct snap_store *s,
                              const struct snap_region_desc *regions,
                              uint32_t n);
/* The code the object was made for: k data and m parity chunks per stripe,
 * both 0 for none. */
void snap_store_code(const struct snap_store *s, uint32_t *k, uint32_t *m);
/* Slot's parity area ("Parity" above): 2 MiB aligned, *len bytes (m chunks
 * of snap_store_parity_chunk() bytes). NULL and *len 0 when the object has
 * no code or slot is out of range. len may be NULL. */
void *snap_store_parity(const struct snap_store *s, uint32_t slot,
                        uint64_t *len);
/* The bytes of one parity chunk (0: no code). */
uint64_t snap_store_parity_chunk(const struct snap_store *s);
void *snap_slot_data(const struct snap_store *s, uint32_t slot);
/* The slot's checksum table: nblocks block CRCs, then the trailer
 * (SNAP_TABLE_TRAILER u32: the blob's bytes, then its CRC32C). */
uint32_t *snap_slot_crcs(const struct snap_store *s, uint32_t slot);
/* The slot's blob area: snap_store_blob_max() bytes, 64-byte aligned. */
void *snap_slot_blob(const struct snap_store *s, uint32_t slot);
uint32_t snap_store_blob_max(const struct snap_store *s);
/* A consistent copy of slot's record (see "Slot records" above): safe
 * while the SMP changes it in another process; waits at most
 * SNAP_RECORD_WAIT_MS for a transition under way. out->record_ok false: the
 * record is damaged and out->state is SNAP_FREE. */
void snap_slot_get(const struct snap_store *s, uint32_t slot,
                   struct snap_slot_info *out);
/* Slots whose record fails its checksum now; each one described in msg
 * (may be NULL), a sentence naming the object, slot and the stored and
 * computed CRCs. Such a slot holds nothing: no lookup below returns it,
 * snap_slot_verify() refuses it and snap_slot_recover() frees it. */
uint32_t snap_slot_bad_records(const struct snap_store *s, char *msg,
                               size_t len);

/* ---- the slot state machine; only the SMP calls these ---- */

/* After a crash: every WRITING slot, and every slot whose record fails its
 * checksum, becomes FREE (with a valid record). Returns how many. */
int snap_slot_recover(struct snap_store *s);

/* Picks a slot for step and marks it WRITING with a new generation: a FREE
 * slot first, else the oldest SEALED slot or COMMITTED slot that is not the
 * newest COMMITTED one. Never a PINNED or PROTECTED slot (held by a
 * commit under way), never the newest COMMITTED one (the restore point),
 * never a WRITING one. PT_SKIPPED when none may be used. OUT: slot, generation.
 * Age is by step (then generation): "oldest" is the lowest step and the
 * newest COMMITTED slot is the one with the highest step. Generations grow
 * over the object's life (one more than any slot's), so a slot taken from a
 * writer never comes back to it under the same generation. */
int snap_slot_acquire(struct snap_store *s, uint64_t step, uint32_t *slot,
                      uint64_t *generation);
/* snap_slot_acquire(), but a SEALED or COMMITTED slot whose bit is set in
 * avoid is not taken either (its step is being protected across nodes, a
 * commit not yet under way): PT_SKIPPED sooner. */
int snap_slot_acquire_avoiding(struct snap_store *s, uint64_t step,
                               uint32_t avoid, uint32_t *slot,
                               uint64_t *generation);

/* WRITING(slot, generation) -> SEALED. The checksum table and its trailer
 * must already be written: the blob's bytes and CRC are copied from the
 * trailer into the record. -EINVAL when the trailer's blob bytes exceed the
 * blob area. PT_ESTALE when the slot is no longer WRITING with that generation;
 * -EINVAL for a bad slot or a step that differs from the acquired one. */
int snap_slot_seal(struct snap_store *s, uint32_t slot, uint64_t generation,
                   uint64_t step);

/* WRITING -> FREE for a writer that went away or failed. */
int snap_slot_abort(struct snap_store *s, uint32_t slot, uint64_t generation);

/* The first phase of a commit: the SEALED slot holding step becomes
 * PINNED (the newest one, should two hold it). PT_OK too when a slot
 * holding step is PINNED already (a repeated request). -ENOENT when no
 * SEALED or PINNED slot holds step: it was never sealed here, it was
 * handed to a newer step, or it is COMMITTED already. */
int snap_slot_pin(struct snap_store *s, uint64_t step);

/* The PINNED slot holding step becomes PROTECTED: its own chunks were
 * acknowledged by their parity holders and the parity it keeps for step is
 * complete. PT_OK too when it is PROTECTED already. PT_ESTATE when step is
 * only SEALED (the commit's first phase, snap_slot_pin, comes first, so
 * that an unpin releases a PROTECTED slot as it does a PINNED one), -ENOENT
 * when no SEALED, PINNED or PROTECTED slot holds it. */
int snap_slot_protect(struct snap_store *s, uint64_t step);

/* The commit of step is abandoned: its PINNED slot becomes SEALED again
 * (an ordinary uncommitted step, reusable by the next acquire). -ENOENT when
 * no PINNED slot holds step. */
int snap_slot_unpin(struct snap_store *s, uint64_t step);

/* The slot holding step becomes COMMITTED: a PINNED one (the second phase
 * of a commit), or a SEALED one (an SMP that commits alone, --autocommit).
 * PT_OK also when step is COMMITTED already (a repeated request). Then, for
 * every other slot:
 *   - SEALED with an older step, or SEALED/PINNED/COMMITTED with the same
 *     step (a duplicate): FREE, as no commit of it can follow any more;
 *   - PINNED with an older step: SEALED. Its commit is over (one commit
 *     runs at a time, and a newer one just ended), but ptd node decides it
 *     before this rank hears of it, so other ranks may hold that step
 *     COMMITTED: its bytes are kept, as a restore candidate, and only the
 *     pin is released so that the slot can be reused;
 *   - COMMITTED with an older step: stays, as a fallback;
 *   - newer steps and WRITING slots: untouched.
 * -ENOENT, nothing changed, when no SEALED/PINNED/COMMITTED slot holds
 * step. */
int snap_slot_commit(struct snap_store *s, uint64_t step);

/* Restore point chosen: the slot holding step stays (becomes COMMITTED if it
 * was SEALED or PINNED); every slot with a newer step, and every slot
 * neither SEALED, PINNED nor COMMITTED, becomes FREE; every other SEALED
 * or PINNED slot (older steps, duplicates) becomes FREE too, so that no
 * pin outlives the restore; older COMMITTED ones stay. has_step false:
 * every slot becomes FREE (the job starts over). -ENOENT, nothing changed,
 * when no SEALED/PINNED/COMMITTED slot holds step. */
int snap_slot_set_restore(struct snap_store *s, bool has_step, uint64_t step);
/* A restore point that this object must rebuild (its copy of step is
 * missing or damaged): every slot holding step or a newer one, and every
 * slot neither SEALED, PINNED nor COMMITTED, becomes FREE; older SEALED and
 * PINNED slots become FREE too (no pin outlives the restore); older
 * COMMITTED ones stay, intact fallbacks should the rebuild fail. Returns how
 * many slots it freed. */
int snap_slot_set_restore_missing(struct snap_store *s, uint64_t step);

/* Checks slot's record against its CRC, its checksum table against the
 * recorded table CRC, every data block against the table, and the blob
 * against the blob bytes and CRC of the record (which must equal the
 * table's trailer). PT_OK, PT_ECHECKSUM, or PT_ESTATE when the slot is not
 * SEALED/PINNED/COMMITTED. OUT: bad_block may be NULL: the first bad
 * block; nblocks when every block matches a table whose recorded CRC does
 * not (the table or its CRC was damaged); SNAP_BAD_BLOB(nblocks) when the
 * blob is damaged; SNAP_BAD_RECORD(nblocks) when the record is. */
#define SNAP_BAD_BLOB(nblocks) ((nblocks) + 1u)
#define SNAP_BAD_RECORD(nblocks) ((nblocks) + 2u)
int snap_slot_verify(const struct snap_store *s, uint32_t slot,
                     uint32_t *bad_block);

/* snap_slot_verify() of slots[0..n) on up to `threads` threads (the caller's
 * thread is one of them; fewer when a thread cannot be started), which share
 * every slot's blocks, so that even one slot is read by all of them: the
 * same checks, the same results, in about 1/threads of the time on enough
 * cores and memory bandwidth.
 * Reads the store only. OUT: rcs[i] and bad_blocks[i] (may be NULL) for
 * slots[i], as snap_slot_verify() gives them. */
void snap_slot_verify_many(const struct snap_store *s, const uint32_t *slots,
                           uint32_t n, uint32_t threads, int *rcs,
                           uint32_t *bad_blocks);

/* ---- faults of the mapping ----
 *
 * An object truncated under its reader makes the next read of a page past
 * its end raise SIGBUS on the thread that read it. snap_fault_run() calls
 * fn(arg) on this thread and returns what it returns, or -EFAULT when a read
 * of s's mapping faulted in it, provided the process's SIGBUS handler calls
 * snap_fault_catch(si_addr) first: that call does not return when the
 * address lies in the mapping a snap_fault_run() of the handler's thread
 * guards, and returns false otherwise. snap_slot_verify_many() runs every
 * thread's reads so guarded: a fault in any reports -EFAULT for every slot,
 * once every thread stopped reading. */
int snap_fault_run(const struct snap_store *s, int (*fn)(void *arg), void *arg);
bool snap_fault_catch(const void *addr);

/* The newest COMMITTED slot. PT_ENOSNAP when none. */
int snap_slot_newest_committed(const struct snap_store *s, uint32_t *slot,
                               uint64_t *step);
/* The slot holding step in state SEALED, PINNED or COMMITTED; -ENOENT. */
int snap_slot_find_step(const struct snap_store *s, uint64_t step,
                        uint32_t *slot);

#endif /* PT_SNAP_STORE_H */
