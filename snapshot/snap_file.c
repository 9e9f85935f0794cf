/*
 * snap_file.c — a rank's step as a file of the persistent tier (the format
 * and its rules: snap_file.h): reading one, and what the writer
 * (snap_file_write.c) shares with the reader.
 *
 * The region table of a file is checked the way snap_layout_parse checks
 * the shm object's: each entry's CRC, name and size, then the offsets and
 * blocks it claims against the layout snap_layout_compute() derives from
 * the sizes alone, so a file can only describe a slot that an object of
 * the same regions would have.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_file.h"
#include "snapshot/snap_file_int.h"
#include "snapshot/snap_internal.h"

uint32_t snap_file_header_crc(const uint8_t *h, uint64_t hbytes)
{
  uint32_t c = crc32c_update(CRC32C_SEED, h, F_CRC);
  return crc32c_update(c, h + SNAP_FILE_PREAMBLE,
                       (size_t)(hbytes - SNAP_FILE_PREAMBLE));
}

/* Sleeps as long as moving done bytes since t0 at rate_bps calls for. */
void snap_file_pace(const struct snap_file_opts *o, uint64_t t0, uint64_t done)
{
  if (o == NULL || o->rate_bps == 0)
    return;
  uint64_t due = t0 + (uint64_t)((double)done * 1e9 / (double)o->rate_bps);
  for (;;) {
    uint64_t now = snap_file_now_ns(CLOCK_MONOTONIC);
    if (now >= due || (o->cancel != NULL && atomic_load(o->cancel)))
      return;
    uint64_t ns = due - now < 50000000ull ? due - now : 50000000ull;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
    nanosleep(&ts, NULL);
  }
}

/* ---- reads of a store's mapping, guarded ----
 *
 * A truncated object faults (SIGBUS) on the thread that reads it; each read
 * of the mapping here runs under snap_fault_run and holds nothing (no fd,
 * no allocation) that a jump out of it would leak: -EFAULT. */

struct copy_arg {
  void *dst;
  const void *src;
  size_t n;
};

static int copy_fn(void *arg)
{
  struct copy_arg *c = arg;
  memcpy(c->dst, c->src, c->n);
  return 0;
}

int snap_file_guarded_copy(const struct snap_store *s, void *dst, const void *src,
                        size_t n)
{
  struct copy_arg c = {dst, src, n};
  return snap_fault_run(s, copy_fn, &c);
}

struct get_arg {
  const struct snap_store *s;
  uint32_t slot;
  struct snap_slot_info *out;
};

static int get_fn(void *arg)
{
  struct get_arg *g = arg;
  snap_slot_get(g->s, g->slot, g->out);
  return 0;
}

int snap_file_guarded_get(const struct snap_store *s, uint32_t slot,
                       struct snap_slot_info *out)
{
  struct get_arg g = {s, slot, out};
  return snap_fault_run(s, get_fn, &g);
}

/* Checks the blocks of regions that lie wholly in data[0, have) and that
 * were not checked yet (*next: the first unchecked block, in order). */
static int check_blocks(const struct snap_file *f, const uint8_t *data,
                        uint64_t base, uint64_t have, uint32_t *next,
                        char *err, size_t errlen)
{
  for (uint32_t r = 0; r < f->info.nregions; r++) {
    const struct snap_region *reg = &f->regions[r];
    if (*next >= reg->first_block + reg->nblocks)
      continue;
    for (uint32_t g = *next; g < reg->first_block + reg->nblocks; g++) {
      uint64_t off = (uint64_t)(g - reg->first_block) * KERN_BLOCK_SIZE;
      uint64_t len = reg->bytes - off < KERN_BLOCK_SIZE ? reg->bytes - off
                                                        : KERN_BLOCK_SIZE;
      uint64_t at = reg->offset + off;
      if (at + len > have)
        return PT_OK; /* not read yet */
      if (at < base)
        return snap_err(err, errlen, -EINVAL, "'%s': block %" PRIu32
                        " lies before the bytes held", f->name, g);
      if (crc32c(data + (at - base), (size_t)len) != f->table[g])
        return snap_err(err, errlen, PT_ECHECKSUM, "'%s': block %" PRIu64
                        " of region '%s' (block %" PRIu32 ") does not match "
                        "its checksum", f->name,
                        off / KERN_BLOCK_SIZE, reg->name, g);
      *next = g + 1;
    }
  }
  return PT_OK;
}

struct blocks_arg {
  const struct snap_file *f;
  const uint8_t *data;
  uint64_t base, have;
  uint32_t *next;
  char *err;
  size_t errlen;
};

static int blocks_fn(void *arg)
{
  struct blocks_arg *b = arg;
  return check_blocks(b->f, b->data, b->base, b->have, b->next, b->err,
                      b->errlen);
}

/* check_blocks() over a store's mapping. */
int snap_file_guarded_blocks(const struct snap_store *s, const struct snap_file *f,
                          const uint8_t *data, uint64_t have, uint32_t *next,
                          char *err, size_t errlen)
{
  struct blocks_arg b = {f, data, 0, have, next, err, errlen};
  int rc = snap_fault_run(s, blocks_fn, &b);
  if (rc == -EFAULT)
    snap_err(err, errlen, rc, "a read of '%s' faulted: the object shrank",
             s->name);
  return rc;
}

/* ---- read ---- */

int snap_file_io(int fd, void *buf, size_t len, uint64_t off, bool write)
{
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write ? pwrite(fd, p, len, (off_t)off)
                      : pread(fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return write ? -EIO : -ENODATA; /* a read: shorter than its header says */
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return PT_OK;
}

static int parse(struct snap_file *f, uint64_t size, char *err, size_t errlen)
{
  const uint8_t *h = f->hdr;
  struct snap_file_info *in = &f->info;
  const char *nm = f->name;

  in->nregions = snap_get32(h + F_NREGIONS);
  in->nblocks = snap_get32(h + F_NBLOCKS);
  in->block_size = snap_get32(h + F_BLOCK_SIZE);
  in->header_bytes = snap_get32(h + F_HEADER_BYTES);
  in->file_bytes = snap_get64(h + F_FILE_BYTES);
  in->slot_bytes = snap_get64(h + F_SLOT_BYTES);
  in->blob_off = snap_get64(h + F_BLOB_OFF);
  in->blob_bytes = snap_get32(h + F_BLOB_BYTES);
  in->blob_crc = snap_get32(h + F_BLOB_CRC);
  in->rank = snap_get32(h + F_RANK);
  in->world = snap_get32(h + F_WORLD);
  in->step = snap_get64(h + F_STEP);
  in->t_written_ns = snap_get64(h + F_TIME);
  in->mark = snap_get64(h + F_MARK);
  memcpy(in->job, h + F_JOB, SNAP_JOB_MAX);
  memcpy(in->instance, h + F_INSTANCE, SNAP_INSTANCE_BYTES);
  if (in->job[0] == '\0' || memchr(in->job, '\0', SNAP_JOB_MAX) == NULL)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': the job name is empty "
                    "or not terminated", nm);
  if (in->block_size != KERN_BLOCK_SIZE)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': checksum blocks of %"
                    PRIu32 " bytes, expected %u", nm, in->block_size,
                    (unsigned)KERN_BLOCK_SIZE);
  if (in->world == 0 || in->rank >= in->world)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': rank %" PRIu32
                    " of world size %" PRIu32, nm, in->rank, in->world);

  /* The counts, and the header size they imply, before anything is walked
   * or allocated: the header CRC is no secret, a forged one passes it. */
  if (in->nregions == 0 || in->nregions > SNAP_MAX_REGIONS ||
      in->nblocks > SNAP_MAX_NBLOCKS ||
      in->header_bytes != snap_file_header_bytes(in->nregions, in->nblocks))
    return snap_err(err, errlen, PT_EFORMAT, "'%s': %" PRIu32 " regions and %"
                    PRIu32 " checksum blocks in a header of %" PRIu64 " bytes",
                    nm, in->nregions, in->nblocks, in->header_bytes);
  struct snap_region *regs = calloc(in->nregions, sizeof(*regs));
  if (regs == NULL)
    return snap_err(err, errlen, -ENOMEM, "no memory for %" PRIu32
                    " regions", in->nregions);
  f->regions = regs;
  for (uint32_t i = 0; i < in->nregions; i++) {
    const uint8_t *e = h + SNAP_FILE_PREAMBLE + (uint64_t)i * REG_ENTRY_BYTES;
    if (snap_get32(e + REG_CRC) != crc32c(e, REG_CRC_COVERS))
      return snap_err(err, errlen, PT_EFORMAT, "'%s': region %" PRIu32
                      " entry checksum mismatch", nm, i);
    if (e[REG_NAME] == '\0' || memchr(e + REG_NAME, '\0', SNAP_NAME_MAX) == NULL)
      return snap_err(err, errlen, PT_EFORMAT, "'%s': region %" PRIu32
                      " name is empty or not terminated", nm, i);
    memcpy(regs[i].name, e + REG_NAME, SNAP_NAME_MAX);
    regs[i].bytes = snap_get64(e + REG_BYTES);
    regs[i].kind = snap_get32(e + REG_KIND);
    if (regs[i].kind > 1)
      return snap_err(err, errlen, PT_EFORMAT, "'%s': region '%s' has "
                      "unknown kind %" PRIu32, nm, regs[i].name, regs[i].kind);
  }
  /* What those sizes lay out must be what the file says. */
  struct snap_region *calc = calloc(in->nregions, sizeof(*calc));
  if (calc == NULL)
    return snap_err(err, errlen, -ENOMEM, "no memory for %" PRIu32
                    " regions", in->nregions);
  for (uint32_t i = 0; i < in->nregions; i++)
    calc[i].bytes = regs[i].bytes;
  struct snap_layout lay;
  char why[200] = "";
  int rc = snap_layout_compute(&lay, 2, in->nregions, calc, 0, 0, why,
                               sizeof(why));
  if (rc != PT_OK) {
    free(calc);
    return snap_err(err, errlen, PT_EFORMAT, "'%s': %s", nm, why);
  }
  for (uint32_t i = 0; i < in->nregions && rc == PT_OK; i++) {
    const uint8_t *e = h + SNAP_FILE_PREAMBLE + (uint64_t)i * REG_ENTRY_BYTES;
    regs[i].offset = snap_get64(e + REG_OFFSET);
    regs[i].first_block = snap_get32(e + REG_FIRST_BLOCK);
    regs[i].nblocks = snap_get32(e + REG_NBLOCKS);
    if (regs[i].offset != calc[i].offset ||
        regs[i].first_block != calc[i].first_block ||
        regs[i].nblocks != calc[i].nblocks)
      rc = snap_err(err, errlen, PT_EFORMAT, "'%s': region '%s' lies at "
                    "offset %" PRIu64 " blocks %" PRIu32 "+%" PRIu32
                    ", its size implies offset %" PRIu64, nm, regs[i].name,
                    regs[i].offset, regs[i].first_block, regs[i].nblocks,
                    calc[i].offset);
  }
  free(calc);
  if (rc != PT_OK)
    return rc;
  if (lay.nblocks != in->nblocks || lay.slot_bytes != in->slot_bytes ||
      lay.blob_off != in->blob_off)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': %" PRIu32 " blocks, %"
                    PRIu64 " slot bytes and the blob at %" PRIu64 " do not "
                    "follow from its regions (%" PRIu32 ", %" PRIu64 ", %"
                    PRIu64 ")", nm, in->nblocks, in->slot_bytes, in->blob_off,
                    lay.nblocks, lay.slot_bytes, lay.blob_off);
  if (in->blob_bytes > lay.blob_max)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': a blob of %" PRIu32
                    " bytes, at most %" PRIu64, nm, in->blob_bytes,
                    lay.blob_max);
  if (in->header_bytes != snap_file_header_bytes(in->nregions, in->nblocks) ||
      in->file_bytes != in->header_bytes + snap_file_align_up(in->slot_bytes,
                                                    SNAP_FILE_ALIGN))
    return snap_err(err, errlen, PT_EFORMAT, "'%s': header of %" PRIu64
                    " and file of %" PRIu64 " bytes do not follow from its "
                    "tables", nm, in->header_bytes, in->file_bytes);
  if (size != in->file_bytes)
    return snap_err(err, errlen, PT_EFORMAT, "'%s' has %" PRIu64 " bytes, "
                    "its header says %" PRIu64 " (truncated, or not "
                    "complete)", nm, size, in->file_bytes);
  f->table = (const uint32_t *)(h + SNAP_FILE_PREAMBLE +
                                (uint64_t)in->nregions * REG_ENTRY_BYTES);
  const uint32_t *tr = f->table + in->nblocks;
  if (tr[0] != in->blob_bytes || tr[1] != in->blob_crc)
    return snap_err(err, errlen, PT_EFORMAT, "'%s': the checksum table's "
                    "trailer does not name the header's blob", nm);
  return PT_OK;
}

int snap_file_open(struct snap_file **out, int dirfd, const char *name,
                   char *err, size_t errlen)
{
  uint8_t pre[SNAP_FILE_PREAMBLE];
  struct stat sb;
  int rc;

  *out = NULL;
  struct snap_file *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return snap_err(err, errlen, -ENOMEM, "no memory");
  snprintf(f->name, sizeof(f->name), "%s", name);
  f->fd = openat(dirfd < 0 ? AT_FDCWD : dirfd, name,
                 O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (f->fd < 0) {
    rc = -errno;
    snap_err(err, errlen, rc, "cannot open '%s': %s", name, strerror(-rc));
    goto fail;
  }
  if (fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    rc = snap_err(err, errlen, PT_EFORMAT, "'%s' is not a regular file",
                  name);
    goto fail;
  }
  if ((uint64_t)sb.st_size < SNAP_FILE_PREAMBLE ||
      snap_file_io(f->fd, pre, sizeof(pre), 0, false) != PT_OK) {
    rc = snap_err(err, errlen, PT_EFORMAT, "'%s' is shorter than a step "
                  "file's header (%lld bytes)", name, (long long)sb.st_size);
    goto fail;
  }
  if (memcmp(pre + F_MAGIC, SNAP_FILE_MAGIC, 8) != 0) {
    rc = snap_err(err, errlen, PT_EFORMAT, "'%s' is not a pt step file "
                  "(bad magic)", name);
    goto fail;
  }
  uint32_t ver = snap_get32(pre + F_VERSION);
  if (ver != SNAP_FILE_VERSION) {
    rc = snap_err(err, errlen, PT_EVERSION, "'%s' is of format version %"
                  PRIu32 ", this build reads %u", name, ver,
                  SNAP_FILE_VERSION);
    goto fail;
  }
  uint64_t hbytes = snap_get32(pre + F_HEADER_BYTES);
  if (hbytes < SNAP_FILE_ALIGN || hbytes % SNAP_FILE_ALIGN != 0 ||
      hbytes > SNAP_FILE_HEADER_MAX || hbytes > (uint64_t)sb.st_size) {
    rc = snap_err(err, errlen, PT_EFORMAT, "'%s': a header of %" PRIu64
                  " bytes in a file of %lld", name, hbytes,
                  (long long)sb.st_size);
    goto fail;
  }
  if ((f->hdr = malloc((size_t)hbytes)) == NULL) {
    rc = snap_err(err, errlen, -ENOMEM, "no memory for a %" PRIu64
                  "-byte header", hbytes);
    goto fail;
  }
  if ((rc = snap_file_io(f->fd, f->hdr, (size_t)hbytes, 0, false)) != PT_OK) {
    snap_err(err, errlen, PT_EFORMAT, "cannot read the header of '%s': %s",
             name, pt_strerror(rc));
    rc = PT_EFORMAT;
    goto fail;
  }
  uint32_t stored = snap_get32(f->hdr + F_CRC), calc = snap_file_header_crc(f->hdr, hbytes);
  if (stored != calc) {
    rc = snap_err(err, errlen, PT_EFORMAT, "'%s': header checksum mismatch "
                  "(stored %08" PRIx32 ", computed %08" PRIx32 ")", name,
                  stored, calc);
    goto fail;
  }
  if ((rc = parse(f, (uint64_t)sb.st_size, err, errlen)) != PT_OK)
    goto fail;
  *out = f;
  return PT_OK;
fail:
  snap_file_close(f);
  return rc;
}

void snap_file_close(struct snap_file *f)
{
  if (f == NULL)
    return;
  if (f->fd >= 0)
    close(f->fd);
  free(f->hdr);
  free(f->regions);
  free(f);
}

const struct snap_file_info *snap_file_info(const struct snap_file *f)
{
  return &f->info;
}

const struct snap_region *snap_file_region(const struct snap_file *f,
                                           uint32_t i)
{
  return i < f->info.nregions ? &f->regions[i] : NULL;
}

int snap_file_match(const struct snap_file *f, const struct snap_store *s,
                    bool any_instance, char *err, size_t errlen)
{
  const struct snap_file_info *in = &f->info;

  if (strcmp(in->job, s->job) != 0 ||
      (!any_instance &&
       memcmp(in->instance, s->instance, SNAP_INSTANCE_BYTES) != 0) ||
      in->rank != s->rank)
    return snap_err(err, errlen, PT_EFOREIGN, "'%s' holds rank %" PRIu32
                    " of job '%s' (another instance or rank than '%s')",
                    f->name, in->rank, in->job, s->name);
  if (in->world != s->world)
    return snap_err(err, errlen, PT_EWORLD, "'%s' was written by a job of %"
                    PRIu32 " ranks, this one has %" PRIu32, f->name,
                    in->world, s->world);
  if (in->nregions != s->lay.nregions || in->slot_bytes != s->lay.slot_bytes ||
      in->nblocks != s->lay.nblocks || in->blob_off != s->lay.blob_off)
    return snap_err(err, errlen, PT_EREGIONS, "'%s' holds %" PRIu32
                    " regions of %" PRIu64 " bytes, the trainer registered %"
                    PRIu32 " of %" PRIu64, f->name, in->nregions,
                    in->slot_bytes, s->lay.nregions, s->lay.slot_bytes);
  for (uint32_t i = 0; i < in->nregions; i++) {
    const struct snap_region *a = &f->regions[i], *b = &s->regions[i];
    if (strcmp(a->name, b->name) != 0 || a->bytes != b->bytes ||
        a->kind != b->kind || a->offset != b->offset)
      return snap_err(err, errlen, PT_EREGIONS, "'%s': region %" PRIu32
                      " is '%s' of %" PRIu64 " bytes, the trainer registered "
                      "'%s' of %" PRIu64, f->name, i, a->name, a->bytes,
                      b->name, b->bytes);
  }
  return PT_OK;
}

static int check_blob(const struct snap_file *f, const uint8_t *blob,
                      char *err, size_t errlen)
{
  if (crc32c(blob, f->info.blob_bytes) != f->info.blob_crc)
    return snap_err(err, errlen, PT_ECHECKSUM, "'%s': the blob does not "
                    "match its checksum", f->name);
  return PT_OK;
}

/* The data file descriptor for reading: O_DIRECT where the file system
 * takes it. */
static int data_fd(struct snap_file *f, const struct snap_file_opts *o,
                   bool *direct)
{
  *direct = false;
  if (o != NULL && o->buffered)
    return f->fd;
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", f->fd);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0)
    return f->fd;
  *direct = true;
  return fd;
}

int snap_file_load(struct snap_file *f, struct snap_store *s, uint32_t slot,
                   const struct snap_file_opts *o, struct snap_file_stats *st,
                   char *err, size_t errlen)
{
  struct snap_file_stats dummy;
  int rc;

  if (st == NULL)
    st = &dummy;
  memset(st, 0, sizeof(*st));
  uint64_t t0 = snap_file_now_ns(CLOCK_MONOTONIC);
  if (slot >= s->lay.nslots)
    return snap_err(err, errlen, -EINVAL, "no slot %" PRIu32, slot);
  if ((rc = snap_file_match(f, s, o != NULL && o->any_instance, err,
                            errlen)) != PT_OK)
    return rc;
  uint8_t *data = snap_slot_data(s, slot);
  const uint64_t dbytes = snap_file_align_up(f->info.slot_bytes, SNAP_FILE_ALIGN);
  const uint32_t chunk = snap_file_chunk(o);
  int fd = data_fd(f, o, &st->direct);
  uint32_t next = 0;
  rc = PT_OK;
  for (uint64_t off = 0; off < dbytes && rc == PT_OK; off += chunk) {
    if (snap_file_cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the read of '%s' was "
                    "cancelled", f->name);
      break;
    }
    size_t n = (size_t)(dbytes - off < chunk ? dbytes - off : chunk);
    rc = snap_file_io(fd, data + off, n, f->info.header_bytes + off, false);
    if (rc != PT_OK) {
      snap_err(err, errlen, rc, "cannot read '%s' at byte %" PRIu64 ": %s",
               f->name, f->info.header_bytes + off, pt_strerror(rc));
      break;
    }
    st->bytes += n;
    rc = snap_file_guarded_blocks(s, f, data, off + n, &next, err, errlen);
    snap_file_pace(o, t0, off + n);
  }
  if (fd != f->fd)
    close(fd);
  if (rc == PT_OK && next != f->info.nblocks)
    rc = snap_err(err, errlen, PT_ECHECKSUM, "'%s': %" PRIu32 " of %" PRIu32
                  " blocks checked", f->name, next, f->info.nblocks);
  if (rc == PT_OK) {
    /* The blob, copied out of the mapping first (a guarded read). */
    uint8_t *blob = malloc(f->info.blob_bytes > 0 ? f->info.blob_bytes : 1);
    if (blob == NULL)
      rc = snap_err(err, errlen, -ENOMEM, "no memory");
    else if (snap_file_guarded_copy(s, blob, data + f->info.blob_off,
                          f->info.blob_bytes) != 0)
      rc = snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
    else
      rc = check_blob(f, blob, err, errlen);
    free(blob);
  }
  if (rc == PT_OK &&
      snap_file_guarded_copy(s, snap_slot_crcs(s, slot), f->table,
                   ((size_t)f->info.nblocks + SNAP_TABLE_TRAILER) * 4) != 0)
    rc = snap_err(err, errlen, -EFAULT, "a write of '%s' faulted: the object "
                  "shrank", s->name);
  if (rc != PT_OK)
    return rc;
  st->ns = snap_file_now_ns(CLOCK_MONOTONIC) - t0;
  return PT_OK;
}

int snap_file_verify(struct snap_file *f, const struct snap_file_opts *o,
                     struct snap_file_stats *st, char *err, size_t errlen)
{
  struct snap_file_stats dummy;
  uint8_t *buf = NULL;
  int rc = PT_OK;

  if (st == NULL)
    st = &dummy;
  memset(st, 0, sizeof(*st));
  uint64_t t0 = snap_file_now_ns(CLOCK_MONOTONIC);
  const uint64_t dbytes = snap_file_align_up(f->info.slot_bytes, SNAP_FILE_ALIGN);
  /* A piece holds whole blocks, and the blob area (SNAP_BLOB_MAX, at most a
   * block) follows the last region: pieces of chunk + one block carried
   * over. */
  uint32_t chunk = snap_file_chunk(o);
  if (chunk < KERN_BLOCK_SIZE)
    chunk = KERN_BLOCK_SIZE;
  const uint64_t cap = (uint64_t)chunk + KERN_BLOCK_SIZE + SNAP_BLOB_MAX;
  if (posix_memalign((void **)&buf, SNAP_FILE_ALIGN, (size_t)cap) != 0)
    return snap_err(err, errlen, -ENOMEM, "no memory to read '%s'", f->name);
  int fd = data_fd(f, o, &st->direct);
  uint64_t base = 0, have = 0; /* buf holds data[base, have) */
  uint32_t next = 0;
  while (have < dbytes && rc == PT_OK) {
    if (snap_file_cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the check of '%s' was "
                    "cancelled", f->name);
      break;
    }
    size_t n = (size_t)(dbytes - have < chunk ? dbytes - have : chunk);
    rc = snap_file_io(fd, buf + (have - base), n, f->info.header_bytes + have,
                      false);
    if (rc != PT_OK) {
      snap_err(err, errlen, rc, "cannot read '%s' at byte %" PRIu64 ": %s",
               f->name, f->info.header_bytes + have, pt_strerror(rc));
      break;
    }
    have += n;
    st->bytes += n;
    rc = check_blocks(f, buf, base, have, &next, err, errlen);
    if (rc != PT_OK || have >= dbytes)
      break;
    /* Keep the bytes from the next unchecked block (or the blob area, once
     * every block is checked) at the front, aligned down for O_DIRECT. */
    uint64_t keep = have;
    if (next < f->info.nblocks) {
      for (uint32_t r = 0; r < f->info.nregions; r++) {
        const struct snap_region *reg = &f->regions[r];
        if (next >= reg->first_block && next < reg->first_block + reg->nblocks) {
          keep = reg->offset +
                 (uint64_t)(next - reg->first_block) * KERN_BLOCK_SIZE;
          break;
        }
      }
    } else if (f->info.blob_off < have) {
      keep = f->info.blob_off;
    }
    keep = keep / SNAP_FILE_ALIGN * SNAP_FILE_ALIGN;
    if (keep < base)
      keep = base;
    memmove(buf, buf + (keep - base), (size_t)(have - keep));
    base = keep;
  }
  if (fd != f->fd)
    close(fd);
  if (rc == PT_OK && next != f->info.nblocks)
    rc = snap_err(err, errlen, PT_ECHECKSUM, "'%s': %" PRIu32 " of %" PRIu32
                  " blocks checked", f->name, next, f->info.nblocks);
  if (rc == PT_OK) {
    if (f->info.blob_off < base ||
        f->info.blob_off + f->info.blob_bytes > have)
      rc = snap_err(err, errlen, PT_EFORMAT, "'%s': the blob lies outside "
                    "what was read", f->name);
    else
      rc = check_blob(f, buf + (f->info.blob_off - base), err, errlen);
  }
  free(buf);
  st->ns = snap_file_now_ns(CLOCK_MONOTONIC) - t0;
  return rc;
}

