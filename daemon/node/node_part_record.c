/*
 * node_part_record.c — <state-dir>/part.state, the record of a
 * cluster-mode node's job part (its format: node_part.c's opening comment),
 * written atomically (common/state_file.h) before anything of the part is
 * spawned, and read back strictly at start-up.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/state_file.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"

static void put32(uint8_t *p, uint32_t v)
{
  memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

int node_part_record_write(struct node_part *p)
{
  size_t mlen = strnlen(p->fail_msg, sizeof(p->fail_msg) - 1);
  size_t total = PART_HEAD + p->len + PART_TAIL_FIXED + mlen;
  uint8_t *b = malloc(total);

  if (b == NULL)
    return -ENOMEM;
  memcpy(b, PART_MAGIC, 8);
  put32(b + 8, PART_VERSION);
  put32(b + 12, (uint32_t)p->end);
  memcpy(b + 16, p->instance, SNAP_INSTANCE_BYTES);
  put32(b + 16 + SNAP_INSTANCE_BYTES, (uint32_t)p->len);
  put32(b + 20 + SNAP_INSTANCE_BYTES, crc32c(b, 20 + SNAP_INSTANCE_BYTES));
  memcpy(b + PART_HEAD, p->buf, p->len);
  uint8_t *t = b + PART_HEAD + p->len;
  put32(t, p->fail_permanent ? PART_F_PERMANENT : 0);
  put32(t + 4, (uint32_t)p->fail_status);
  put32(t + 8, (uint32_t)mlen);
  memcpy(t + 12, p->fail_msg, mlen);
  put32(t + 12 + mlen, crc32c(t, 12 + mlen));
  int rc = state_file_write(p->path, b, total);
  free(b);
  if (rc != PT_OK)
    log_warn("cannot write '%s': %s (a restarted node could not take its "
             "part up again)",
             p->path, pt_strerror(rc));
  return rc;
}

/* -ENOENT when absent; PT_EFORMAT with err for a damaged file. */
int node_part_record_read(struct node_part *p, char *err, size_t errlen)
{
  char *data = NULL;
  size_t len = 0;
  int rc = state_file_read(p->path, PART_MAX, &data, &len, err, errlen);

  if (rc != PT_OK)
    return rc;
  const uint8_t *b = (const uint8_t *)data;
  rc = PT_EFORMAT;
  uint32_t version = len >= 12 ? get32(b + 8) : 0;
  if (len < PART_HEAD || memcmp(b, PART_MAGIC, 8) != 0 || version < 1 ||
      version > PART_VERSION) {
    snprintf(err, errlen, "not a part record of this version");
    goto out;
  }
  if (get32(b + 20 + SNAP_INSTANCE_BYTES) !=
      crc32c(b, 20 + SNAP_INSTANCE_BYTES)) {
    snprintf(err, errlen, "its header fails its checksum");
    goto out;
  }
  uint32_t plen = get32(b + 16 + SNAP_INSTANCE_BYTES);
  uint32_t end = get32(b + 12);
  /* Version 2: the failure after the assignment. */
  bool perm = false;
  int32_t status = 0;
  uint32_t mlen = 0;
  const uint8_t *t = b + PART_HEAD + plen;
  bool len_ok = version == 1 ? plen == len - PART_HEAD
                             : plen <= len - PART_HEAD &&
                                   len - PART_HEAD - plen >= PART_TAIL_FIXED;
  if (len_ok && version >= 2) {
    mlen = get32(t + 8);
    len_ok = mlen < sizeof(p->fail_msg) &&
             len - PART_HEAD - plen == PART_TAIL_FIXED + mlen;
  }
  if (!len_ok || end > PART_DONE) {
    snprintf(err, errlen, "its length or state is wrong");
    goto out;
  }
  if (version >= 2) {
    if (get32(t + 12 + mlen) != crc32c(t, 12 + mlen)) {
      snprintf(err, errlen, "its failure fails its checksum");
      goto out;
    }
    perm = (get32(t) & PART_F_PERMANENT) != 0;
    status = (int32_t)get32(t + 4);
  }
  Pt__JobAssign *a = pt__job_assign__unpack(NULL, plen, b + PART_HEAD);
  if (a == NULL || a->spec == NULL) {
    if (a != NULL)
      pt__job_assign__free_unpacked(a, NULL);
    snprintf(err, errlen, "its assignment cannot be read");
    goto out;
  }
  p->buf = malloc(plen > 0 ? plen : 1);
  if (p->buf == NULL) {
    pt__job_assign__free_unpacked(a, NULL);
    rc = -ENOMEM;
    goto out;
  }
  memcpy(p->buf, b + PART_HEAD, plen);
  p->len = plen;
  p->has = true;
  snprintf(p->job, sizeof(p->job), "%s", a->spec->name);
  p->epoch = a->epoch;
  p->end = (enum part_end)end;
  memcpy(p->instance, b + 16, SNAP_INSTANCE_BYTES);
  p->fail_permanent = perm;
  p->fail_status = status;
  memcpy(p->fail_msg, t + 12, mlen);
  p->fail_msg[mlen] = '\0';
  pt__job_assign__free_unpacked(a, NULL);
  rc = PT_OK;
out:
  free(data);
  return rc;
}
