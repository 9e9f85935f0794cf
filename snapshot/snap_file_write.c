/*
 * snap_file_write.c — writing a rank's step as a file of the persistent
 * tier (snap_file.h: the format, the discipline), and removing what a
 * writer killed in the middle left.
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
#include "snapshot/snap_file_int.h"
#include "snapshot/snap_internal.h"

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
  snap_put64(h + F_TIME, snap_file_now_ns(CLOCK_REALTIME));
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
  c->rc = snap_file_guarded_blocks(c->s, c->view, c->data, c->dbytes, &c->next, c->err,
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
  uint64_t t0 = snap_file_now_ns(CLOCK_MONOTONIC);
  if (slot >= s->lay.nslots || strchr(name, '/') != NULL ||
      snprintf(tmp, sizeof(tmp), ".%s.%d%s", name, (int)getpid(),
               SNAP_FILE_TMP_SUFFIX) >= (int)sizeof(tmp))
    return snap_err(err, errlen, -EINVAL, "cannot write slot %" PRIu32
                    " as '%s': bad slot or name", slot, name);
  if (snap_file_guarded_get(s, slot, &si) != PT_OK)
    return snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
  if (!si.record_ok || !snap_state_holds_data(si.state))
    return snap_err(err, errlen, PT_ESTATE, "slot %" PRIu32 " of '%s' holds "
                    "no sealed step", slot, s->name);

  const uint64_t hbytes = snap_file_header_bytes(s->lay.nregions, s->lay.nblocks);
  const uint64_t dbytes = snap_file_align_up(s->lay.slot_bytes, SNAP_FILE_ALIGN);
  const uint64_t fbytes = hbytes + dbytes;
  if (posix_memalign((void **)&h, SNAP_FILE_ALIGN, (size_t)hbytes) != 0)
    return snap_err(err, errlen, -ENOMEM, "no memory for a %" PRIu64
                    "-byte file header", hbytes);
  memset(h, 0, (size_t)hbytes);
  header_build(h, hbytes, s, &si, fbytes);
  snap_put64(h + F_MARK, o != NULL ? o->mark : 0);
  uint32_t *table = (uint32_t *)(h + SNAP_FILE_PREAMBLE +
                                 (uint64_t)s->lay.nregions * REG_ENTRY_BYTES);
  if (snap_file_guarded_copy(s, table, snap_slot_crcs(s, slot),
                   ((size_t)s->lay.nblocks + SNAP_TABLE_TRAILER) * 4) != 0) {
    free(h);
    return snap_err(err, errlen, -EFAULT, "a read of '%s' faulted: the "
                    "object shrank", s->name);
  }
  snap_put32(h + F_CRC, snap_file_header_crc(h, hbytes));
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
  if ((rc = snap_file_io(fd, h, (size_t)hbytes, 0, true)) != PT_OK) {
    snap_err(err, errlen, rc, "cannot write the header of '%s': %s", name,
             strerror(-rc));
    goto out_unlink;
  }
  /* The data straight from the slot: 2 MiB aligned, and its stride covers
   * the rounding up to SNAP_FILE_ALIGN. */
  const uint8_t *data = snap_slot_data(s, slot);
  const uint32_t chunk = snap_file_chunk(o);
  uint64_t t_data = snap_file_now_ns(CLOCK_MONOTONIC);
  /* The blocks are checked on a thread of their own while the disk takes
   * them (the CRCs and the writes overlap); the file is renamed into place
   * only once every block matched. Without the thread, each piece is
   * checked before it is written. */
  ck = (struct checker){.s = s, .view = &view, .data = data, .dbytes = dbytes};
  checking = pthread_create(&checker, NULL, check_main, &ck) == 0;
  for (uint64_t off = 0; off < dbytes; off += chunk) {
    if (snap_file_cancelled(o)) {
      rc = snap_err(err, errlen, -ECANCELED, "the write of '%s' was "
                    "cancelled", name);
      goto out_unlink;
    }
    size_t n = (size_t)(dbytes - off < chunk ? dbytes - off : chunk);
    if (!checking && (rc = snap_file_guarded_blocks(s, &view, data, off + n, &next, err,
                                          errlen)) != PT_OK)
      goto out_unlink;
    rc = snap_file_io(fd, (void *)(data + off), n, hbytes + off, true);
    if (rc != PT_OK) {
      snap_err(err, errlen, rc, "cannot write '%s' at byte %" PRIu64 ": %s",
               name, hbytes + off, strerror(-rc));
      goto out_unlink;
    }
    st->bytes += n;
    snap_file_pace(o, t_data, off + n);
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
           ? snap_file_guarded_copy(s, blob, snap_slot_blob(s, slot), si.blob_bytes)
           : -EINVAL;
  bool blob_ok = rc == 0 && crc32c(blob, si.blob_bytes) == si.blob_crc;
  free(blob);
  if (!blob_ok) {
    rc = snap_err(err, errlen, rc == -EFAULT ? -EFAULT : PT_ECHECKSUM,
                  "slot %" PRIu32 " of '%s': the blob does not match its "
                  "checksum", slot, s->name);
    goto out_unlink;
  }
  if (snap_file_guarded_get(s, slot, &after) != PT_OK) {
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
  st->ns = snap_file_now_ns(CLOCK_MONOTONIC) - t0;
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
