/*
 * unit.h — helpers every unit test binary links (tests/unit/unit.c): the
 * Check runner's epilogue, the sweep of the shm objects a run made, and a
 * wait for a peer to close a connection.
 */
#ifndef PT_UNIT_H
#define PT_UNIT_H

#include <stdbool.h>

#include <check.h>

/* Runs every test of s (each in its own process, as Check forks) and frees
 * the runner. Returns the binary's exit status: EXIT_SUCCESS when every test
 * passed, else EXIT_FAILURE. */
int unit_run(Suite *s);

/* Unlinks every object in /dev/shm whose name starts with the prefix that
 * fmt formats (given without the leading '/'): whatever a test run left
 * behind, even after a test crashed in its forked process. */
void unit_shm_sweep(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True when the peer of the stream socket fd closes it (EOF or a reset)
 * within timeout_ms; whatever it sends before is read and dropped. */
bool unit_closed_by_peer(int fd, int timeout_ms);

#endif /* PT_UNIT_H */
