/*
 * kernels_cpu.c — the CPU copy backend of kernels.h: host memory only.
 *
 * An engine is one host copy pool (kernels_host.c): kern_save_start() hands
 * the transfers to the pool's threads and returns, kern_restore() runs them
 * on the pool's threads and the caller's. Device memory in any transfer is
 * PT_ENODEVICE. kern_host_register() has nothing to do here but checks its
 * arguments as the CUDA backend does, so misuse shows up in CPU tests too.
 */
#include <errno.h>
#include <stdlib.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "kernels/kernels_host.h"

struct kern_engine {
  struct kern_pool *pool;
};

const char *kern_backend_name(void)
{
  return "cpu";
}

bool kern_backend_has_device(void)
{
  return false;
}

int kern_engine_new(struct kern_engine **out, int threads)
{
  struct kern_engine *e;
  int rc;

  if (out == NULL)
    return -EINVAL;
  e = calloc(1, sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  rc = kern_pool_new(&e->pool, threads);
  if (rc < 0) {
    free(e);
    return rc;
  }
  *out = e;
  return PT_OK;
}

void kern_engine_free(struct kern_engine *e)
{
  if (e == NULL)
    return;
  kern_pool_free(e->pool);
  free(e);
}

int kern_thread_bind(struct kern_engine *e)
{
  return e == NULL ? -EINVAL : PT_OK;
}

int kern_host_register(struct kern_engine *e, void *p, size_t bytes)
{
  if (e == NULL || p == NULL || bytes == 0)
    return -EINVAL;
  return PT_OK;
}

int kern_host_unregister(struct kern_engine *e, void *p)
{
  if (e == NULL || p == NULL)
    return -EINVAL;
  return PT_OK;
}

/* Checks x[0..n) for a host-only copy: PT_ENODEVICE for device memory,
 * -EINVAL for an unknown kind or a missing buffer. */
static int xfers_check(const struct kern_xfer *x, size_t n)
{
  if (n > 0 && x == NULL)
    return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    if ((x[i].src_mem != KERN_MEM_HOST && x[i].src_mem != KERN_MEM_DEVICE) ||
        (x[i].dst_mem != KERN_MEM_HOST && x[i].dst_mem != KERN_MEM_DEVICE))
      return -EINVAL;
    if (x[i].src_mem == KERN_MEM_DEVICE || x[i].dst_mem == KERN_MEM_DEVICE)
      return PT_ENODEVICE;
    if (x[i].bytes > 0 && (x[i].src == NULL || x[i].dst == NULL))
      return -EINVAL;
  }
  return PT_OK;
}

int kern_save_start(struct kern_engine *e, const struct kern_xfer *x, size_t n,
                    bool crc)
{
  struct kern_task *t;
  int rc;

  if (e == NULL)
    return -EINVAL;
  rc = xfers_check(x, n);
  if (rc < 0)
    return rc;
  rc = kern_tasks_make(&t, x, n, crc ? KERN_OP_SAVE : KERN_OP_COPY);
  if (rc < 0)
    return rc;
  rc = kern_pool_start(e->pool, t, n);
  free(t);
  return rc;
}

bool kern_save_is_busy(struct kern_engine *e)
{
  return e != NULL && kern_pool_is_busy(e->pool);
}

int kern_save_wait(struct kern_engine *e, int timeout_ms)
{
  struct timespec deadline;

  if (e == NULL)
    return -EINVAL;
  if (timeout_ms < 0)
    return kern_pool_wait(e->pool, NULL);
  kern_deadline_set(&deadline, timeout_ms);
  return kern_pool_wait(e->pool, &deadline);
}

int kern_save_after(struct kern_engine *e, void *stream)
{
  (void)stream; /* host copies follow the caller's own order */
  return e == NULL ? -EINVAL : PT_OK;
}

int kern_restore(struct kern_engine *e, const struct kern_xfer *x, size_t n,
                 size_t *bad_xfer, size_t *bad_block)
{
  struct kern_task *t;
  int rc;

  if (e == NULL)
    return -EINVAL;
  rc = xfers_check(x, n);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    if (x[i].bytes > 0 && x[i].crcs == NULL)
      return -EINVAL;
  rc = kern_tasks_make(&t, x, n, KERN_OP_VERIFY_COPY);
  if (rc < 0)
    return rc;
  rc = kern_pool_run(e->pool, t, n, bad_xfer, bad_block);
  free(t);
  return rc;
}
