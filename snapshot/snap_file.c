/*
 * snap_file.c — a rank's step as a file of the persistent tier (the format
 * and its rules: snap_file.h).
 *
 * The region table of a file is checked the way snap_layout_parse checks
 * the shm object's: each entry's CRC, name and size, then the offsets and
 * blocks it claims against the layout snap_layout_compute() derives from
 * the sizes alone, so a file can only describe a slot that an object of
 * the same regions would have.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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
#include "snapshot/snap_internal.h"

enum {
  F_MAGIC = 0,
  F_VERSION = 8,
  F_HEADER_BYTES = 12,
  F_FILE_BYTES = 16,
  F_JOB = 24,
  F_INSTANCE = 88,
  F_RANK = 104,
  F_WORLD = 108,
  F_STEP = 112,
  F_NREGIONS = 120,
  F_BLOCK_SIZE = 124,
  F_NBLOCKS = 128,
  F_BLOB_BYTES = 132,
  F_BLOB_CRC = 136,
  F_SLOT_BYTES = 144,
  F_BLOB_OFF = 152,
  F_TIME = 160,
  F_MARK = 168,
  F_CRC = 188,
};
_Static_assert(F_CRC + 4 == SNAP_FILE_PREAMBLE, "the preamble's last field");
_Static_assert(F_JOB + SNAP_JOB_MAX == F_INSTANCE, "job name field");

#define CHUNK_DEFAULT ((uint32_t)8 << 20)

struct snap_file {
  int fd;
  char name[256];       /* for messages */
  uint8_t *hdr;         /* header_bytes, as read and checked */
  struct snap_file_info info;
  struct snap_region *regions;
  const uint32_t *table; /* into hdr: nblocks + SNAP_TABLE_TRAILER */
};

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static uint64_t now_ns(clockid_t c)
{
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t header_bytes_for(uint32_t nregions, uint32_t nblocks)
{
  return align_up(SNAP_FILE_PREAMBLE + (uint64_t)nregions * REG_ENTRY_BYTES +
                      ((uint64_t)nblocks + SNAP_TABLE_TRAILER) * 4,
                  SNAP_FILE_ALIGN);
}

static uint32_t header_crc(const uint8_t *h, uint64_t hbytes)
{
  uint32_t c = crc32c_update(CRC32C_SEED, h, F_CRC);
  return crc32c_update(c, h + SNAP_FILE_PREAMBLE,
                       (size_t)(hbytes - SNAP_FILE_PREAMBLE));
}

/* Sleeps as long as moving done bytes since t0 at rate_bps calls for. */
static void pace(const struct snap_file_opts *o, uint64_t t0, uint64_t done)
{
  if (o == NULL || o->rate_bps == 0)
    return;
  uint64_t due = t0 + (uint64_t)((double)done * 1e9 / (double)o->rate_bps);
  for (;;) {
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (now >= due || (o->cancel != NULL && atomic_load(o->cancel)))
      return;
    uint64_t ns = due - now < 50000000ull ? due - now : 50000000ull;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
    nanosleep(&ts, NULL);
  }
}

static bool cancelled(const struct snap_file_opts *o)
{
  return o != NULL && o->cancel != NULL && atomic_load(o->cancel);
}

static uint32_t chunk_of(const struct snap_file_opts *o)
{
  uint32_t c = o != NULL && o->chunk_bytes > 0 ? o->chunk_bytes : CHUNK_DEFAULT;
  return (uint32_t)align_up(c, SNAP_FILE_ALIGN);
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

static int guarded_copy(const struct snap_store *s, void *dst, const void *src,
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

static int guarded_get(const struct snap_store *s, uint32_t slot,
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
static int guarded_blocks(const struct snap_store *s, const struct snap_file *f,
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

/* ---- write ---- */

static int full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EIO;
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return PT_OK;
}

static void header_build(uint8_t *h, uint64_t hbytes, const struct snap_store *s,
                         const struct snap_slot_info *si, uint64_t file_bytes)
{
  const struct snap_layout *lay = &s->lay;
  memcpy(h + F_MAGIC, SNAP_FILE_MAGIC, 8);
  snap_put32(h + F_VERSION, SNAP_FILE_VERSION);
  snap_put32(h + F_HEADER_BYTES, (uint32_t)hbytes);
  snap_put64(h + F_FILE_BYTES, file_bytes);
  memcpy(h + F_JOB, s->job, SNAP_JOB_MAX);
  memcpy(h + F_INSTANCE, s->instance, SNAP_INSTANCE_BYTES);
  snap_put32(h + F_RANK, s->rank);
  snap_put32(h + F_WORLD, s->world);
  snap_put64(h + F_STEP, si->step);
  snap_put32(h + F_NREGIONS, lay->nregions);
  snap_put32(h + F_BLOCK_SIZE, KERN_BLOCK_SIZE);
  snap_put32(h + F_NBLOCKS, lay->nblocks);
  snap_put32(h + F_BLOB_BYTES, si->blob_bytes);
  snap_put32(h + F_BLOB_CRC, si->blob_crc);
  snap_put64(h + F_SLOT_BYTES, lay->slot_bytes);
  snap_put64(h + F_BLOB_OFF, lay->blob_off);
  snap_put64(h + F_TIME, now_ns(CLOCK_REALTIME));
  for (uint32_t i = 0; i < lay->nregions; i++) {
    uint8_t *e = h + SNAP_FILE_PREAMBLE + (uint64_t)i * REG_ENTRY_BYTES;
    const struct snap_region *r = &s->regions[i];
    memcpy(e + REG_NAME, r->name, SNAP_NAME_MAX);
    snap_put64(e + REG_BYTES, r->bytes);
    snap_put64(e + REG_OFFSET, r->offset);
    snap_put32(e + REG_KIND, r->kind);
    snap_put32(e + REG_FIRST_BLOCK, r->first_block);
    snap_put32(e + REG_NBLOCKS, r->nblocks);
    snap_put32(e + REG_CRC, crc32c(e, REG_CRC_COVERS));
  }
}

/* The writer's checking thread: every block of the slot, guarded. */
struct checker {
  const struct snap_store *s;
  const struct snap_file *view;
  const uint8_t *data;
  uint64_t dbytes;
  uint32_t next;
  int rc;
  char err[400];
};

static void *check_main(void *arg)
{
  struct checker *c = arg;
  c->next = 0;
  c->rc = guarded_blocks(c->s, c->view, c->data, c->dbytes, &c->next, c->err,
                         sizeof(c->err));
  return NULL;
}

int snap_file_write(const struct snap_store *s, uint32_t slot, int dirfd,
                    const char *name, const struct snap_file_opts *o,
                    struct snap_file_stats *st, char *err, size_t errlen)
{
  struct snap_file_stats dummy;
  struct snap_slot_info si;
  char tmp[300];
  uint8_t *h = NULL;
  int fd = -1, rc;
  struct checker ck;
  pthread_t checker;
  bool checking = false;

  if (st == NULL)
    st = &dummy;
  memset(st, 0, sizeof(*st));
  uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  if (slot >= s->lay.nslots || strchr(name, '/') != NULL ||
      snprintf(tmp, sizeof(tmp), ".%s.%d%s", name, (int)getpid(),
               SNAP_FILE_TMP_SUFFIX) >= (int)sizeof(tmp))
    return snap_err(err, errlen, -EINVAL, "cannot write slot %" PRIu32
                    " as '%s': bad slot or name", slot, name);
  if (guarded_get(s, slot, &si) != PT_OK)
    return snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
  if (!si.record_ok || !snap_state_holds_data(si.state))
    return snap_err(err, errlen, PT_ESTATE, "slot %" PRIu32 " of '%s' holds "
                    "no sealed step", slot, s->name);

  const uint64_t hbytes = header_bytes_for(s->lay.nregions, s->lay.nblocks);
  const uint64_t dbytes = align_up(s->lay.slot_bytes, SNAP_FILE_ALIGN);
  const uint64_t fbytes = hbytes + dbytes;
  if (posix_memalign((void **)&h, SNAP_FILE_ALIGN, (size_t)hbytes) != 0)
    return snap_err(err, errlen, -ENOMEM, "no memory for a %" PRIu64
                    "-byte file header", hbytes);
  memset(h, 0, (size_t)hbytes);
  header_build(h, hbytes, s, &si, fbytes);
  snap_put64(h + F_MARK, o != NULL ? o->mark : 0);
  uint32_t *table = (uint32_t *)(h + SNAP_FILE_PREAMBLE +
                                 (uint64_t)s->lay.nregions * REG_ENTRY_BYTES);
  if (guarded_copy(s, table, snap_slot_crcs(s, slot),
                   ((size_t)s->lay.nblocks + SNAP_TABLE_TRAILER) * 4) != 0) {
    free(h);
    return snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
  }
  snap_put32(h + F_CRC, header_crc(h, hbytes));
  /* What the data is checked against as it goes: a slot damaged in memory
   * is never made a file that a manifest could call complete. */
  struct snap_file view = {.regions = s->regions, .table = table};
  view.info.nregions = s->lay.nregions;
  view.info.nblocks = s->lay.nblocks;
  snprintf(view.name, sizeof(view.name), "slot %" PRIu32 " of %.200s", slot,
           s->name);
  uint32_t next = 0;

  int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
  unlinkat(dirfd, tmp, 0); /* a leftover of this pid's predecessor */
  /* Made plain, then O_DIRECT where the file system takes it: an open with
   * O_CREAT|O_DIRECT that a file system refuses may have made the file. */
  fd = openat(dirfd, tmp, flags, 0600);
  st->direct = false;
  if (fd >= 0 && !(o != NULL && o->buffered)) {
    int fl = fcntl(fd, F_GETFL);
    st->direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
  }
  if (fd < 0) {
    rc = -errno;
    snap_err(err, errlen, rc, "cannot create '%s': %s", tmp, strerror(-rc));
    goto out;
  }
  rc = posix_fallocate(fd, 0, (off_t)fbytes);
  if (rc != 0) {
    rc = -rc;
    snap_err(err, errlen, rc, "cannot reserve %" PRIu64 " bytes for '%s': %s",
             fbytes, name, strerror(-rc));
    goto out_unlink;
  }
  if ((rc = full_pwrite(fd, h, (size_t)hbytes, 0)) != PT_OK) {
    snap_err(err, errlen, rc, "cannot write the header of '%s': %s", name,
             strerror(-rc));
    goto out_unlink;
  }
  /* The data straight from the slot: 2 MiB aligned, and its stride covers
   * the rounding up to SNAP_FILE_ALIGN. */
  const uint8_t *data = snap_slot_data(s, slot);
  const uint32_t chunk = chunk_of(o);
  uint64_t t_data = now_ns(CLOCK_MONOTONIC);
  /* The blocks are checked on a thread of their own while the disk takes
   * them (the CRCs and the writes overlap); the file is renamed into place
   * only once every block matched. Without the thread, each piece is
   * checked before it is written. */
  ck = (struct checker){.s = s, .view = &view, .data = data, .dbytes = dbytes};
  checking = pthread_create(&checker, NULL, check_main, &ck) == 0;
  for (uint64_t off = 0; off < dbytes; off += chunk) {
    if (cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the write of '%s' was "
                    "cancelled", name);
      goto out_unlink;
    }
    size_t n = (size_t)(dbytes - off < chunk ? dbytes - off : chunk);
    if (!checking && (rc = guarded_blocks(s, &view, data, off + n, &next, err,
                                          errlen)) != PT_OK)
      goto out_unlink;
    if ((rc = full_pwrite(fd, data + off, n, hbytes + off)) != PT_OK) {
      snap_err(err, errlen, rc, "cannot write '%s' at byte %" PRIu64 ": %s",
               name, hbytes + off, strerror(-rc));
      goto out_unlink;
    }
    st->bytes += n;
    pace(o, t_data, off + n);
  }
  if (fsync(fd) != 0) {
    rc = -errno;
    snap_err(err, errlen, rc, "cannot fsync '%s': %s", name, strerror(-rc));
    goto out_unlink;
  }
  /* The slot still holds what the file says: else it is some other step's
   * bytes, half of them. */
  struct snap_slot_info after;
  if (checking) {
    pthread_join(checker, NULL);
    checking = false;
    next = ck.next;
    if (ck.rc != PT_OK) {
      rc = ck.rc;
      snap_err(err, errlen, rc, "%s", ck.err);
      goto out_unlink;
    }
  }
  if (next != s->lay.nblocks) {
    rc = snap_err(err, errlen, PT_ECHECKSUM, "slot %" PRIu32 " of '%s': %"
                  PRIu32 " of %" PRIu32 " blocks checked", slot, s->name,
                  next, s->lay.nblocks);
    goto out_unlink;
  }
  /* The blob, against the record (a guarded copy first). */
  uint8_t *blob = malloc(si.blob_bytes > 0 ? si.blob_bytes : 1);
  if (blob == NULL) {
    rc = snap_err(err, errlen, -ENOMEM, "no memory");
    goto out_unlink;
  }
  rc = si.blob_bytes <= s->lay.blob_max
           ? guarded_copy(s, blob, snap_slot_blob(s, slot), si.blob_bytes)
           : -EINVAL;
  bool blob_ok = rc == 0 && crc32c(blob, si.blob_bytes) == si.blob_crc;
  free(blob);
  if (!blob_ok) {
    rc = snap_err(err, errlen, rc == -EFAULT ? -EFAULT : PT_ECHECKSUM,
                  "slot %" PRIu32 " of '%s': the blob does not match its "
                  "checksum", slot, s->name);
    goto out_unlink;
  }
  if (guarded_get(s, slot, &after) != PT_OK) {
    rc = snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the object "
                  "shrank", s->name);
    goto out_unlink;
  }
  if (!after.record_ok || after.step != si.step ||
      after.generation != si.generation || !snap_state_holds_data(after.state)) {
    rc = snap_err(err, errlen, PT_ESTALE, "slot %" PRIu32 " of '%s' was "
                  "reused while step %" PRIu64 " was written", slot, s->name,
                  si.step);
    goto out_unlink;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = -errno;
    snap_err(err, errlen, rc, "cannot close '%s': %s", name, strerror(-rc));
    goto out_unlink;
  }
  fd = -1;
  if (renameat(dirfd, tmp, dirfd, name) != 0) {
    rc = -errno;
    snap_err(err, errlen, rc, "cannot rename '%s' to '%s': %s", tmp, name,
             strerror(-rc));
    goto out_unlink;
  }
  if (fsync(dirfd) != 0) {
    rc = -errno;
    snap_err(err, errlen, rc, "cannot fsync the directory of '%s': %s", name,
             strerror(-rc));
    goto out;
  }
  st->ns = now_ns(CLOCK_MONOTONIC) - t0;
  rc = PT_OK;
  goto out;

out_unlink:
  if (checking)
    pthread_join(checker, NULL);
  checking = false;
  if (fd >= 0)
    close(fd);
  fd = -1;
  unlinkat(dirfd, tmp, 0);
out:
  if (fd >= 0)
    close(fd);
  free(h);
  return rc;
}

/* ---- read ---- */

static int full_pread(int fd, void *buf, size_t len, uint64_t off)
{
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pread(fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -ENODATA; /* shorter than its header says */
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
      in->header_bytes != header_bytes_for(in->nregions, in->nblocks))
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
  if (in->header_bytes != header_bytes_for(in->nregions, in->nblocks) ||
      in->file_bytes != in->header_bytes + align_up(in->slot_bytes,
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
      full_pread(f->fd, pre, sizeof(pre), 0) != PT_OK) {
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
  if ((rc = full_pread(f->fd, f->hdr, (size_t)hbytes, 0)) != PT_OK) {
    snap_err(err, errlen, PT_EFORMAT, "cannot read the header of '%s': %s",
             name, pt_strerror(rc));
    rc = PT_EFORMAT;
    goto fail;
  }
  uint32_t stored = snap_get32(f->hdr + F_CRC), calc = header_crc(f->hdr, hbytes);
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
                    char *err, size_t errlen)
{
  const struct snap_file_info *in = &f->info;

  if (strcmp(in->job, s->job) != 0 ||
      memcmp(in->instance, s->instance, SNAP_INSTANCE_BYTES) != 0 ||
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
  uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  if (slot >= s->lay.nslots)
    return snap_err(err, errlen, -EINVAL, "no slot %" PRIu32, slot);
  if ((rc = snap_file_match(f, s, err, errlen)) != PT_OK)
    return rc;
  uint8_t *data = snap_slot_data(s, slot);
  const uint64_t dbytes = align_up(f->info.slot_bytes, SNAP_FILE_ALIGN);
  const uint32_t chunk = chunk_of(o);
  int fd = data_fd(f, o, &st->direct);
  uint32_t next = 0;
  rc = PT_OK;
  for (uint64_t off = 0; off < dbytes && rc == PT_OK; off += chunk) {
    if (cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the read of '%s' was "
                    "cancelled", f->name);
      break;
    }
    size_t n = (size_t)(dbytes - off < chunk ? dbytes - off : chunk);
    rc = full_pread(fd, data + off, n, f->info.header_bytes + off);
    if (rc != PT_OK) {
      snap_err(err, errlen, rc, "cannot read '%s' at byte %" PRIu64 ": %s",
               f->name, f->info.header_bytes + off, pt_strerror(rc));
      break;
    }
    st->bytes += n;
    rc = guarded_blocks(s, f, data, off + n, &next, err, errlen);
    pace(o, t0, off + n);
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
    else if (guarded_copy(s, blob, data + f->info.blob_off,
                          f->info.blob_bytes) != 0)
      rc = snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
    else
      rc = check_blob(f, blob, err, errlen);
    free(blob);
  }
  if (rc == PT_OK &&
      guarded_copy(s, snap_slot_crcs(s, slot), f->table,
                   ((size_t)f->info.nblocks + SNAP_TABLE_TRAILER) * 4) != 0)
    rc = snap_err(err, errlen, -EFAULT, "a write of '%s' faulted: the object "
                  "shrank", s->name);
  if (rc != PT_OK)
    return rc;
  st->ns = now_ns(CLOCK_MONOTONIC) - t0;
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
  uint64_t t0 = now_ns(CLOCK_MONOTONIC);
  const uint64_t dbytes = align_up(f->info.slot_bytes, SNAP_FILE_ALIGN);
  /* A piece holds whole blocks, and the blob area (SNAP_BLOB_MAX, at most a
   * block) follows the last region: pieces of chunk + one block carried
   * over. */
  uint32_t chunk = chunk_of(o);
  if (chunk < KERN_BLOCK_SIZE)
    chunk = KERN_BLOCK_SIZE;
  const uint64_t cap = (uint64_t)chunk + KERN_BLOCK_SIZE + SNAP_BLOB_MAX;
  if (posix_memalign((void **)&buf, SNAP_FILE_ALIGN, (size_t)cap) != 0)
    return snap_err(err, errlen, -ENOMEM, "no memory to read '%s'", f->name);
  int fd = data_fd(f, o, &st->direct);
  uint64_t base = 0, have = 0; /* buf holds data[base, have) */
  uint32_t next = 0;
  while (have < dbytes && rc == PT_OK) {
    if (cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the check of '%s' was "
                    "cancelled", f->name);
      break;
    }
    size_t n = (size_t)(dbytes - have < chunk ? dbytes - have : chunk);
    rc = full_pread(fd, buf + (have - base), n, f->info.header_bytes + have);
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
  st->ns = now_ns(CLOCK_MONOTONIC) - t0;
  return rc;
}

int snap_file_sweep(int dirfd)
{
  /* A descriptor of its own: a dup would share (and leave at the end) the
   * caller's directory offset. */
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), n = 0;
  if (fd < 0)
    return 0;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return 0;
  }
  struct dirent *e;
  size_t sl = strlen(SNAP_FILE_TMP_SUFFIX);
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (e->d_name[0] != '.' || l <= sl + 1 ||
        strcmp(e->d_name + l - sl, SNAP_FILE_TMP_SUFFIX) != 0)
      continue;
    if (unlinkat(dirfd, e->d_name, 0) == 0)
      n++;
  }
  closedir(d);
  return n;
}
