/*
 * state_file.c — see state_file.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/state_file.h"

static int write_all(int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* The directory holding path, so the rename itself survives a crash. */
static int dir_sync(const char *path)
{
  char dir[PATH_MAX];
  int rc = 0;

  snprintf(dir, sizeof(dir), "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    slash[1] = '\0';
  else if (slash != NULL)
    *slash = '\0';
  else
    snprintf(dir, sizeof(dir), ".");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return -errno; /* the rename is done, but not known to be durable */
  if (fsync(dfd) != 0)
    rc = -errno;
  close(dfd);
  return rc;
}

int state_file_write(const char *path, const void *data, size_t len)
{
  char tmp[PATH_MAX];
  int rc, fd;

  if (strlen(path) >= PATH_MAX ||
      snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -ENAMETOOLONG;
  /* The temporary file holds the next contents until the rename. It is
   * made new: whatever is there (a stale file, or a symlink planted to make
   * the writer write through it) is removed, never opened. */
  if (unlink(tmp) != 0 && errno != ENOENT)
    return -errno;
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  rc = write_all(fd, data, len);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0) {
    unlink(tmp);
    return rc;
  }
  return dir_sync(path);
}

int state_file_read(const char *path, size_t max, char **data, size_t *len,
                    char *err, size_t errlen)
{
  struct stat st;
  size_t have = 0;
  char *text;
  int rc = 0;

  *data = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) {
      if (err != NULL && errlen > 0)
        snprintf(err, errlen, "it is a symbolic link (not followed)");
      return PT_EFORMAT;
    }
    return -errno;
  }
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    goto out;
  }
  if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen,
               "it is owned by uid %u with mode %03o (expected uid %u, not "
               "writable by group or others)",
               (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777),
               (unsigned)geteuid());
    rc = PT_EFORMAT;
    goto out;
  }
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > (uint64_t)max) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "not a regular file of at most %zu bytes", max);
    rc = PT_EFORMAT;
    goto out;
  }
  text = malloc((size_t)st.st_size + 1);
  if (text == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  while (have < (size_t)st.st_size) {
    ssize_t n = read(fd, text + have, (size_t)st.st_size - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    have += (size_t)n;
  }
  text[have] = '\0';
  *data = text;
  *len = have;
out:
  close(fd);
  return rc;
}
