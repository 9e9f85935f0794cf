/*
 * conf.c — parsing shared by the command lines of ptd's roles and tools.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/conf.h"

int conf_parse_bytes(const char *s, uint64_t *out)
{
  char *end;

  if (s == NULL || !isdigit((unsigned char)s[0]))
    return -EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0)
    return -EINVAL;
  unsigned shift = 0;
  switch (*end) {
  case '\0':
    break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default:
    return -EINVAL;
  }
  /* "64KiB" and "64KB" read as 64K too. */
  if (shift != 0 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
    end += strlen(end);
  if (*end != '\0')
    return -EINVAL;
  if (shift != 0 && v > (UINT64_MAX >> shift))
    return -EINVAL;
  *out = (uint64_t)v << shift;
  return PT_OK;
}

bool conf_path_plain(const char *s, size_t max)
{
  size_t l = s != NULL ? strlen(s) : 0;
  return l > 0 && s[0] == '/' && l < max && strstr(s, "/../") == NULL &&
         strstr(s, "/./") == NULL &&
         !(l >= 3 && strcmp(s + l - 3, "/..") == 0) &&
         !(l >= 2 && strcmp(s + l - 2, "/.") == 0);
}
