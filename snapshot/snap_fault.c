/*
 * snap_fault.c — reads of a store's mapping that may fault (snap_store.h,
 * "faults of the mapping"): an object truncated under its reader raises
 * SIGBUS on the thread that touched the missing page, and that thread alone
 * can return from it. Each thread keeps its own jump target and the range
 * it guards; the process's SIGBUS handler asks snap_fault_catch() first.
 *
 * Nothing a guarded function does between its reads of the mapping may hold
 * a lock or allocate: leaving it in the middle must be safe.
 */
#include <errno.h>
#include <setjmp.h>
#include <stddef.h>

#include "snapshot/snap_internal.h"

static _Thread_local sigjmp_buf *fault_env;
static _Thread_local const uint8_t *fault_lo, *fault_hi;

bool snap_fault_catch(const void *addr)
{
  const uint8_t *a = addr;

  if (fault_env == NULL || a < fault_lo || a >= fault_hi)
    return false;
  siglongjmp(*fault_env, 1);
}

int snap_fault_run(const struct snap_store *s, int (*fn)(void *arg), void *arg)
{
  sigjmp_buf env, *outer = fault_env;
  const uint8_t *lo = fault_lo, *hi = fault_hi;
  volatile int rc;

  if (sigsetjmp(env, 1) != 0) {
    fault_env = outer;
    fault_lo = lo;
    fault_hi = hi;
    return -EFAULT;
  }
  fault_lo = snap_store_base(s);
  fault_hi = fault_lo + snap_store_total_bytes(s);
  fault_env = &env;
  rc = fn(arg);
  fault_env = outer;
  fault_lo = lo;
  fault_hi = hi;
  return rc;
}
