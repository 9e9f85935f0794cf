/*
 * rpc_log.c — where ptd's roles send what rpc/ reports (rpc/ itself logs
 * nothing): into the role's log, the lines a peer can repeat at will
 * rate-limited, one limit per kind.
 */
#include "common/log.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"

static void rpc_log_line(enum rpc_log_kind kind, int level, const char *line)
{
  static struct log_limit accept_lim, refuse_lim;

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
