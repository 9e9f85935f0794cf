/*
 * unit.h — helpers every unit test binary links (tests/unit/unit.c): the
 * Check runner's epilogue, the sweep of the shm objects a run made, a wait
 * for a peer to close a connection, and a session of the binary's own.
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

/* Makes the calling process (main, before unit_run) lead a session of its
 * own, so that its tests (Check's forked children) belong to a session whose
 * leader is alive: a test that names its session's leader as the trainer
 * needs one, and the session a runner inherits may be led by a process that
 * has exited (a zombie) or by none in this pid namespace. When the process
 * already leads a process group, it forks: the child goes on in the new
 * session (and dies with the parent), the parent waits and exits with the
 * child's status. */
void unit_own_session(void);

#endif /* PT_UNIT_H */
