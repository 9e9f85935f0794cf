/*
 * log.c — see log.h. One write(2) per line so lines from several processes
 * sharing stderr do not interleave. A line is one line whatever it was
 * given: a control byte that reaches log_line (text that should have gone
 * through log_escape) is written as a space.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/monotime.h"

int log_max_level = LOG_LVL_INFO;
static char role[48] = "ptd";

void log_set_role(const char *r)
{
  snprintf(role, sizeof(role), "%s", r);
}

const char *log_escape(char *buf, size_t cap, const char *s)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, safe = 0; /* safe: the last unit boundary with room for "..." */

  if (cap == 0)
    return buf;
  if (s == NULL)
    s = "(null)";
  for (; *s != '\0'; s++) {
    unsigned char ch = (unsigned char)*s;
    char unit[4];
    size_t n = 0;
    if (ch == '\\') {
      unit[n++] = '\\';
      unit[n++] = '\\';
    } else if (ch < 0x20 || ch >= 0x7f) {
      unit[n++] = '\\';
      unit[n++] = 'x';
      unit[n++] = hex[ch >> 4];
      unit[n++] = hex[ch & 15];
    } else {
      unit[n++] = (char)ch;
    }
    if (o + 4 <= cap)
      safe = o;
    if (o + n + 1 > cap) { /* does not fit: cut at a unit, end in "..." */
      o = safe;
      for (int k = 0; k < 3 && o + 1 < cap; k++)
        buf[o++] = '.';
      break;
    }
    memcpy(buf + o, unit, n);
    o += n;
  }
  buf[o] = '\0';
  return buf;
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
  for (int i = 0; i < n; i++)
    if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
      line[i] = ' ';
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t *dropped)
{
  if (l->any && now_ms - l->last_ms < LOG_LIMIT_MS) {
    l->dropped++;
    return false;
  }
  *dropped = l->dropped;
  l->dropped = 0;
  l->last_ms = now_ms;
  l->any = true;
  return true;
}

bool log_limit_flush(struct log_limit *l, uint64_t now_ms, uint64_t *dropped,
                     uint64_t *secs)
{
  if (!l->any || l->dropped == 0 || now_ms - l->last_ms < LOG_LIMIT_MS)
    return false;
  *dropped = l->dropped;
  *secs = (now_ms - l->last_ms + 500) / 1000;
  l->dropped = 0;
  l->last_ms = now_ms;
  return true;
}

void log_limited(struct log_limit *l, int level, const char *fmt, ...)
{
  uint64_t dropped, since = l->last_ms;
  char msg[1024];
  va_list ap;

  if (level > log_max_level)
    return;
  uint64_t now = monotime_ms();
  if (!log_limit_pass(l, now, &dropped))
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (dropped == 0)
    log_line(level, "%s", msg);
  else
    log_line(level, "%s (%" PRIu64 " more like it dropped in the last %" PRIu64
             " s)", msg, dropped, (now - since + 500) / 1000);
}
