/*
 * unit.h — helpers every unit test binary links (tests/unit/unit.c): the
 * Check runner's epilogue and the sweep of the shm objects a run made.
 */
#ifndef PT_UNIT_H
#define PT_UNIT_H

#include <check.h>

/* Runs every test of s (each in its own process, as Check forks) and frees
 * the runner. Returns the binary's exit status: EXIT_SUCCESS when every test
 * passed, else EXIT_FAILURE. */
int unit_run(Suite *s);

/* Unlinks every object in /dev/shm whose name starts with the prefix that
 * fmt formats (given without the leading '/'): whatever a test run left
 * behind, even after a test crashed in its forked process. */
void unit_shm_sweep(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* PT_UNIT_H */
