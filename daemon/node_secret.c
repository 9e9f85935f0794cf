/*
 * node_secret.c — see node_secret.h. The file is checked through the
 * descriptor it was opened with (fstat), so what is checked is what is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node_secret.h"

int node_secret_read(const char *path, uint8_t out[NODE_SECRET_BYTES],
                     char *err, size_t errlen)
{
  struct stat st;
  uint8_t buf[NODE_SECRET_BYTES + 1];
  int rc = 0;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open '%s': %s%s", path, pt_strerror(rc),
             rc == -ELOOP ? " (a symlink is refused)" : "");
    return rc;
  }
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot stat '%s': %s", path, pt_strerror(rc));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "'%s' is not a regular file", path);
    rc = PT_EFORMAT;
    goto out;
  }
  if (st.st_uid != geteuid()) {
    snprintf(err, errlen, "'%s' is owned by uid %u, not by uid %u", path,
             (unsigned)st.st_uid, (unsigned)geteuid());
    rc = -EPERM;
    goto out;
  }
  if ((st.st_mode & 07777) != 0600) {
    snprintf(err, errlen, "'%s' has mode %04o, not 0600", path,
             (unsigned)(st.st_mode & 07777));
    rc = -EPERM;
    goto out;
  }
  size_t have = 0;
  for (;;) {
    ssize_t n = read(fd, buf + have, sizeof(buf) - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      snprintf(err, errlen, "cannot read '%s': %s", path, pt_strerror(rc));
      goto out;
    }
    if (n == 0 || (have += (size_t)n) == sizeof(buf))
      break;
  }
  if (have != NODE_SECRET_BYTES) {
    snprintf(err, errlen, "'%s' holds %s%zu bytes, not %d", path,
             have > NODE_SECRET_BYTES ? "more than " : "",
             have > NODE_SECRET_BYTES ? (size_t)NODE_SECRET_BYTES : have,
             NODE_SECRET_BYTES);
    rc = PT_EFORMAT;
    goto out;
  }
  memcpy(out, buf, NODE_SECRET_BYTES);
out:
  sodium_memzero(buf, sizeof(buf));
  close(fd);
  return rc;
}

int node_secret_load_or_create(const char *state_dir, char *path,
                               size_t path_cap, uint8_t out[NODE_SECRET_BYTES])
{
  char err[512];
  int rc;

  if ((size_t)snprintf(path, path_cap, "%s/node.secret", state_dir) >=
      path_cap)
    return -ENAMETOOLONG;
  rc = node_secret_read(path, out, err, sizeof(err));
  if (rc != -ENOENT) {
    if (rc != 0)
      log_error("unusable node secret: %s", err);
    return rc;
  }
  if (sodium_init() < 0)
    return -EIO;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0600);
  if (fd < 0) {
    rc = -errno;
    log_error("cannot create node secret '%s': %s", path, pt_strerror(rc));
    return rc;
  }
  randombytes_buf(out, NODE_SECRET_BYTES);
  rc = 0;
  errno = 0;
  if (fchmod(fd, 0600) < 0 ||
      write(fd, out, NODE_SECRET_BYTES) != NODE_SECRET_BYTES || fsync(fd) < 0)
    rc = errno != 0 ? -errno : -EIO;
  close(fd);
  if (rc != 0) {
    log_error("cannot write node secret '%s': %s", path, pt_strerror(rc));
    unlink(path);
    return rc;
  }
  return 0;
}
