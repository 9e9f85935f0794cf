/*
 * proc.h — what ptd reads of another process from /proc/PID/stat: its start
 * time, session, process group and run state, for the node's adoption and
 * liveness checks and the SMP's check of the trainer the node announced.
 */
#ifndef PT_PROC_H
#define PT_PROC_H

#include <stdint.h>

/* Field `field` (3 or more, as numbered in proc(5)) of /proc/PID/stat as a
 * non-negative number. -ESRCH when the process is gone, PT_EFORMAT for a
 * line that does not parse. OUT: *out. */
int proc_stat_field(int pid, int field, uint64_t *out);

/* The state letter (field 3: R running, D disk wait, S asleep, T stopped,
 * ...); '?' when unknown. */
char proc_stat_state(int pid);

#endif /* PT_PROC_H */
