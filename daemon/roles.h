/*
 * roles.h — the roles of the ptd binary. ptd_main.c dispatches on the first
 * argument; each role parses the rest of argv itself, prints its own --help,
 * and returns the process exit status.
 *
 * daemon/ holds one folder per role, each with its own header, and at the
 * top what the roles share:
 *
 *   daemon/smp/     ptd smp: one rank's shm object, its trainer and its node
 *   daemon/node/    ptd node: supervision, SMP links, control socket,
 *                   restore
 *   daemon/controller/  ptd controller: the cluster's membership, its
 *                   jobs and their commits across nodes, its journal
 *   daemon/commit/  the two-phase commit of a step over opaque voters (no
 *                   I/O): the node runs it over its SMPs, the controller
 *                   over a job's nodes
 *   ptd_main.c      the dispatch
 *   roles.h         the roles' entry points
 *   node_secret.c   the secret that proves a connection is the node's
 *   proc.c          /proc/PID/stat, the one reader of it
 *   rpc_log.c       what rpc/ reports, into the role's log
 *
 * The controller's jobs run daemon/commit/ over nodes, as ptd node runs it
 * over its SMPs.
 *
 * Names: a function's prefix names the file it lives in (node_life_* in
 * node/node_life.c, smp_trainer_* in smp/smp_trainer.c), the role entry
 * points (node_main, smp_main, controller_main) being in the file named
 * after the role; each folder header's file map says which file holds which
 * topic.
 *
 * Layers point one way: daemon/ uses rpc/, snapshot/, ec/, kernels/ and
 * common/; none of those includes anything from here.
 */
#ifndef PT_ROLES_H
#define PT_ROLES_H

/* ptd node: spawns and supervises one SMP and one trainer per local rank,
 * commits steps, restores after failures (daemon/node/). */
int node_main(int argc, char **argv);

/* ptd smp: owns one rank's shm object and serves its trainer and its node
 * over a Unix socket (daemon/smp/). */
int smp_main(int argc, char **argv);

/* ptd controller: one per cluster; nodes register and heartbeat, ptctl
 * queries (daemon/controller/). */
int controller_main(int argc, char **argv);

/* Routes what rpc/ reports into the role's log (daemon/rpc_log.c); each
 * role calls it at start-up, after log_set_role. */
void rpc_log_route(void);
/* Writes out how many rate-limited rpc/ lines were held back, once their
 * window has passed (common/log.h, log_limit_flush); a role with peers
 * that can flood it calls it every LOG_LIMIT_MS. */
void rpc_log_flush(void);

#endif /* PT_ROLES_H */
