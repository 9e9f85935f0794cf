/*
 * snap_populate.h — filling one process's page tables for its mapping of a
 * snapshot object, in the background, before the copies need them.
 *
 * Why. The SMP allocates and zeroes every page of the object once, at
 * creation, but page tables are per process: a trainer that maps the object
 * anew (every restart) takes one write fault per 4 KiB page on its first copy
 * into each slot (measured: 0.4-0.5 s per GiB here, several seconds per GiB
 * from a PyTorch trainer). Populating ahead costs a fraction of that: on a
 * shared tmpfs mapping a read fault maps the page writable and maps its
 * neighbours too (fault-around, 16 pages), so MADV_POPULATE_READ (Linux 5.14)
 * fills the tables at about 0.05-0.1 s per GiB, after which a copy runs at
 * memcpy speed; with huge pages it is one entry per 2 MiB.
 *
 * How. A thread of its own ("pt-populate") walks the mapping in 2 MiB chunks,
 * the range given by snap_populate_hint() first (the slot a snapshot or a
 * restore is about to use), then the rest in address order, and ends when
 * every chunk is done. Nothing here changes a byte of the object, so the
 * copy may run over a chunk at the same time: populating is an optimisation
 * only, never needed for correctness, and every failure just ends it (a
 * mapping the copy can still fault in). The owner stops it (bounded by one
 * chunk) before it unmaps.
 */
#ifndef PT_SNAP_POPULATE_H
#define PT_SNAP_POPULATE_H

#include <stdbool.h>
#include <stdint.h>

#define SNAP_POPULATE_CHUNK ((uint64_t)2 << 20)

struct snap_populate;

/* Starts populating [base, base + bytes) in a new thread that blocks every
 * signal. base must stay mapped until snap_populate_stop(). OUT: *out, freed
 * by snap_populate_stop(). -ENOMEM, or the error of pthread_create. */
int snap_populate_start(struct snap_populate **out, void *base, uint64_t bytes);

/* Asks for [addr, addr + bytes) next: the chunks of that range not yet
 * taken are populated before any other. Parts outside the mapping are
 * ignored. Cheap (one lock, no system call): the trainer's thread calls it on
 * every snapshot. p may be NULL. */
void snap_populate_hint(struct snap_populate *p, const void *addr,
                        uint64_t bytes);

/* True once every chunk was populated, or populating ended early (a kernel
 * error; see snap_populate_error()). */
bool snap_populate_is_done(struct snap_populate *p);

/* 0, or the negative errno that ended populating early (e.g. -EFAULT for an
 * object truncated under the mapping). */
int snap_populate_error(struct snap_populate *p);

/* Stops the thread after its current chunk, joins it and frees p. p may be
 * NULL. */
void snap_populate_stop(struct snap_populate *p);

#endif /* PT_SNAP_POPULATE_H */
