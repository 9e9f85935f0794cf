/*
 * roles.h — the three roles of the ptd binary. ptd_main.c dispatches on the
 * first argument; each role parses the rest of argv itself, prints its own
 * --help, and returns the process exit status.
 */
#ifndef PT_ROLES_H
#define PT_ROLES_H

/* ptd node: spawns and supervises one SMP and one trainer per local rank,
 * commits steps, restores after failures (daemon/node*.c). */
int node_main(int argc, char **argv);

/* ptd smp: owns one rank's shm object and serves its trainer and its node
 * over a Unix socket (daemon/smp*.c). */
int smp_main(int argc, char **argv);

#endif /* PT_ROLES_H */
