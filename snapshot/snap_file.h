/*
 * snap_file.h — one rank's committed step as a file of the persistent tier
 * (DESIGN.md, "Persistent tier"): written by the rank's SMP from its slot,
 * read back into a slot of the same layout, every block verified against
 * the checksum table taken when the snapshot was made.
 *
 * Layout (all integers little-endian, offsets from the start of the file):
 *
 *   offset  bytes  field
 *   0       8      magic "PTSTEP\0\1"
 *   8       4      format version (SNAP_FILE_VERSION)
 *   12      4      header bytes H: this preamble, the region table and the
 *                  checksum table, rounded up to SNAP_FILE_ALIGN; the data
 *                  begins at H
 *   16      8      file bytes: H + slot data bytes rounded up to
 *                  SNAP_FILE_ALIGN
 *   24      64     job name, NUL-padded
 *   88      16     job instance id
 *   104     4      rank
 *   108     4      world size
 *   112     8      step
 *   120     4      number of regions (1..SNAP_MAX_REGIONS)
 *   124     4      checksum block size (KERN_BLOCK_SIZE)
 *   128     4      checksum blocks (nblocks)
 *   132     4      blob bytes
 *   136     4      blob CRC32C
 *   140     4      zero
 *   144     8      slot data bytes S (the regions, each 64-byte aligned,
 *                  then the blob area: the shm object's slot, snap_store.h)
 *   152     8      offset of the blob area within the slot data
 *   160     8      time written, ns since the epoch
 *   168     8      mark: the writer's id of this flush (the node's, so
 *                  that a manifest binds the files of one flush)
 *   176     12     zero
 *   188     4      CRC32C of the header bytes 0..187 followed by bytes
 *                  192..H-1 (the region and checksum tables, the padding)
 *   192     ...    region table: nregions entries of 320 bytes, as in the
 *                  shm object (name[256], bytes u64, offset in slot u64,
 *                  kind u32, first block u32, blocks u32, zero to 320)
 *   then           checksum table: nblocks block CRC32Cs, then the blob's
 *                  bytes and CRC32C (u32 each), as the slot's table
 *   zero up to H
 *   H              the slot data, S bytes, zero to the file's end
 *
 * Aligned so that the data moves with O_DIRECT straight between the disk and
 * the 2 MiB-aligned slot in shared memory. Where the directory's file
 * system refuses O_DIRECT (tmpfs before Linux 6.6), buffered I/O is used
 * and snap_file_stats.direct says so.
 *
 * A file is written under a temporary name in the same directory,
 * fsync'd, renamed and the directory fsync'd: a crash leaves either no file
 * under the name or a complete one, and the temporary leftover is removed
 * by the next writer (snap_file_sweep). A file is trusted only as far as
 * its checks go: the header CRC, every count and offset against the file's
 * size, then every data block against the checksum table.
 */
#ifndef PT_SNAP_FILE_H
#define PT_SNAP_FILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot/snap_store.h"

#define SNAP_FILE_MAGIC "PTSTEP\0\1"
#define SNAP_FILE_VERSION 1u
#define SNAP_FILE_ALIGN 4096u
#define SNAP_FILE_PREAMBLE 192u
/* Larger headers are refused before anything is allocated: the region and
 * checksum tables of SNAP_MAX_REGIONS regions and 16 TiB of data. */
#define SNAP_FILE_HEADER_MAX ((uint64_t)128 << 20)
/* What a temporary name ends with (snap_file_sweep). */
#define SNAP_FILE_TMP_SUFFIX ".tmp"

struct snap_file_info {
  char job[SNAP_JOB_MAX];
  uint8_t instance[SNAP_INSTANCE_BYTES];
  uint32_t rank, world, nregions, block_size, nblocks;
  uint32_t blob_bytes, blob_crc;
  uint64_t step, slot_bytes, blob_off, t_written_ns;
  uint64_t header_bytes, file_bytes;
  uint64_t mark;
};

struct snap_file_opts {
  uint64_t rate_bps;          /* data bytes per second at most; 0: no limit */
  const atomic_bool *cancel;  /* set: stop as soon as possible (-ECANCELED);
                               * NULL: never */
  bool buffered;              /* never O_DIRECT */
  uint32_t chunk_bytes;       /* per read or write; 0: 8 MiB */
  uint64_t mark;              /* write: the header's mark */
  bool any_instance;          /* load: a file of another instance of the
                               * job is taken (a cluster's spare; the
                               * caller checked the mark) */
};

struct snap_file_stats {
  uint64_t bytes;     /* moved to or from the file */
  uint64_t ns;        /* from open to the last fsync (write) or check (read) */
  bool direct;        /* O_DIRECT was used */
};

/* Writes the step held in slot (SEALED, PINNED, PROTECTED or COMMITTED) to
 * name in the directory dirfd, by the discipline above; an existing file of
 * that name is replaced. The caller keeps the slot from being reused
 * meanwhile; the slot's record is read again at the end, and a slot that
 * no longer holds the same step and generation fails with PT_ESTALE (no
 * file). Errors, each with a sentence naming the file: -ENOSPC (the space
 * is reserved up front with posix_fallocate), -EACCES, -EROFS, -EIO,
 * -ECANCELED, PT_ESTALE, PT_ESTATE (the slot holds nothing). Nothing is
 * left under the temporary name on failure. Every block is checked
 * against the slot's checksum table on the way (PT_ECHECKSUM: a slot
 * damaged in memory is never written). Runs on any thread: its own reads
 * of the mapping are guarded (snap_fault_run) and the kernel's fail with
 * EFAULT, so a truncated object fails the write with -EFAULT and leaks
 * nothing, where the process's SIGBUS handler asks snap_fault_catch
 * first. o and st may be NULL. */
int snap_file_write(const struct snap_store *s, uint32_t slot, int dirfd,
                    const char *name, const struct snap_file_opts *o,
                    struct snap_file_stats *st, char *err, size_t errlen);

struct snap_file;

/* Opens name in dirfd (-1: name is a path) and validates its header: magic,
 * version, header CRC, every count and offset, the size on disk. Never
 * crashes on a garbage, truncated or foreign file: PT_EFORMAT /
 * PT_EVERSION / -ENOENT with a sentence. OUT: *out, snap_file_close(). */
int snap_file_open(struct snap_file **out, int dirfd, const char *name,
                   char *err, size_t errlen);
void snap_file_close(struct snap_file *f);
const struct snap_file_info *snap_file_info(const struct snap_file *f);
/* Region i of the file's table; NULL out of range. */
const struct snap_region *snap_file_region(const struct snap_file *f,
                                           uint32_t i);

/* Whether the file can fill a slot of s: the same job, instance (unless
 * any_instance), rank and world (PT_EFOREIGN, PT_EWORLD), and the same
 * layout of the slot (region names, sizes, offsets, kinds, blocks, blob
 * area; PT_EREGIONS). */
int snap_file_match(const struct snap_file *f, const struct snap_store *s,
                    bool any_instance, char *err, size_t errlen);

/* Reads the file into slot of s (WRITING, acquired by the caller; the
 * file matched it, snap_file_match) with its checksum table and trailer,
 * and checks every block and the blob against the table: PT_ECHECKSUM (a
 * sentence naming the region and block) leaves the slot for the caller to
 * abort. The caller seals the slot after PT_OK. Its reads and writes of
 * the mapping are guarded as snap_file_write's. */
int snap_file_load(struct snap_file *f, struct snap_store *s, uint32_t slot,
                   const struct snap_file_opts *o, struct snap_file_stats *st,
                   char *err, size_t errlen);

/* Reads the whole file into memory of its own, in pieces, and checks every
 * block and the blob against the table, as snap_file_load does: for a
 * check of a file on disk without a slot to fill (ptctl, ptbench). */
int snap_file_verify(struct snap_file *f, const struct snap_file_opts *o,
                     struct snap_file_stats *st, char *err, size_t errlen);

/* Removes the temporary files a writer killed in the middle left in dirfd
 * (names starting with '.' and ending with SNAP_FILE_TMP_SUFFIX). Returns
 * how many. */
int snap_file_sweep(int dirfd);

#endif /* PT_SNAP_FILE_H */
