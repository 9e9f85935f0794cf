/*
 * node_persist_manifest.c — a step's MANIFEST on disk (its lines:
 * node_persist.c's header): written by the node once every rank's file is
 * durable, read back strictly (node_persist.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node/node_plan.h"

/* ---- the manifest ---- */

int node_persist_manifest_format(char *buf, size_t cap, const char *job,
                                 const char *instance_hex, uint64_t step,
                                 uint32_t world, uint64_t unix_ms,
                                 uint64_t mark, const uint64_t *bytes)
{
  size_t used = 0;
  int k = snprintf(buf, cap, "pt-manifest 1\njob %s\ninstance %s\nstep %"
                   PRIu64 "\nworld %" PRIu32 "\nwritten_unix_ms %" PRIu64
                   "\nmark %" PRIu64 "\n", job, instance_hex, step, world,
                   unix_ms, mark);
  if (k < 0 || (size_t)k >= cap)
    return -E2BIG;
  used = (size_t)k;
  for (uint32_t r = 0; r < world; r++) {
    k = snprintf(buf + used, cap - used, "rank %" PRIu32 " %" PRIu64 "\n", r,
                 bytes[r]);
    if (k < 0 || (size_t)k >= cap - used)
      return -E2BIG;
    used += (size_t)k;
  }
  k = snprintf(buf + used, cap - used, "crc32c %08" PRIx32 "\n",
               crc32c(buf, used));
  if (k < 0 || (size_t)k >= cap - used)
    return -E2BIG;
  return (int)(used + (size_t)k);
}

/* "name value": the value, or NULL. */
static const char *field(const char *line, const char *name)
{
  size_t n = strlen(name);
  return strncmp(line, name, n) == 0 && line[n] == ' ' ? line + n + 1 : NULL;
}

/* Decimal digits only, up to the end or (rest != NULL) one space. */
static bool u64(const char *s, uint64_t *out, const char **rest)
{
  uint64_t v = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (UINT64_MAX - 9) / 10)
      return false;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  if (p == s || p - s > 20)
    return false;
  if (rest != NULL) {
    if (*p != ' ')
      return false;
    *rest = p + 1;
  } else if (*p != '\0') {
    return false;
  }
  *out = v;
  return true;
}

static bool hex32(const char *s)
{
  for (int i = 0; i < 32; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return s[32] == '\0';
}

int node_persist_manifest_parse(const char *buf, size_t len,
                                struct node_manifest *m, char *err,
                                size_t errlen)
{
  memset(m, 0, sizeof(*m));
  /* The last line: "crc32c " and 8 hex digits, of every byte before it. */
  const size_t tail = 16;
  if (len < tail + 1 || buf[len - tail - 1] != '\n' ||
      strncmp(buf + len - tail, "crc32c ", 7) != 0 || buf[len - 1] != '\n') {
    snprintf(err, errlen, "not a complete manifest (no checksum line)");
    return PT_EFORMAT;
  }
  uint32_t crc = 0;
  for (size_t i = len - tail + 7; i < len - 1; i++) {
    char c = buf[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) {
      snprintf(err, errlen, "the manifest's checksum line is malformed");
      return PT_EFORMAT;
    }
    crc = crc << 4 | (uint32_t)d;
  }
  size_t body = len - tail;
  if (memchr(buf, '\0', body) != NULL || crc32c(buf, body) != crc) {
    snprintf(err, errlen, "manifest checksum mismatch");
    return PT_EFORMAT;
  }
  /* The body is ours: parse it strictly. */
  char *copy = strndup(buf, body);
  if (copy == NULL)
    return -ENOMEM;
  int rc = PT_EFORMAT;
  uint32_t seen = 0, nr = 0;
  char *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line != NULL;
       line = strtok_r(NULL, "\n", &save)) {
    uint64_t a, b;
    const char *v;
    int bit = 0;
    if (strcmp(line, "pt-manifest 1") == 0) {
      bit = 1;
    } else if ((v = field(line, "job")) != NULL && node_plan_job_name_ok(v)) {
      snprintf(m->job, sizeof(m->job), "%s", v);
      bit = 2;
    } else if ((v = field(line, "instance")) != NULL && hex32(v)) {
      memcpy(m->instance_hex, v, 33);
      bit = 4;
    } else if ((v = field(line, "step")) != NULL && u64(v, &a, NULL)) {
      m->step = a;
      bit = 8;
    } else if ((v = field(line, "world")) != NULL && u64(v, &a, NULL) &&
               a >= 1 && a <= NODE_MAX_RANKS) {
      m->world = (uint32_t)a;
      bit = 16;
    } else if ((v = field(line, "written_unix_ms")) != NULL &&
               u64(v, &a, NULL)) {
      m->unix_ms = a;
      bit = 32;
    } else if ((v = field(line, "mark")) != NULL && u64(v, &a, NULL)) {
      m->mark = a;
      bit = 64;
    } else if ((v = field(line, "rank")) != NULL && u64(v, &a, &v) &&
               v != NULL && u64(v, &b, NULL) && (seen & 16) && a == nr &&
               a < m->world) {
      m->bytes[nr++] = b;
      continue;
    }
    if (bit == 0 || (seen & (uint32_t)bit) != 0) {
      snprintf(err, errlen, "%s manifest line '%.60s'",
               bit == 0 ? "unexpected" : "repeated", line);
      goto out;
    }
    seen |= (uint32_t)bit;
  }
  if (seen != 127 || nr != m->world) {
    snprintf(err, errlen, "manifest incomplete (fields %02x, %" PRIu32
             " of %" PRIu32 " ranks)", seen, nr, m->world);
    goto out;
  }
  rc = PT_OK;
out:
  free(copy);
  return rc;
}

int node_persist_manifest_read(int stepfd, struct node_manifest *m, char *err,
                               size_t errlen)
{
  char buf[NODE_MANIFEST_MAX + 1];
  int fd = openat(stepfd, "MANIFEST", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    snprintf(err, errlen, "no manifest: %s", strerror(-rc));
    return rc;
  }
  ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  if (n < 0 || (size_t)n > NODE_MANIFEST_MAX) {
    snprintf(err, errlen, "manifest unreadable or over %d bytes",
             NODE_MANIFEST_MAX);
    return PT_EFORMAT;
  }
  return node_persist_manifest_parse(buf, (size_t)n, m, err, errlen);
}

