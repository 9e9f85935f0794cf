/*
 * log.c — see log.h. One write(2) per line so lines from several processes
 * sharing stderr do not interleave.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon/log.h"

int log_max_level = LOG_LVL_INFO;
static char role[48] = "ptd";

void log_set_role(const char *r)
{
  snprintf(role, sizeof(role), "%s", r);
}

void log_line(int level, const char *fmt, ...)
{
  char line[1024];
  int n = snprintf(line, sizeof(line), "<%d>%s: ", level, role);
  va_list ap;

  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof(line) - 2)
    n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
