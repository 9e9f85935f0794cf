/*
 * snap_store.c — the life of a snapshot object in /dev/shm: creating it
 * (budget and free-space checks before anything is allocated, posix_fallocate
 * so a full tmpfs is an error and never a SIGBUS later, one pre-fault pass so
 * snapshots copy at memcpy speed), opening and validating an existing one,
 * renaming a damaged one aside, object names, and the read-only accessors
 * of the header (those of one slot are in snap_slot.c).
 *
 * The byte layout is in snap_store.h and is computed and checked in
 * snap_layout.c; the slot state machine is in snap_slot.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "common/hex.h"
#include "snapshot/snap_internal.h"

/* Linux 5.14; older headers lack the name, older kernels answer EINVAL. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define SHM_DIR "/dev/shm"

static bool name_part_ok(const char *s)
{
  return strchr(s, '/') == NULL;
}

int snap_store_name(char *out, size_t len, const char *prefix, const char *job,
                    uint32_t rank)
{
  if (out == NULL || job == NULL || job[0] == '\0' || !name_part_ok(job))
    return -EINVAL;
  if (prefix == NULL)
    prefix = "";
  if (!name_part_ok(prefix))
    return -EINVAL;
  int n = snprintf(out, len, "/%spt.%s.%" PRIu32, prefix, job, rank);
  if (n < 0)
    return -EINVAL;
  if ((size_t)n >= len)
    return -ENAMETOOLONG;
  return PT_OK;
}

uint64_t snap_store_bytes_needed(const struct snap_params *p)
{
  if (p == NULL || p->nregions < 1 || p->nregions > SNAP_MAX_REGIONS)
    return 0;
  struct snap_region *regions = calloc(p->nregions, sizeof(*regions));
  if (regions == NULL)
    return 0;
  struct snap_layout lay;
  int rc = snap_layout_params(p, &lay, regions, NULL, 0);
  free(regions);
  return rc < 0 ? 0 : lay.total;
}

/* Faults in every page of a fresh mapping once, so that the first snapshot
 * copies at memcpy speed instead of tmpfs first-touch speed. */
static int prefault(uint8_t *base, uint64_t bytes)
{
  if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0)
    return PT_OK;
  if (errno != EINVAL)
    return -errno;
  /* A kernel without MADV_POPULATE_WRITE: touch one byte per page. */
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0)
    page = 4096;
  volatile uint8_t *v = base;
  for (uint64_t off = 0; off < bytes; off += (uint64_t)page)
    v[off] = v[off];
  return PT_OK;
}

int snap_store_create(struct snap_store **out, const char *name,
                      const struct snap_params *p, char *errbuf, size_t errlen)
{
  struct snap_region *regions = NULL;
  struct snap_store *s = NULL;
  struct snap_layout lay;
  uint8_t *base = MAP_FAILED;
  int fd = -1, rc;

  if (out == NULL || name == NULL || p == NULL)
    return snap_err(errbuf, errlen, -EINVAL, "snap_store_create: missing argument");
  *out = NULL;
  if (p->nregions < 1 || p->nregions > SNAP_MAX_REGIONS)
    return snap_err(errbuf, errlen, -EINVAL,
                    "'%s': %" PRIu32 " regions: between 1 and %d are allowed",
                    name, p->nregions, SNAP_MAX_REGIONS);
  regions = calloc(p->nregions, sizeof(*regions));
  if (regions == NULL)
    return snap_err(errbuf, errlen, -ENOMEM, "'%s': out of memory", name);
  char why[512];
  rc = snap_layout_params(p, &lay, regions, why, sizeof(why));
  if (rc < 0) {
    rc = snap_err(errbuf, errlen, rc, "'%s': %s", name, why);
    goto out_free_regions;
  }

  /* Refusals come before anything is allocated. */
  if (p->budget_bytes != 0 && lay.total > p->budget_bytes) {
    rc = snap_err(errbuf, errlen, PT_EBUDGET,
                  "'%s': needs %" PRIu64 " bytes, more than the memory budget "
                  "of %" PRIu64 " bytes",
                  name, lay.total, p->budget_bytes);
    goto out_free_regions;
  }
  struct statvfs vfs;
  if (statvfs(SHM_DIR, &vfs) != 0) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot inspect %s: %s", name,
                  SHM_DIR, strerror(-rc));
    goto out_free_regions;
  }
  uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  if (lay.total > avail) {
    rc = snap_err(errbuf, errlen, -ENOSPC,
                  "'%s': needs %" PRIu64 " bytes, %s has %" PRIu64
                  " bytes available",
                  name, lay.total, SHM_DIR, avail);
    goto out_free_regions;
  }

  fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    rc = -errno;
    if (rc == -EEXIST)
      rc = snap_err(errbuf, errlen, rc, "'%s': already exists", name);
    else
      rc = snap_err(errbuf, errlen, rc, "'%s': cannot create: %s", name,
                    strerror(-rc));
    goto out_free_regions;
  }
  /* Locked before it holds anything, so that no other SMP can take (or set
   * aside) an object that is still being written. */
  if (p->lock && flock(fd, LOCK_EX | LOCK_NB) != 0) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc == -EWOULDBLOCK ? -EBUSY : rc,
                  "'%s': cannot lock the new object: %s", name, strerror(-rc));
    goto out_unlink;
  }
  /* The umask may have taken bits away; the object is exactly 0600. */
  if (fchmod(fd, 0600) != 0) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot set mode 0600: %s", name,
                  strerror(-rc));
    goto out_unlink;
  }
  /* Huge pages: tmpfs decides a page's size when the page is allocated,
   * and fallocate (no mapping, so no MADV_HUGEPAGE) would allocate 4 KiB
   * pages on a huge=advise mount. So the object is sized, mapped, advised
   * and pre-faulted first (MADV_POPULATE_WRITE answers a full tmpfs with an
   * error, never SIGBUS), and fallocated after, which then only checks. */
  bool huge_first = p->huge_pages;
  int err = huge_first ? (ftruncate(fd, (off_t)lay.total) == 0 ? 0 : errno)
                       : posix_fallocate(fd, 0, (off_t)lay.total);
  if (err != 0) {
    rc = snap_err(errbuf, errlen, -err,
                  "'%s': cannot allocate %" PRIu64 " bytes in %s: %s", name,
                  lay.total, SHM_DIR, strerror(err));
    goto out_unlink;
  }
  base = mmap(NULL, lay.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot map %" PRIu64 " bytes: %s",
                  name, lay.total, strerror(-rc));
    goto out_unlink;
  }
  if (huge_first) {
    madvise(base, lay.total, MADV_HUGEPAGE); /* EINVAL: no THP; 4 KiB pages */
    if (madvise(base, lay.total, MADV_POPULATE_WRITE) != 0) {
      /* A kernel before 5.14 (EINVAL): fallocate first, then touch. */
      rc = errno == EINVAL ? 0 : -errno;
      if (rc < 0) {
        rc = snap_err(errbuf, errlen, rc == -EFAULT ? -ENOSPC : rc,
                      "'%s': cannot allocate %" PRIu64 " bytes in %s: %s",
                      name, lay.total, SHM_DIR,
                      strerror(rc == -EFAULT ? ENOSPC : -rc));
        goto out_unmap;
      }
    }
    err = posix_fallocate(fd, 0, (off_t)lay.total);
    if (err != 0) {
      rc = snap_err(errbuf, errlen, -err,
                    "'%s': cannot allocate %" PRIu64 " bytes in %s: %s", name,
                    lay.total, SHM_DIR, strerror(err));
      goto out_unmap;
    }
  }
  rc = prefault(base, lay.total);
  if (rc < 0) {
    rc = snap_err(errbuf, errlen, rc,
                  "'%s': cannot pre-fault %" PRIu64 " bytes: %s", name,
                  lay.total, strerror(-rc));
    goto out_unmap;
  }

  snap_layout_write(base, &lay, p, regions);

  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    rc = snap_err(errbuf, errlen, -ENOMEM, "'%s': out of memory", name);
    goto out_unmap;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot stat: %s", name,
                  strerror(-rc));
    goto out_free_store;
  }
  s->fd = fd;
  s->dev = (uint64_t)st.st_dev;
  s->ino = (uint64_t)st.st_ino;
  /* Reading back what was written checks the writer against the reader. */
  uint8_t hdr[SNAP_HEADER_BYTES];
  memcpy(hdr, base, sizeof(hdr));
  rc = snap_layout_check_header(hdr, lay.total, name, errbuf, errlen);
  if (rc == PT_OK)
    rc = snap_layout_parse(s, hdr, base, lay.total, name, errbuf, errlen);
  if (rc < 0)
    goto out_free_store;
  memcpy(s->hdr, hdr, sizeof(s->hdr));

  if (p->huge_pages)
    s->huge_bytes = snap_huge_mapped_bytes(base);
  free(regions);
  *out = s;
  return PT_OK;

out_free_store:
  free(s);
out_unmap:
  munmap(base, lay.total);
out_unlink:
  close(fd);
  shm_unlink(name);
out_free_regions:
  free(regions);
  return rc;
}

int snap_store_open(struct snap_store **out, const char *name, char *errbuf,
                    size_t errlen)
{
  struct snap_store *s = NULL;
  uint8_t *base = MAP_FAILED;
  uint64_t bytes = 0;
  int rc;

  if (out == NULL || name == NULL)
    return snap_err(errbuf, errlen, -EINVAL, "snap_store_open: missing argument");
  *out = NULL;
  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) {
    rc = -errno;
    if (rc == -ENOENT)
      return snap_err(errbuf, errlen, rc, "'%s': no such object", name);
    return snap_err(errbuf, errlen, rc, "'%s': cannot open: %s", name,
                    strerror(-rc));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot stat: %s", name,
                  strerror(-rc));
    goto out_close;
  }
  /* Another user's object is never read: it could be planted to be restored
   * from, or read by its owner. */
  if (st.st_uid != geteuid() || (st.st_mode & 07777) != 0600) {
    rc = snap_err(errbuf, errlen, -EPERM,
                  "'%s' is owned by uid %u with mode %04o: a snapshot object "
                  "must be owned by uid %u with mode 0600",
                  name, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                  (unsigned)geteuid());
    goto out_close;
  }
  bytes = (uint64_t)st.st_size;
  if (bytes < SNAP_HEADER_BYTES) {
    rc = snap_err(errbuf, errlen, PT_EFORMAT,
                  "'%s': truncated: %" PRIu64 " bytes, header needs %u", name,
                  bytes, SNAP_HEADER_BYTES);
    goto out_close;
  }
  if (bytes > SNAP_MAX_TOTAL_BYTES) {
    rc = snap_err(errbuf, errlen, PT_EFORMAT,
                  "'%s': %" PRIu64 " bytes is larger than any snapshot object",
                  name, bytes);
    goto out_close;
  }
  /* Mapping exactly the object's size keeps every read inside it; nothing
   * the object says is trusted before it is checked against that size. */
  base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    rc = -errno;
    rc = snap_err(errbuf, errlen, rc, "'%s': cannot map %" PRIu64 " bytes: %s",
                  name, bytes, strerror(-rc));
    goto out_close;
  }
  uint8_t hdr[SNAP_HEADER_BYTES];
  memcpy(hdr, base, sizeof(hdr));
  rc = snap_layout_check_header(hdr, bytes, name, errbuf, errlen);
  if (rc < 0)
    goto out_unmap;
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    rc = snap_err(errbuf, errlen, -ENOMEM, "'%s': out of memory", name);
    goto out_unmap;
  }
  rc = snap_layout_parse(s, hdr, base, bytes, name, errbuf, errlen);
  if (rc < 0)
    goto out_free_store;
  memcpy(s->hdr, hdr, sizeof(s->hdr));
  s->fd = fd;
  s->dev = (uint64_t)st.st_dev;
  s->ino = (uint64_t)st.st_ino;
  *out = s;
  return PT_OK;

out_free_store:
  free(s);
out_unmap:
  munmap(base, bytes);
out_close:
  close(fd);
  return rc;
}

void snap_store_close(struct snap_store *s)
{
  if (s == NULL)
    return;
  if (s->base != NULL)
    munmap(s->base, s->lay.total);
  if (s->fd >= 0)
    close(s->fd);
  free(s->regions);
  free(s);
}

int snap_store_fd(const struct snap_store *s) { return s->fd; }

/* The pid holding a flock on the file (dev, ino), from /proc/locks; 0 when
 * it cannot be told. */
static int lock_holder(uint64_t dev, uint64_t ino)
{
  FILE *f = fopen("/proc/locks", "re");
  char line[256];
  int pid = 0;

  if (f == NULL)
    return 0;
  while (pid == 0 && fgets(line, sizeof(line), f) != NULL) {
    char kind[16], mode[16];
    unsigned maj, min;
    unsigned long long i;
    int p;
    /* "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF" */
    if (sscanf(line, "%*[^:]: %15s %*s %15s %d %x:%x:%llu", kind, mode, &p,
               &maj, &min, &i) == 6 &&
        strcmp(kind, "FLOCK") == 0 && i == ino && maj == major((dev_t)dev) &&
        min == minor((dev_t)dev))
      pid = p;
  }
  fclose(f);
  return pid;
}

int snap_store_lock(struct snap_store *s, const char *name, char *errbuf,
                    size_t errlen)
{
  if (flock(s->fd, LOCK_EX | LOCK_NB) == 0)
    return PT_OK;
  int rc = -errno;
  if (rc != -EWOULDBLOCK)
    return snap_err(errbuf, errlen, rc, "'%s': cannot lock: %s", name,
                    strerror(-rc));
  int pid = lock_holder(s->dev, s->ino);
  if (pid > 0)
    return snap_err(errbuf, errlen, -EBUSY,
                    "'%s' is in use by another SMP (pid %d holds its lock)",
                    name, pid);
  return snap_err(errbuf, errlen, -EBUSY,
                  "'%s' is in use by another SMP (another process holds its "
                  "lock)", name);
}

int snap_store_lock_probe(const char *name, char *errbuf, size_t errlen)
{
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd < 0)
    return errno == ENOENT ? PT_OK : -errno;
  struct stat st;
  int rc = PT_OK;
  /* A shared lock fails only against the exclusive lock of a live SMP and
   * never stops one from taking its own for long. */
  if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
    rc = -errno;
    if (rc == -EWOULDBLOCK) {
      int pid = fstat(fd, &st) == 0
                    ? lock_holder((uint64_t)st.st_dev, (uint64_t)st.st_ino)
                    : 0;
      if (pid > 0)
        rc = snap_err(errbuf, errlen, -EBUSY,
                      "'%s' is in use by another SMP (pid %d holds its lock)",
                      name, pid);
      else
        rc = snap_err(errbuf, errlen, -EBUSY,
                      "'%s' is in use by another SMP (another process holds "
                      "its lock)", name);
    }
  }
  close(fd); /* drops the shared lock */
  return rc;
}

int snap_store_check(const struct snap_store *s, const char *name, bool full,
                     char *errbuf, size_t errlen)
{
  struct stat st;

  /* The size first: nothing of the mapping may be read past a truncation. */
  if (fstat(s->fd, &st) != 0)
    return snap_err(errbuf, errlen, -errno, "'%s': cannot stat: %s", name,
                    strerror(errno));
  if ((uint64_t)st.st_size < s->lay.total)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s' was truncated to %" PRIu64 " bytes (%" PRIu64
                    " expected)",
                    name, (uint64_t)st.st_size, s->lay.total);
  if (!full)
    return PT_OK;
  if (memcmp(s->base, s->hdr, sizeof(s->hdr)) != 0)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': its header was overwritten", name);
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd < 0) {
    if (errno == ENOENT)
      return snap_err(errbuf, errlen, -ENOENT, "'%s' was unlinked", name);
    return snap_err(errbuf, errlen, -errno, "'%s': cannot open: %s", name,
                    strerror(errno));
  }
  int rc = fstat(fd, &st) != 0 ? -errno : PT_OK;
  close(fd);
  if (rc < 0)
    return snap_err(errbuf, errlen, rc, "'%s': cannot stat: %s", name,
                    strerror(-rc));
  if ((uint64_t)st.st_dev != s->dev || (uint64_t)st.st_ino != s->ino)
    return snap_err(errbuf, errlen, -ESTALE,
                    "'%s' was replaced by another object", name);
  return PT_OK;
}

int snap_store_unlink(const char *name)
{
  if (name == NULL)
    return -EINVAL;
  return shm_unlink(name) == 0 ? PT_OK : -errno;
}

/* rename(2) that never replaces an existing file; plain rename where the
 * file system cannot promise that. */
static int rename_noreplace(const char *from, const char *to)
{
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return PT_OK;
  if (errno != EINVAL && errno != ENOSYS)
    return -errno;
  if (access(to, F_OK) == 0)
    return -EEXIST;
  return rename(from, to) == 0 ? PT_OK : -errno;
}

int snap_store_quarantine(const char *name, char *newname, size_t len)
{
  if (name == NULL || name[0] != '/' || name[1] == '\0' ||
      strchr(name + 1, '/') != NULL)
    return -EINVAL;
  char from[PATH_MAX], to[PATH_MAX], shm_to[PATH_MAX];
  if ((size_t)snprintf(from, sizeof(from), SHM_DIR "%s", name) >= sizeof(from))
    return -ENAMETOOLONG;
  long long now = (long long)time(NULL);

  /* Two quarantines within one second get distinct names. */
  for (int n = 0; n < 100; n++) {
    int w = n == 0 ? snprintf(shm_to, sizeof(shm_to), "%s.bad-%lld", name, now)
                   : snprintf(shm_to, sizeof(shm_to), "%s.bad-%lld.%d", name,
                              now, n);
    if (w < 0 || (size_t)w >= sizeof(shm_to) ||
        (size_t)snprintf(to, sizeof(to), SHM_DIR "%s", shm_to) >= sizeof(to))
      return -ENAMETOOLONG;
    if (newname != NULL && strlen(shm_to) >= len)
      return -ENAMETOOLONG;
    int rc = rename_noreplace(from, to);
    if (rc == -EEXIST)
      continue;
    if (rc < 0)
      return rc;
    if (newname != NULL)
      memcpy(newname, shm_to, strlen(shm_to) + 1);
    return PT_OK;
  }
  return -EEXIST;
}

/* ---- accessors: the values were validated when the store was opened ---- */

const char *snap_store_job(const struct snap_store *s) { return s->job; }
uint32_t snap_store_rank(const struct snap_store *s) { return s->rank; }
uint32_t snap_store_world(const struct snap_store *s) { return s->world; }
uint32_t snap_store_nslots(const struct snap_store *s) { return s->lay.nslots; }
uint32_t snap_store_nregions(const struct snap_store *s)
{
  return s->lay.nregions;
}
uint32_t snap_store_nblocks(const struct snap_store *s) { return s->lay.nblocks; }
uint64_t snap_store_total_bytes(const struct snap_store *s)
{
  return s->lay.total;
}
uint64_t snap_store_huge_bytes(const struct snap_store *s)
{
  return s->huge_bytes;
}
const uint8_t *snap_store_instance(const struct snap_store *s)
{
  return s->instance;
}

uint64_t snap_store_ctime_ns(const struct snap_store *s)
{
  return snap_get64((const uint8_t *)s->base + HDR_CTIME);
}
uint64_t snap_store_slot_bytes(const struct snap_store *s)
{
  return s->lay.slot_bytes;
}
void *snap_store_base(const struct snap_store *s) { return s->base; }

const struct snap_region *snap_store_region(const struct snap_store *s,
                                            uint32_t i)
{
  if (i >= s->lay.nregions)
    return NULL;
  return &s->regions[i];
}

bool snap_store_regions_match(const struct snap_store *s,
                              const struct snap_region_desc *regions,
                              uint32_t n)
{
  if (n != s->lay.nregions || regions == NULL)
    return false;
  for (uint32_t i = 0; i < n; i++) {
    const struct snap_region *r = &s->regions[i];
    if (strnlen(regions[i].name, SNAP_NAME_MAX) >= SNAP_NAME_MAX ||
        strcmp(regions[i].name, r->name) != 0 ||
        regions[i].bytes != r->bytes || regions[i].kind != r->kind)
      return false;
  }
  return true;
}

void snap_store_code(const struct snap_store *s, uint32_t *k, uint32_t *m)
{
  if (k != NULL)
    *k = s->lay.ec_k;
  if (m != NULL)
    *m = s->lay.ec_m;
}

void *snap_store_parity(const struct snap_store *s, uint32_t slot,
                        uint64_t *len)
{
  if (len != NULL)
    *len = 0;
  if (slot >= s->lay.nslots || s->lay.parity_bytes == 0)
    return NULL;
  if (len != NULL)
    *len = s->lay.parity_bytes;
  return s->base + s->lay.parity_off + (uint64_t)slot * s->lay.parity_stride;
}

uint64_t snap_store_parity_chunk(const struct snap_store *s)
{
  return s->lay.ec_m == 0 ? 0 : s->lay.parity_bytes / s->lay.ec_m;
}

uint32_t snap_store_blob_max(const struct snap_store *s)
{
  return (uint32_t)s->lay.blob_max;
}

void snap_store_instance_hex(const uint8_t id[SNAP_INSTANCE_BYTES],
                             char out[33])
{
  static const char digits[] = "0123456789abcdef";

  for (int i = 0; i < SNAP_INSTANCE_BYTES; i++) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 15];
  }
  out[2 * SNAP_INSTANCE_BYTES] = '\0';
}

bool snap_store_instance_parse(const char *hex,
                               uint8_t id[SNAP_INSTANCE_BYTES])
{
  if (strlen(hex) != 2 * SNAP_INSTANCE_BYTES)
    return false;
  for (int i = 0; i < SNAP_INSTANCE_BYTES; i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    id[i] = (uint8_t)(hi * 16 + lo);
  }
  return true;
}
