/*
 * proc.c — one reader of /proc/PID/stat. Field 2 (the command name) may
 * hold spaces and ')', so fields 3 and on are counted from the last ')'.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/proc.h"

/* The stat line after its last ')': " S 1 2 ...". OUT: buf (cap bytes). */
static int stat_rest(int pid, char *buf, size_t cap, const char **rest)
{
  char path[64];

  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? -ESRCH : -errno;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n <= 0)
    return -ESRCH;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  if (p == NULL)
    return PT_EFORMAT;
  *rest = p + 1;
  return PT_OK;
}

int proc_stat_field(int pid, int field, uint64_t *out)
{
  char buf[1024];
  const char *p;
  int rc = stat_rest(pid, buf, sizeof(buf), &p);

  if (rc != PT_OK)
    return rc;
  for (int f = 3; f <= field; f++) {
    while (*p == ' ')
      p++;
    if (*p == '\0')
      return PT_EFORMAT;
    if (f == field) {
      char *end;
      errno = 0;
      long long v = strtoll(p, &end, 10);
      if (errno != 0 || end == p || v < 0)
        return PT_EFORMAT;
      *out = (uint64_t)v;
      return PT_OK;
    }
    while (*p != ' ' && *p != '\0')
      p++;
  }
  return PT_EFORMAT;
}

char proc_stat_state(int pid)
{
  char buf[1024];
  const char *p;

  if (stat_rest(pid, buf, sizeof(buf), &p) != PT_OK)
    return '?';
  return p[0] == ' ' && p[1] != '\0' ? p[1] : '?';
}
