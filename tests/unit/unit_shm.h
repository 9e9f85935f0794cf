/*
 * unit_shm.h — helpers the unit tests share for the shm objects they make.
 */
#ifndef PT_UNIT_SHM_H
#define PT_UNIT_SHM_H

/* Unlinks every object in /dev/shm whose name starts with prefix (given
 * without the leading '/'): whatever a test run left behind, even after a
 * test crashed in its forked process. */
void unit_shm_sweep(const char *prefix);

#endif /* PT_UNIT_SHM_H */
