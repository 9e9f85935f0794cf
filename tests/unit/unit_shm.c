/*
 * unit_shm.c — see unit_shm.h. Linked into every unit test binary.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "tests/unit/unit_shm.h"

void unit_shm_sweep(const char *prefix)
{
  DIR *d = opendir("/dev/shm");
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
      char nm[300];
      snprintf(nm, sizeof(nm), "/%s", de->d_name);
      shm_unlink(nm);
    }
  }
  closedir(d);
}
