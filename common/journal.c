/*
 * journal.c — see journal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/journal.h"
#include "common/state_file.h"

static const char MAGIC[8] = {'P', 'T', 'J', 'O', 'U', 'R', 'N', '1'};

struct journal {
  int fd;
  char path[PATH_MAX];
  uint64_t bytes;
  uint64_t records;
};

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int say(char *err, size_t errlen, int rc, const char *fmt, ...)
{
  va_list ap;

  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static void header_make(uint8_t h[JOURNAL_HDR_BYTES])
{
  memset(h, 0, JOURNAL_HDR_BYTES);
  memcpy(h, MAGIC, sizeof(MAGIC));
  put32(h + 8, JOURNAL_VERSION);
}

static uint32_t rec_crc(const uint8_t hdr[8], const void *data, size_t len)
{
  return crc32c_update(crc32c_update(CRC32C_SEED, hdr, 8), data, len);
}

static void rec_header(uint8_t h[JOURNAL_REC_HDR_BYTES], uint32_t type,
                       const void *data, size_t len)
{
  put32(h, (uint32_t)len);
  put32(h + 4, type);
  put32(h + 8, rec_crc(h, data, len));
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
  const uint8_t *p = buf;

  while (len > 0) {
    ssize_t w = pwrite(fd, p, len, (off_t)off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    off += (uint64_t)w;
    len -= (size_t)w;
  }
  return 0;
}

static int read_whole(int fd, uint8_t **out, size_t *len)
{
  struct stat st;

  if (fstat(fd, &st) != 0)
    return -errno;
  uint8_t *b = malloc((size_t)st.st_size + 1);
  size_t have = 0;
  if (b == NULL)
    return -ENOMEM;
  while (have < (size_t)st.st_size) {
    ssize_t n = pread(fd, b + have, (size_t)st.st_size - have, (off_t)have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int rc = -errno;
      free(b);
      return rc;
    }
    if (n == 0)
      break;
    have += (size_t)n;
  }
  *out = b;
  *len = have;
  return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

/* A whole record (its length fits, its type is not 0, its CRC32C checks)
 * starting at some offset in [from, len)? OUT: *at, the first. A torn
 * append is the last record, so nothing whole follows its header; a
 * damaged length that runs past the end (or to it) with whole records
 * after it is damage, not a tear: dropping "the rest" would cut committed
 * records away. A chance match in a torn payload is a 32-bit CRC's. */
static bool whole_record_after(const uint8_t *b, size_t from, size_t len,
                               size_t *at)
{
  for (size_t o = from; o + JOURNAL_REC_HDR_BYTES <= len; o++) {
    uint32_t rlen = get32(b + o), type = get32(b + o + 4);
    if (type == 0 || rlen > len - o - JOURNAL_REC_HDR_BYTES)
      continue;
    if (rec_crc(b + o, b + o + JOURNAL_REC_HDR_BYTES, rlen) ==
        get32(b + o + 8)) {
      *at = o;
      return true;
    }
  }
  return false;
}

/* Walks the records after the header. OUT: *good (the end of the last
 * whole record), *n. PT_EFORMAT for damage that is not a torn tail. */
static int replay(const uint8_t *b, size_t len, journal_replay_fn fn,
                  void *arg, uint64_t *good, uint64_t *n, char *err,
                  size_t errlen)
{
  size_t off = JOURNAL_HDR_BYTES;

  *n = 0;
  while (off < len) {
    size_t left = len - off;
    if (left < JOURNAL_REC_HDR_BYTES)
      break; /* a torn record header */
    uint32_t rlen = get32(b + off), type = get32(b + off + 4);
    const char *bad = NULL;
    size_t end = len; /* where the bad record ends */
    size_t next;
    if (rlen > JOURNAL_MAX_RECORD) {
      bad = "its length is over the limit"; /* no torn write makes one */
    } else if (left - JOURNAL_REC_HDR_BYTES < rlen) {
      if (!whole_record_after(b, off + JOURNAL_REC_HDR_BYTES, len, &next))
        break; /* cut short: torn */
      return say(err, errlen, PT_EFORMAT,
                 "record %" PRIu64 " at offset %zu is damaged (its length, "
                 "%" PRIu32 " bytes, runs past the end of the file, and a "
                 "whole record follows at offset %zu)",
                 *n + 1, off, rlen, next);
    } else {
      end = off + JOURNAL_REC_HDR_BYTES + rlen;
      if (type == 0)
        bad = "its type is 0";
      else if (rec_crc(b + off, b + off + JOURNAL_REC_HDR_BYTES, rlen) !=
               get32(b + off + 8))
        bad = "its CRC32C does not match";
      if (bad != NULL && end >= len) {
        if (!whole_record_after(b, off + JOURNAL_REC_HDR_BYTES, len, &next))
          break; /* the last record, not fully written: torn */
        return say(err, errlen, PT_EFORMAT,
                   "record %" PRIu64 " at offset %zu is damaged (%s, and a "
                   "whole record follows at offset %zu, inside its %" PRIu32
                   " bytes)",
                   *n + 1, off, bad, next, rlen);
      }
    }
    if (bad != NULL) {
      if (all_zero(b + off, len - off))
        break; /* a file system may leave a torn append as zeros */
      if (end >= len)
        return say(err, errlen, PT_EFORMAT,
                   "record %" PRIu64 " at offset %zu is damaged (%s: %" PRIu32
                   " bytes, at most %u)",
                   *n + 1, off, bad, rlen, JOURNAL_MAX_RECORD);
      return say(err, errlen, PT_EFORMAT,
                 "record %" PRIu64 " at offset %zu is damaged (%s) and %zu "
                 "bytes follow it",
                 *n + 1, off, bad, len - end);
    }
    if (fn != NULL) {
      int rc = fn(arg, type, b + off + JOURNAL_REC_HDR_BYTES, rlen);
      if (rc != 0)
        return rc;
    }
    off += JOURNAL_REC_HDR_BYTES + rlen;
    (*n)++;
  }
  *good = off;
  return 0;
}

static int file_check(int fd, const char *path, char *err, size_t errlen)
{
  struct stat st;

  if (fstat(fd, &st) != 0)
    return -errno;
  if (!S_ISREG(st.st_mode))
    return say(err, errlen, PT_EFORMAT, "journal '%s' is not a regular file",
               path);
  if (st.st_uid != geteuid() || (st.st_mode & 077) != 0)
    return say(err, errlen, PT_EFORMAT,
               "journal '%s' is owned by uid %u with mode %03o (expected "
               "uid %u, mode 0600)",
               path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777),
               (unsigned)geteuid());
  return 0;
}

static int lock_fd(int fd)
{
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    return errno == EWOULDBLOCK ? -EBUSY : -errno;
  return 0;
}

int journal_open(struct journal **out, const char *path, journal_replay_fn fn,
                 void *arg, uint64_t *dropped, char *err, size_t errlen)
{
  uint8_t *b = NULL;
  size_t len = 0;
  int rc;

  *out = NULL;
  if (dropped != NULL)
    *dropped = 0;
  if (strlen(path) >= PATH_MAX)
    return -ENAMETOOLONG;
  struct journal *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return -ENOMEM;
  snprintf(j->path, sizeof(j->path), "%s", path);
  j->fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (j->fd < 0) {
    rc = errno == ELOOP ? say(err, errlen, PT_EFORMAT,
                              "journal '%s' is a symbolic link (not "
                              "followed)", path)
                        : -errno;
    free(j);
    return rc;
  }
  if ((rc = file_check(j->fd, path, err, errlen)) != 0)
    goto fail;
  if ((rc = lock_fd(j->fd)) != 0) {
    if (rc == -EBUSY)
      say(err, errlen, -EBUSY, "journal '%s' is held by another process",
          path);
    goto fail;
  }
  if ((rc = read_whole(j->fd, &b, &len)) != 0)
    goto fail;
  if (len == 0) { /* new: write the header */
    uint8_t h[JOURNAL_HDR_BYTES];
    header_make(h);
    if ((rc = pwrite_all(j->fd, h, sizeof(h), 0)) != 0 ||
        (fdatasync(j->fd) != 0 && (rc = -errno) != 0))
      goto fail;
    len = JOURNAL_HDR_BYTES;
    j->bytes = len;
    free(b);
    *out = j;
    return 0;
  }
  if (len < JOURNAL_HDR_BYTES || memcmp(b, MAGIC, sizeof(MAGIC)) != 0) {
    rc = say(err, errlen, PT_EFORMAT, "'%s' is not a pt journal", path);
    goto fail;
  }
  if (get32(b + 8) != JOURNAL_VERSION) {
    rc = say(err, errlen, PT_EFORMAT,
             "journal '%s' has version %" PRIu32 "; this ptd reads only "
             "version %u",
             path, get32(b + 8), JOURNAL_VERSION);
    goto fail;
  }
  uint64_t good = 0;
  rc = replay(b, len, fn, arg, &good, &j->records, err, errlen);
  if (rc == PT_EFORMAT) {
    char why[256];
    snprintf(why, sizeof(why), "%s", err != NULL ? err : "");
    say(err, errlen, PT_EFORMAT, "journal '%s': %s", path, why);
  }
  if (rc != 0)
    goto fail;
  if (good < len) { /* a torn last record: it never took effect */
    if (ftruncate(j->fd, (off_t)good) != 0 || fdatasync(j->fd) != 0) {
      rc = -errno;
      goto fail;
    }
    if (dropped != NULL)
      *dropped = len - good;
  }
  j->bytes = good;
  free(b);
  *out = j;
  return 0;
fail:
  free(b);
  close(j->fd);
  free(j);
  return rc;
}

int journal_append(struct journal *j, uint32_t type, const void *data,
                   size_t len)
{
  uint8_t h[JOURNAL_REC_HDR_BYTES];

  if (type == 0)
    return -EINVAL;
  if (len > JOURNAL_MAX_RECORD)
    return -E2BIG;
  rec_header(h, type, data, len);
  uint8_t *rec = malloc(sizeof(h) + len);
  if (rec == NULL)
    return -ENOMEM;
  memcpy(rec, h, sizeof(h));
  if (len > 0)
    memcpy(rec + sizeof(h), data, len);
  /* One write at the end: a crash leaves at most this record torn. */
  int rc = pwrite_all(j->fd, rec, sizeof(h) + len, j->bytes);
  free(rec);
  if (rc == 0 && fdatasync(j->fd) != 0)
    rc = -errno;
  if (rc != 0) {
    /* Not durable, so not taken: the file goes back to what it was. */
    if (ftruncate(j->fd, (off_t)j->bytes) == 0)
      (void)fdatasync(j->fd);
    return rc;
  }
  j->bytes += sizeof(h) + len;
  j->records++;
  return 0;
}

int journal_compact(struct journal *j, const struct journal_rec *recs,
                    size_t n)
{
  size_t total = JOURNAL_HDR_BYTES;

  for (size_t i = 0; i < n; i++) {
    if (recs[i].type == 0)
      return -EINVAL;
    if (recs[i].len > JOURNAL_MAX_RECORD)
      return -E2BIG;
    total += JOURNAL_REC_HDR_BYTES + recs[i].len;
  }
  uint8_t *b = malloc(total);
  if (b == NULL)
    return -ENOMEM;
  header_make(b);
  size_t off = JOURNAL_HDR_BYTES;
  for (size_t i = 0; i < n; i++) {
    rec_header(b + off, recs[i].type, recs[i].data, recs[i].len);
    if (recs[i].len > 0)
      memcpy(b + off + JOURNAL_REC_HDR_BYTES, recs[i].data, recs[i].len);
    off += JOURNAL_REC_HDR_BYTES + recs[i].len;
  }
  int rc = state_file_write(j->path, b, total);
  free(b);
  if (rc != 0)
    return rc;
  /* The new file: lock it before the old descriptor (and its lock) goes. */
  int fd = open(j->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if ((rc = lock_fd(fd)) != 0) {
    close(fd);
    return rc;
  }
  close(j->fd);
  j->fd = fd;
  j->bytes = total;
  j->records = n;
  return 0;
}

uint64_t journal_bytes(const struct journal *j) { return j->bytes; }
uint64_t journal_records(const struct journal *j) { return j->records; }

void journal_close(struct journal *j)
{
  if (j == NULL)
    return;
  close(j->fd);
  free(j);
}
