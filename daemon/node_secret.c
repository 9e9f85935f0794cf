/*
 * node_secret.c — <state-dir>/node.secret, the per-job secret that proves
 * a SUBSCRIBE comes from the job's node: 32 random bytes (libsodium), mode
 * 0600, owned by the effective uid. ptd node makes it on its first start in
 * a state directory and reuses it afterwards (a restarted node must speak
 * to SMPs started by its predecessor, which read the file once); every SMP
 * gets its path (--secret-file) and compares the SUBSCRIBE's bytes with it.
 *
 * Never through a symlink: an existing file is opened with O_NOFOLLOW and
 * checked (regular, owner, mode 0600, exactly 32 bytes); a new one is
 * written to a temporary file created with O_CREAT|O_EXCL|O_NOFOLLOW and
 * renamed into place, so a reader sees no file or a whole one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "daemon/node.h"

#define SECRET_BYTES 32

/* Reads an existing secret. -ENOENT when absent. */
static int secret_read(const char *path, uint8_t out[SECRET_BYTES], char *err,
                       size_t errlen)
{
  struct stat st;
  uint8_t buf[SECRET_BYTES + 1];
  size_t have = 0;
  int rc = PT_OK;

  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    if (rc == -ELOOP)
      snprintf(err, errlen, "'%s' is a symbolic link (not followed)", path);
    else if (rc != -ENOENT)
      snprintf(err, errlen, "cannot open '%s': %s", path, pt_strerror(rc));
    return rc == -ELOOP ? PT_EFORMAT : rc;
  }
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot stat '%s': %s", path, pt_strerror(rc));
    goto out;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      (st.st_mode & 0777) != 0600) {
    snprintf(err, errlen,
             "'%s' is not a regular file of uid %u with mode 0600 (uid %u, "
             "mode %03o): remove it",
             path, (unsigned)geteuid(), (unsigned)st.st_uid,
             (unsigned)(st.st_mode & 0777));
    rc = PT_EFORMAT;
    goto out;
  }
  while (have < sizeof(buf)) {
    ssize_t n = read(fd, buf + have, sizeof(buf) - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      snprintf(err, errlen, "cannot read '%s': %s", path, pt_strerror(rc));
      goto out;
    }
    if (n == 0)
      break;
    have += (size_t)n;
  }
  if (have != SECRET_BYTES) {
    snprintf(err, errlen, "'%s' holds %zu bytes, not %d: remove it", path,
             have, SECRET_BYTES);
    rc = PT_EFORMAT;
    goto out;
  }
  memcpy(out, buf, SECRET_BYTES);
out:
  sodium_memzero(buf, sizeof(buf));
  close(fd);
  return rc;
}

int node_secret_load_or_create(const char *path, uint8_t out[32], char *err,
                               size_t errlen)
{
  char tmp[PATH_MAX];
  uint8_t key[SECRET_BYTES];
  int rc, fd;

  if (sodium_init() < 0) {
    snprintf(err, errlen, "libsodium cannot be initialised");
    return -EIO;
  }
  rc = secret_read(path, out, err, errlen);
  if (rc != -ENOENT)
    return rc;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -ENAMETOOLONG;
  randombytes_buf(key, sizeof(key));
  if (unlink(tmp) != 0 && errno != ENOENT) {
    rc = -errno;
    snprintf(err, errlen, "cannot remove '%s': %s", tmp, pt_strerror(rc));
    return rc;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot create '%s': %s", tmp, pt_strerror(rc));
    return rc;
  }
  ssize_t w;
  do
    w = write(fd, key, sizeof(key));
  while (w < 0 && errno == EINTR);
  rc = w == (ssize_t)sizeof(key) ? PT_OK : (w < 0 ? -errno : -EIO);
  if (rc == PT_OK && fchmod(fd, 0600) != 0)
    rc = -errno;
  if (rc == PT_OK && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == PT_OK)
    rc = -errno;
  /* link(2) does not replace: a secret another node made meanwhile wins. */
  if (rc == PT_OK && link(tmp, path) != 0)
    rc = -errno;
  unlink(tmp);
  if (rc == -EEXIST) {
    sodium_memzero(key, sizeof(key));
    return secret_read(path, out, err, errlen);
  }
  if (rc != PT_OK) {
    snprintf(err, errlen, "cannot write '%s': %s", path, pt_strerror(rc));
    sodium_memzero(key, sizeof(key));
    return rc;
  }
  memcpy(out, key, sizeof(key));
  sodium_memzero(key, sizeof(key));
  return PT_OK;
}
