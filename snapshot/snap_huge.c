/*
 * snap_huge.c — what the system says about huge pages for the snapshot
 * objects: how much of a mapping is backed by them (/proc/self/smaps), and,
 * when none are given, which setting forbids them (shmem_enabled and the
 * huge= mount option of /dev/shm), so the SMP can say so in one log line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "snapshot/snap_store.h"

#define SHM_DIR "/dev/shm"
#define SHMEM_ENABLED "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

uint64_t snap_huge_mapped_bytes(const void *base)
{
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  bool in = false;
  uint64_t kb = 0;

  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    uintptr_t lo, hi;
    unsigned long long v;
    if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2) {
      if (in)
        break; /* past our mapping */
      in = lo == (uintptr_t)base;
      continue;
    }
    if (in && sscanf(line, "ShmemPmdMapped: %llu kB", &v) == 1)
      kb += v;
  }
  fclose(f);
  return kb * 1024;
}

/* The selected word of a sysfs list ("always [never] deny"); "" if none. */
static void sysfs_selected(const char *path, char *out, size_t len)
{
  FILE *f = fopen(path, "r");
  char line[256] = "";

  out[0] = '\0';
  if (f == NULL)
    return;
  if (fgets(line, sizeof(line), f) != NULL) {
    char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
    if (a != NULL && b != NULL && (size_t)(b - a - 1) < len) {
      memcpy(out, a + 1, (size_t)(b - a - 1));
      out[b - a - 1] = '\0';
    }
  }
  fclose(f);
}

/* The huge= option of the file system mounted on dir (the last mount wins);
 * "never" when it has none, "" when dir is not a mount point. */
static void mount_huge(const char *dir, char *out, size_t len)
{
  FILE *f = fopen("/proc/self/mounts", "r");
  char line[1024];

  out[0] = '\0';
  if (f == NULL)
    return;
  while (fgets(line, sizeof(line), f) != NULL) {
    char dev[256], mnt[256], type[64], opts[512];
    if (sscanf(line, "%255s %255s %63s %511s", dev, mnt, type, opts) != 4 ||
        strcmp(mnt, dir) != 0)
      continue;
    const char *h = strstr(opts, "huge=");
    if (h == NULL) {
      snprintf(out, len, "never");
    } else {
      size_t n = strcspn(h + 5, ",");
      snprintf(out, len, "%.*s", (int)n, h + 5);
    }
  }
  fclose(f);
}

void snap_huge_pages_why(char *buf, size_t len)
{
  char sel[32], huge[32];

  if (buf == NULL || len == 0)
    return;
  buf[0] = '\0';
  sysfs_selected(SHMEM_ENABLED, sel, sizeof(sel));
  if (sel[0] == '\0') {
    snprintf(buf, len, "the kernel offers no transparent huge pages for "
             "shared memory (no %s)", SHMEM_ENABLED);
    return;
  }
  if (strcmp(sel, "deny") == 0) {
    snprintf(buf, len, "%s is 'deny'", SHMEM_ENABLED);
    return;
  }
  if (strcmp(sel, "force") == 0)
    return;
  mount_huge(SHM_DIR, huge, sizeof(huge));
  if (huge[0] == '\0')
    snprintf(buf, len, "%s is not a tmpfs mount of its own", SHM_DIR);
  else if (strcmp(huge, "never") == 0)
    snprintf(buf, len, "%s is mounted with huge=never (its default): "
             "remount it with huge=within_size or huge=advise, e.g. "
             "'mount -o remount,huge=within_size %s'", SHM_DIR, SHM_DIR);
}
