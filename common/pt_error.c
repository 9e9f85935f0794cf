/*
 * pt_error.c — names and texts for the one error space shared by libpt, the
 * daemons, the RPC replies and ptctl: 0, positive statuses, negated errno
 * values, and the project codes of PT_ERRNO_MAP.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"

const char *pt_strerror(int err)
{
  static _Thread_local char buf[96];

  switch (err) {
  case PT_OK:
    return "success";
  case PT_SKIPPED:
    return "skipped: no free slot";
#define PT_STRERROR_CASE_(name, value, text)                                   \
  case PT_E##name:                                                             \
    return text;
    PT_ERRNO_MAP(PT_STRERROR_CASE_)
#undef PT_STRERROR_CASE_
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrordesc_np(-err);
    if (s != NULL)
      return s;
  }
  snprintf(buf, sizeof(buf), "unknown error %d", err);
  return buf;
}

const char *pt_err_name(int err)
{
  switch (err) {
  case PT_OK:
    return "PT_OK";
  case PT_SKIPPED:
    return "PT_SKIPPED";
#define PT_ERRNAME_CASE_(name, value, text)                                    \
  case PT_E##name:                                                             \
    return "PT_E" #name;
    PT_ERRNO_MAP(PT_ERRNAME_CASE_)
#undef PT_ERRNAME_CASE_
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrorname_np(-err);
    if (s != NULL)
      return s;
  }
  return "PT_EUNKNOWN";
}
