/*
 * smp_rebuild.h — rebuilding a lost member's snapshot from its coding
 * group's survivors (DESIGN.md "Restore" 2), as a state machine without
 * I/O: the caller issues the fetches it lists (PEER_FETCH to the member
 * named, smp_peer_serve.c answers) into the buffers it names, and says
 * when each is in; the machine decodes each stripe slice once its k
 * pieces are in, straight into the destination (the new slot's data).
 *
 * For lost member L of a k+m group: every stripe in which L holds a data
 * chunk c loses that chunk; its k sources are the stripe's surviving
 * pieces with the lowest positions (rs_layout_plan: surviving data first).
 * The chunk's valid bytes (rs_layout_chunk_valid) are rebuilt in slices of
 * `slice` bytes: each slice is k fetches of [off, off + len) of its source
 * pieces, at most `window` slices in flight. A data piece past its own
 * valid bytes is zero and is not sent: the fetch says how many bytes to
 * expect (`expect`), and the rest of its buffer is zeroed here. L's parity
 * rows are not rebuilt: the next committed step writes them again.
 *
 * The bytes that come in are not trusted, but nothing here can tell a wrong
 * byte from a right one: the caller checks the rebuilt data against the
 * member's checksum table (snap_slot_verify) before anything is restored.
 * A fetch that came back with another length than expected is refused
 * (PT_EPROTO) and nothing is decoded from it.
 *
 * Not thread-safe; one machine per rebuild.
 */
#ifndef PT_SMP_REBUILD_H
#define PT_SMP_REBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ec/rs.h"

/* A survivor's term in a pipelined fetch: coef times its piece. */
struct smp_rebuild_hop {
  uint32_t member, what, index;
  uint8_t coef;
};

/* One fetch to issue: PEER_FETCH{step, what, index, offset, length} to
 * member `member`; its reply's `expect` bytes land at dst. A pipelined
 * fetch (coded) also carries the member's coefficient and the chain of the
 * other sources (PeerFetch.coef, .chain): its reply is the lost piece's
 * slice itself, length bytes. */
struct smp_rebuild_fetch {
  uint32_t id;        /* for smp_rebuild_got */
  uint32_t member;    /* who holds the piece */
  uint32_t what;      /* 0 a data chunk of that member, 1 a parity row */
  uint32_t index;     /* the chunk or the row */
  uint64_t offset, length;
  uint64_t expect;    /* bytes the reply carries (<= length) */
  void *dst;          /* length bytes, the machine's */
  bool coded;
  uint8_t coef;
  unsigned nhops;     /* coded: the other k - 1 sources, the next first */
  struct smp_rebuild_hop hop[RS_MAX_MEMBERS];
};

struct smp_rebuild;

/* A rebuild of member `lost` of a k+m group whose members have
 * member_bytes[0..k+m) slot data bytes, into dst (member_bytes[lost]
 * bytes). slice: bytes per fetch, a multiple of RS_ALIGN (0: 4 MiB);
 * window: slices in flight at once (0: 2). -EINVAL with err on a layout
 * rs_layout_init refuses or a lost member out of the group; -ENOMEM. */
int smp_rebuild_new(struct smp_rebuild **out, unsigned k, unsigned m,
                    const size_t *member_bytes, unsigned lost, void *dst,
                    size_t slice, unsigned window, char *err, size_t errlen);
void smp_rebuild_free(struct smp_rebuild *rb); /* rb may be NULL */

/* The fetches to issue now (at most max): those of the next slices while
 * fewer than `window` are in flight. Returns how many were written to out
 * (0: wait for replies, or done). */
unsigned smp_rebuild_next(struct smp_rebuild *rb, struct smp_rebuild_fetch *out,
                          unsigned max);

/* Fetch id's reply is in its dst: `bytes` bytes. PT_EPROTO when bytes is
 * not what it expected, or the fetch is not outstanding (nothing decoded);
 * a slice whose k fetches are in is decoded into the destination (0, or
 * the coder's error). */
int smp_rebuild_got(struct smp_rebuild *rb, uint32_t id, uint64_t bytes);

/* Repair pipelining (on): each slice not yet issued is one coded fetch
 * of its k sources in a chain instead of k fetches, so that about one
 * byte comes in per byte rebuilt. Off (a pipelined fetch failed: who in
 * the chain failed cannot be told from here): every coded slice in flight
 * is fetched again piece by piece under new ids, first at the next
 * smp_rebuild_next, and so are the slices after it. Off by default; k 1
 * has nothing to chain and stays off. 0 or -ENOMEM. */
int smp_rebuild_set_chain(struct smp_rebuild *rb, bool on);
bool smp_rebuild_chained(const struct smp_rebuild *rb);

/* Member `member` is no source any more (its fetch failed, was refused,
 * or brought bytes that do not verify): the stripes it was a source of
 * take their sources from the other survivors, and every slice in flight
 * that used it is fetched again, all its pieces, under new ids (the next
 * smp_rebuild_next lists them first; replies to the old ids are refused).
 * PT_ENOFRAG, with the coder's sentence, when the lost member and the
 * members erased are more than the code's m; -EINVAL for the lost member
 * or one out of the group; -ENOMEM. */
int smp_rebuild_erase(struct smp_rebuild *rb, unsigned member);
/* The members erased so far (bit i: member i). */
uint32_t smp_rebuild_erased(const struct smp_rebuild *rb);
/* Whether fetch id is outstanding (listed and not in yet): a caller drops
 * the ones that are not after an erase. */
bool smp_rebuild_wants(const struct smp_rebuild *rb, uint32_t id);

/* Every slice decoded. */
bool smp_rebuild_done(const struct smp_rebuild *rb);
/* Bytes fetched so far (what the replacement received) and the bytes
 * rebuilt (the lost member's data). */
void smp_rebuild_progress(const struct smp_rebuild *rb, uint64_t *fetched,
                          uint64_t *rebuilt);
/* The sentence of the last refusal ("" when none); never NULL. */
const char *smp_rebuild_error(const struct smp_rebuild *rb);

#endif /* PT_SMP_REBUILD_H */
