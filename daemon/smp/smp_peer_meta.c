/*
 * smp_peer_meta.c — the checksum tables this SMP keeps for the other
 * members of its group (PEER_META, smp_peer_serve.c) outlive the SMP: a
 * node stops its SMPs between two epochs, and the epoch that restores a
 * lost member needs them. They are kept in a small shm object beside the
 * snapshot object, "<its name>.meta" (mode 0600, this user's only),
 * rewritten whole when a table comes in, read once by the next SMP.
 *
 *   0   8  magic "PTMETA\0\1"
 *   8  16  the job instance (an object of another instance is not read)
 *   24  4  entries
 *   28  4  zero
 *   then each entry: member u32, bytes u32, step u64, CRC32C u32 of the
 *   16 bytes before it and the table; the table; zero up to 8 bytes.
 *   Last, at most one entry of this member itself with no table: this
 *   member rebuilt that step, and holds its data but not its parity rows
 *   (struct smp_peer no_parity), which it must never serve.
 *
 * Nothing in it is trusted more than a PEER_META from the link: an entry
 * that fails its CRC ends the reading, and a rebuild verifies its bytes
 * against the table anyway.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"

#define META_MAGIC "PTMETA\0\1"
#define META_HEAD 32u
#define META_ENTRY 20u
#define META_FILE_MAX ((size_t)64 << 20)

static int meta_name(const struct smp *smp, char *out, size_t len)
{
  int n = snprintf(out, len, "%s.meta", smp->shm_name);
  return n > 0 && (size_t)n < len && smp->shm_name[0] == '/' ? 0 : -ENAMETOOLONG;
}

static uint32_t entry_crc(const uint8_t *head, const uint8_t *table, size_t len)
{
  return crc32c_update(crc32c(head, 16), table, len);
}

void smp_peer_meta_save(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  char name[300];
  size_t total = META_HEAD + (p->no_parity ? META_ENTRY : 0);
  uint32_t count = 0;

  if (meta_name(smp, name, sizeof(name)) != 0)
    return;
  for (uint32_t i = 0; i < smp->group.n; i++)
    for (unsigned j = 0; j < p->link[i].nmeta; j++) {
      total += META_ENTRY + (p->link[i].meta[j].len + 7) / 8 * 8;
      count++;
    }
  if (total > META_FILE_MAX) {
    /* (said once per SMP: after its restart a rebuild of a member may
     * find no survivor holding that member's table, and say so) */
    static bool said;
    if (!said)
      log_warn("the group's checksum tables (%zu bytes) are more than '%s' "
               "keeps (%zu): not kept across this SMP's restart", total, name,
               (size_t)META_FILE_MAX);
    said = true;
    return;
  }
  uint8_t *b = calloc(1, total);
  if (b == NULL)
    return;
  memcpy(b, META_MAGIC, 8);
  memcpy(b + 8, smp->instance, SNAP_INSTANCE_BYTES);
  memcpy(b + 24, &count, 4);
  size_t at = META_HEAD;
  for (uint32_t i = 0; i < smp->group.n; i++)
    for (unsigned j = 0; j < p->link[i].nmeta; j++) {
      const struct link *l = &p->link[i];
      uint32_t len = (uint32_t)l->meta[j].len;
      memcpy(b + at, &i, 4);
      memcpy(b + at + 4, &len, 4);
      memcpy(b + at + 8, &l->meta[j].step, 8);
      memcpy(b + at + META_ENTRY, l->meta[j].table, len);
      uint32_t crc = entry_crc(b + at, b + at + META_ENTRY, len);
      memcpy(b + at + 16, &crc, 4);
      at += META_ENTRY + (len + 7) / 8 * 8;
    }
  if (p->no_parity) {
    uint32_t self = smp->group.member, zero = 0;
    memcpy(b + at, &self, 4);
    memcpy(b + at + 4, &zero, 4);
    memcpy(b + at + 8, &p->no_parity_step, 8);
    uint32_t crc = entry_crc(b + at, NULL, 0);
    memcpy(b + at + 16, &crc, 4);
    count++;
    memcpy(b + 24, &count, 4);
  }
  int fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_uid != geteuid() ||
      (st.st_mode & 077) != 0 || ftruncate(fd, (off_t)total) != 0 ||
      pwrite(fd, b, total, 0) != (ssize_t)total) {
    static struct log_limit lim;
    log_limited(&lim, LOG_LVL_WARN, "cannot keep the group's checksum tables "
                "in '%s': %s", name, pt_strerror(-errno));
  }
  if (fd >= 0)
    close(fd);
  free(b);
}

static void put(struct link *l, uint64_t step, const uint8_t *table, size_t len)
{
  if (l->nmeta == SNAP_MAX_SLOTS)
    return;
  uint8_t *t = malloc(len);
  if (t == NULL)
    return;
  memcpy(t, table, len);
  l->meta[l->nmeta].step = step;
  l->meta[l->nmeta].table = t;
  l->meta[l->nmeta].len = len;
  l->nmeta++;
}

void smp_peer_meta_load(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  char name[300];
  struct stat st;

  if (p->meta_loaded)
    return;
  p->meta_loaded = true;
  if (meta_name(smp, name, sizeof(name)) != 0)
    return;
  int fd = shm_open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0)
    return;
  uint8_t *b = NULL;
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0 ||
      st.st_size < (off_t)META_HEAD || (size_t)st.st_size > META_FILE_MAX ||
      (b = malloc((size_t)st.st_size)) == NULL ||
      pread(fd, b, (size_t)st.st_size, 0) != st.st_size ||
      memcmp(b, META_MAGIC, 8) != 0 ||
      memcmp(b + 8, smp->instance, SNAP_INSTANCE_BYTES) != 0) {
    free(b);
    close(fd);
    return;
  }
  close(fd);
  size_t size = (size_t)st.st_size, at = META_HEAD;
  uint32_t count, n = 0;
  memcpy(&count, b + 24, 4);
  for (; n < count && at + META_ENTRY <= size; n++) {
    uint32_t member, len, crc;
    uint64_t step;
    memcpy(&member, b + at, 4);
    memcpy(&len, b + at + 4, 4);
    memcpy(&step, b + at + 8, 8);
    memcpy(&crc, b + at + 16, 4);
    if (member == smp->group.member && len == 0 &&
        entry_crc(b + at, NULL, 0) == crc) {
      p->no_parity = true; /* (the last entry) */
      p->no_parity_step = step;
      log_info("coding group %u: step %" PRIu64 " was rebuilt here: its "
               "parity rows are not held", smp->group.group, step);
      break;
    }
    if (len == 0 || len > PEER_META_MAX || len % 4 != 0 ||
        len > size - at - META_ENTRY || member >= smp->group.n ||
        member == smp->group.member ||
        entry_crc(b + at, b + at + META_ENTRY, len) != crc)
      break;
    put(&p->link[member], step, b + at + META_ENTRY, len);
    at += META_ENTRY + ((size_t)len + 7) / 8 * 8;
  }
  free(b);
  if (n > 0)
    log_info("coding group %u: %u checksum tables of the other members kept "
             "from before", smp->group.group, n);
}
