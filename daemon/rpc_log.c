/*
 * rpc_log.c — where ptd's roles send what rpc/ reports (rpc/ itself logs
 * nothing): into the role's log, the lines a peer can repeat at will
 * rate-limited, one limit per kind, and the counts a burst left behind
 * written out by rpc_log_flush.
 */
#include <inttypes.h>

#include "common/log.h"
#include "common/monotime.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"

static struct log_limit accept_lim, refuse_lim;

static void rpc_log_line(enum rpc_log_kind kind, int level, const char *line)
{
  if (kind == RPC_LOG_ACCEPT)
    log_limited(&accept_lim, level, "%s", line);
  else if (kind == RPC_LOG_REFUSE)
    log_limited(&refuse_lim, level, "%s", line);
  else
    log_at_(level, "%s", line);
}

void rpc_log_route(void)
{
  rpc_set_log_cb(rpc_log_line);
}

void rpc_log_flush(void)
{
  uint64_t n, secs, now = monotime_ms();

  if (log_limit_flush(&refuse_lim, now, &n, &secs))
    log_warn("rpc: %" PRIu64 " more connections refused or dropped in the "
             "last %" PRIu64 " s (one such line per %u s)", n, secs,
             LOG_LIMIT_MS / 1000);
  if (log_limit_flush(&accept_lim, now, &n, &secs))
    log_warn("rpc: %" PRIu64 " more failed accepts in the last %" PRIu64
             " s (one such line per %u s)", n, secs, LOG_LIMIT_MS / 1000);
}
