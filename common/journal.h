/*
 * journal.h — an append-only journal of records in one file, for decisions
 * that must survive a crash (the controller's: a job started, a step
 * committed, an epoch begun). A record is durable when journal_append
 * returns: it is written and fdatasync'ed before the caller lets the
 * decision take effect.
 *
 * File: a 16-byte header, then records back to back, little-endian:
 *
 *   header  0  8  magic "PTJOURN1"
 *           8  4  version (JOURNAL_VERSION)
 *          12  4  0 (reserved)
 *   record  0  4  payload length (at most JOURNAL_MAX_RECORD)
 *           4  4  type (the caller's; 0 is not a type)
 *           8  4  CRC32C (common/crc32c.h) of the length, type and payload
 *          12  .  payload
 *
 * Opening replays every record in order. A crash in the middle of an append
 * leaves the last record short or with a wrong CRC and nothing after it:
 * that record never took effect, so it is dropped (the file is cut back to
 * the last whole record) and said in *dropped. Any other damage (a bad
 * record followed by more bytes, a damaged length that runs past the end
 * of the file over whole records, a bad header, a length over the limit)
 * is refused with PT_EFORMAT and a sentence naming the offset: the journal
 * is then not guessed at.
 *
 * The journal stays bounded by compaction: journal_compact writes the
 * records that describe the state now (the caller's) to a new file, which
 * replaces the journal atomically (common/state_file.h's discipline: made
 * new, fsync'ed, renamed, directory fsync'ed). The file is 0600, owned by
 * this user, never opened through a link, and locked (flock) against a
 * second writer.
 */
#ifndef PT_JOURNAL_H
#define PT_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define JOURNAL_VERSION 1u
#define JOURNAL_HDR_BYTES 16u
#define JOURNAL_REC_HDR_BYTES 12u
#define JOURNAL_MAX_RECORD (1u << 20)

struct journal;

/* Called for every record at open, in order; non-zero stops the open and
 * is returned by journal_open. data is valid only during the call. */
typedef int (*journal_replay_fn)(void *arg, uint32_t type, const void *data,
                                 size_t len);

/* Opens path, creating an empty journal when it does not exist, and
 * replays it. OUT: *j; *dropped (may be NULL): bytes of a torn last record
 * cut off, 0 when none. PT_EFORMAT with a sentence in err for a damaged
 * journal or a file that is not this user's 0600 regular file; -EBUSY when
 * another process holds it; else a negated errno. */
int journal_open(struct journal **j, const char *path, journal_replay_fn fn,
                 void *arg, uint64_t *dropped, char *err, size_t errlen);

/* Appends one record and makes it durable (fdatasync) before returning.
 * -EINVAL for type 0, -E2BIG for len over JOURNAL_MAX_RECORD; on a write
 * error the file is cut back to what it was, and the error returned. */
int journal_append(struct journal *j, uint32_t type, const void *data,
                   size_t len);

struct journal_rec {
  uint32_t type;
  const void *data;
  size_t len;
};

/* Replaces the journal with the n records given (the state as it is now),
 * atomically: a crash leaves the old journal or the new one. */
int journal_compact(struct journal *j, const struct journal_rec *recs,
                    size_t n);

/* Bytes in the file, header included, and records in it. */
uint64_t journal_bytes(const struct journal *j);
uint64_t journal_records(const struct journal *j);

void journal_close(struct journal *j);

#endif /* PT_JOURNAL_H */
