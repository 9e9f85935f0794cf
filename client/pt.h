/*
 * pt.h — the trainer's side of pt, and the only installed header.
 *
 * A training rank opens one client, registers the memory regions that make up
 * its state (parameters, optimizer moments, RNG state, data cursor), then at the
 * end of every step (or every few steps) calls pt_snapshot(). The call returns at
 * once; the copy into the shared-memory slot held by the rank's snapshot
 * management process (SMP) runs beside the next forward and backward pass,
 * and as soon as it has finished libpt has the SMP seal the slot, so that the
 * step can be committed across the job while the trainer still computes.
 * Before the optimizer modifies the registered state again the trainer calls
 * pt_fence(), which blocks only while that copy or its seal is still under
 * way. After a crash the restarted trainer calls pt_restore(), which copies
 * the newest committed step back into the regions and tells the trainer which
 * step that was.
 *
 * Errors: every action returns PT_OK (0), a positive status (PT_SKIPPED), or a
 * negative code: a negated errno value or one of the PT_E* codes below.
 * pt_strerror() names any of them and never returns NULL.
 *
 * Threads: one pt_client may be used by one thread at a time; callers that
 * share a client between threads serialise the calls themselves. Distinct
 * clients are independent. libpt starts its own threads per client: copy
 * thread(s), and from the first pt_snapshot() one that seals each finished
 * copy; they block every signal, and the log callback is only ever called
 * from within the application's calls, never from them.
 *
 * Processes: a client belongs to the process that opened it. A child forked
 * without exec (a data-loader worker) inherits a copy of the client but not
 * libpt's threads, and the connection it inherits is the parent's: every
 * pt_* call on that copy from the child returns PT_ESTATE at once (and
 * pt_last_error() says "the client belongs to process N: a forked child must
 * open its own client"), touching neither the threads, the locks nor the
 * connection; pt_client_close() in the child returns at once and releases
 * nothing, so the parent's client goes on working. A child that needs
 * snapshots of its own opens its own client. No log callback is called for
 * such a refusal.
 *
 * libpt never exits, aborts or prints: failures are returned, and messages
 * reach the application only through the log callback it installs.
 *
 * Training never waits for protection: pt_snapshot() and pt_fence() wait on
 * the SMP at most snapshot_timeout_ms (default 100 ms); an SMP that does not
 * answer by then (stopped, overloaded) makes the step PT_SKIPPED.
 *
 * Exit status, under `ptd node`: the node restarts the whole job (every
 * rank, from the newest committed step, within its restart limits; or
 * only the dead rank, see "Recovery in place" below) when a trainer dies
 * or exits with any status but these two:
 *   0   this rank finished; call pt_client_close(c, true) before exiting,
 *       which tells the SMP so.
 *   78  (EX_CONFIG) a permanent failure that no restart can cure: the node
 *       does not restart, and the job fails. Exit 78 only for such errors,
 *       e.g. PT_EREGIONS (the code's region table differs from the
 *       snapshot's), PT_EFOREIGN, PT_EWORLD, PT_ECONFIG, PT_EBUDGET,
 *       PT_ENODEVICE, PT_ENORESTORE, PT_ESTEP; never for a failure that may
 *       pass (a broken connection, a timeout, a damaged snapshot), where a
 *       restart is the cure: exit 1.
 */
#ifndef PT_H
#define PT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * ABI. PT_VERSION is the version of this header, pt_version() that of the
 * libpt in the process, both (major << 16) | minor. A new major breaks the
 * ABI (the soname libpt.so.<major> changes with it); a new minor only adds:
 * functions, error codes, and fields at the end of struct pt_options. A
 * binding (ctypes, cffi) checks pt_version() >> 16 == PT_VERSION_MAJOR and
 * that the minor is at least the one it was written for. libpt.so exports
 * the pt_* functions of this header and nothing else.
 */
#define PT_VERSION_MAJOR 0
#define PT_VERSION_MINOR 3
#define PT_VERSION (((uint32_t)PT_VERSION_MAJOR << 16) | PT_VERSION_MINOR)

/* The version of the libpt linked in: (major << 16) | minor. */
uint32_t pt_version(void);

/* Project error codes, in their own range below every errno value. */
#define PT_ERRNO_MAP(XX)                                                       \
  XX(CHECKSUM, -1001, "checksum mismatch")                                     \
  XX(NOFRAG, -1002, "not enough fragments")                                    \
  XX(GPU, -1003, "GPU failure")                                                \
  XX(NOSNAP, -1004, "no committed snapshot to restore")                        \
  XX(FORMAT, -1005, "malformed snapshot object")                               \
  XX(VERSION, -1006, "unsupported format version")                             \
  XX(STATE, -1007, "operation not allowed in this state")                      \
  XX(REGIONS, -1008, "region table does not match the snapshot")               \
  XX(PROTO, -1009, "protocol error")                                           \
  XX(TOOBIG, -1010, "message too large")                                       \
  XX(BUDGET, -1011, "memory budget exceeded")                                  \
  XX(NODEVICE, -1012, "device memory needs the CUDA backend")                  \
  XX(INFLIGHT, -1013, "a snapshot copy is in flight")                          \
  XX(OVERLAP, -1014, "regions overlap")                                        \
  XX(STALE, -1015, "slot was reassigned (stale generation)")                   \
  XX(CONFIG, -1016, "invalid configuration")                                   \
  XX(NORESTORE, -1017,                                                         \
     "a committed snapshot exists: call pt_restore() before pt_snapshot()")    \
  XX(STEP, -1018, "step is not newer than the committed step")                 \
  XX(FOREIGN, -1019, "snapshot object belongs to another job instance")        \
  XX(WORLD, -1020, "snapshot was taken with another world size")               \
  XX(ROLE, -1021, "request not allowed for this connection's role")          \
  XX(EPOCH, -1022, "decision of another epoch of the job")

enum {
  PT_OK = 0,
  /* pt_snapshot(): no free slot (protection of an earlier step still runs);
   * nothing was copied and training goes on. Not an error. */
  PT_SKIPPED = 1,
  /* pt_snapshot(), pt_recover_pending(), for a client opened with
   * recover_in_place: another rank died and the node asks this one to
   * restore in place (see pt_recover_pending()). Nothing was copied. */
  PT_RECOVER = 2,
#define PT_ERR_ENUM_(name, value, text) PT_E##name = (value),
  PT_ERRNO_MAP(PT_ERR_ENUM_)
#undef PT_ERR_ENUM_
};

/* Never NULL. For a negated errno value, the system's text. */
const char *pt_strerror(int err);
/* The code's symbolic name ("PT_ECHECKSUM", "ENOENT", ...); never NULL. */
const char *pt_err_name(int err);

typedef struct pt_client pt_client;

enum pt_mem {
  PT_MEM_HOST = 0,   /* ordinary host memory */
  PT_MEM_DEVICE = 1, /* CUDA device memory: needs libpt built with CUDA */
};

enum pt_log_level { PT_LOG_ERROR = 3, PT_LOG_WARN = 4, PT_LOG_INFO = 6, PT_LOG_DEBUG = 7 };
typedef void (*pt_log_fn)(void *arg, int level, const char *msg);

/*
 * Options for pt_client_open(). Zero-initialise, set .size to
 * sizeof(struct pt_options), then set what differs; every other zero or NULL
 * field takes its value from the environment ptd sets for the trainer, then
 * from the default.
 *
 * size tells libpt which version of this struct the caller has: new fields
 * are only ever added at the end, and libpt reads none past size (they count
 * as zero). size 0 is taken as this header's sizeof(struct pt_options), so a
 * caller compiled against this header that only zero-initialises works; a
 * binding that builds the struct itself must set it. A size larger than the
 * libpt in the process knows (a binding newer than the library), or smaller
 * than the first struct that had the field: PT_ECONFIG, before anything is
 * read from opts (so without a log message).
 */
struct pt_options {
  size_t size;             /* sizeof(struct pt_options), or 0 (see above) */
  const char *socket_path; /* SMP socket: $PT_SMP_SOCKET */
  const char *job;         /* job name: $PT_JOB, default "job" */
  int rank;                /* 0 means $PT_RANK, then $RANK, then 0; see rank_set */
  bool rank_set;           /* true: use .rank as given, even 0 */
  int world;               /* 0: $PT_WORLD_SIZE, $WORLD_SIZE, 1 */
  int copy_threads;        /* 0: $PT_COPY_THREADS, default 1 */
  int timeout_ms;          /* deadline of each request to the SMP; 0:
                            * $PT_TIMEOUT_MS, 10000 */
  int snapshot_timeout_ms; /* how long pt_snapshot() and pt_fence() wait on
                            * the SMP: 0: $PT_SNAPSHOT_TIMEOUT_MS, 100; at
                            * most timeout_ms */
  pt_log_fn log_fn;        /* NULL: libpt says nothing */
  void *log_arg;
  /* Since 0.3. true: this trainer can restore in place (see
   * pt_recover_pending()); false (the default): when another rank dies,
   * `ptd node` restarts this one as well. */
  bool recover_in_place;
};

/* Opens a client for this rank and connects to its SMP.
 * OUT: *out, owned by the caller, released with pt_client_close().
 * opts may be NULL (everything from the environment).
 * Only connects; nothing is asked of the SMP until the first pt_restore() or
 * pt_snapshot(). While nothing listens on the socket (no socket file, a
 * refused or reset connection, a full backlog: the SMP is starting or being
 * replaced) it retries every 20 ms until timeout_ms, then returns that last
 * failure (e.g. -ENOENT, -ECONNREFUSED); *out stays NULL. */
int pt_client_open(pt_client **out, const struct pt_options *opts);

#define PT_MAX_REGIONS 65536     /* regions per client */
#define PT_REGION_NAME_MAX 255   /* bytes of a region name, without the NUL */

/* Registers [ptr, ptr+bytes) under a unique name of 1 to PT_REGION_NAME_MAX
 * bytes (-ENAMETOOLONG beyond). Only before the first pt_snapshot() or
 * pt_restore() (PT_ESTATE after); at most PT_MAX_REGIONS regions (-E2BIG);
 * regions must not overlap (PT_EOVERLAP) and bytes must be > 0; a name
 * registered twice: -EEXIST. The names, sizes, kinds and the order of
 * registration make up the region table that a snapshot is taken with: a
 * restore needs the same table (PT_EREGIONS otherwise). Each region costs,
 * in every slot of the snapshot object, its bytes rounded up to 64 and a
 * 4-byte checksum per started MiB, and 320 bytes once in the object's
 * region table. The memory stays the caller's; it must stay valid until
 * pt_client_close() or until pt_region_update() moves the region.
 * PT_MEM_DEVICE without the CUDA backend: PT_ENODEVICE. Register in an
 * order that does not depend on the run (not on hash-map iteration or thread
 * timing). */
int pt_region_register(pt_client *c, const char *name, void *ptr, size_t bytes,
                       enum pt_mem kind);

/* Points the region registered as name at new memory, for state that moves
 * (a framework that replaces a tensor's storage): same size and kind, ptr
 * the start of bytes valid bytes of that kind. Allowed at any time, before
 * or after the table is frozen, except while a snapshot's copy is in flight
 * (PT_EINFLIGHT: call pt_fence() first); the next pt_snapshot() copies
 * from ptr and the next pt_restore() writes to it. The old memory is no
 * longer read by libpt once this returns. -ENOENT for an unknown name,
 * PT_EOVERLAP when [ptr, ptr+bytes) overlaps another region (nothing
 * changes then), -EINVAL for a NULL name or ptr. */
int pt_region_update(pt_client *c, const char *name, void *ptr);

/* Starts an asynchronous copy of every region as step `step` and returns at
 * once: PT_OK (copy started), PT_SKIPPED (nothing copied: no free slot, or
 * the SMP did not answer within snapshot_timeout_ms), or an error (the run
 * may go on; no snapshot was taken). Steps must increase (-EINVAL), also
 * past a skipped step. The regions must not be modified until pt_fence()
 * returns. libpt seals the snapshot on its own as soon as the copy has
 * finished.
 * A copy still in flight: PT_EINFLIGHT (call pt_fence() first). A previous
 * snapshot whose copy has finished but that was never fenced holds this call
 * up at most until the SMP answers its seal (already sent), within
 * snapshot_timeout_ms (else PT_SKIPPED); its outcome is then logged, counted
 * in snapshots_failed if it failed, and not returned.
 * Ordering: when the SMP holds a committed step of an earlier run, a client
 * that has not called pt_restore() gets PT_ENORESTORE (its snapshots would
 * replace that run's state with one that can never be committed), and a step
 * at or below the committed step is PT_ESTEP. Only the client's first
 * exchange with the SMP (its HELLO, which may have the SMP create its
 * object) may take up to timeout_ms; call pt_restore() first. */
int pt_snapshot(pt_client *c, uint64_t step);

/* The CUDA stream whose queued work every following pt_snapshot() waits
 * for before it copies device memory: libpt records an event on stream at
 * each pt_snapshot() and its own copy stream waits on it, so the trainer
 * passes the stream its optimizer step ran on (PyTorch's current stream)
 * and need not synchronise. stream is a cudaStream_t of the device the
 * client was opened on; NULL (the default): none, and the caller makes
 * sure the device data is final before pt_snapshot() (e.g.
 * cudaStreamSynchronize). The CPU backend accepts and ignores it.
 * Since 0.3. PT_OK, or -EINVAL for a NULL client. */
int pt_cuda_stream_set(pt_client *c, void *stream);

/* Waits until the copy started by the last pt_snapshot() has finished and the
 * SMP has answered its seal (sent by libpt when the copy finished, so usually
 * long before this call). Returns that snapshot's outcome (PT_OK or an error,
 * e.g. the connection broke), or PT_OK when nothing was in flight. Waits for
 * the SMP at most snapshot_timeout_ms past the copy's end (or past this call):
 * a seal unanswered by then is -ETIMEDOUT, counted in snapshots_failed, and
 * the next calls go on (later fences return PT_OK for it; the SMP may still
 * seal the step when it answers). */
int pt_fence(pt_client *c);

/* Copies the newest committed step back into the regions, verifying every
 * block's checksum, and stores its step number in *step. *step is written
 * only on PT_OK: untouched on PT_ENOSNAP and on every error.
 * PT_ENOSNAP: there is nothing to restore (a fresh start); regions untouched.
 * PT_EINFLIGHT: a snapshot's copy is in flight (call pt_fence() first).
 * PT_EREGIONS: the snapshot was taken with a different region table.
 * PT_ECHECKSUM: the data is damaged; the regions may have been partly written
 * and must not be used.
 * Each request to the SMP has timeout_ms, but the call may take longer in
 * one case: an SMP rebuilding the step from its coding group (its node was
 * lost) reports its progress before each deadline, and pt_restore() waits
 * as long as bytes keep coming (the SMP gives up after 9 s without any;
 * -ETIMEDOUT here after 15 s of reports that show none). */
int pt_restore(pt_client *c, uint64_t *step);

/*
 * Recovery in place. Without it, `ptd node` restarts every rank when one
 * trainer dies. A client opened with recover_in_place tells its SMP that
 * this process can instead stop at a safe point and restore in place:
 * when another rank's trainer dies, the node restarts only that one and
 * asks the others to restore the step it chooses. Such a client then gets
 * PT_RECOVER from pt_snapshot() (no slot is taken), and the trainer
 * leaves its step loop, re-forms its collective communication with the
 * restarted rank, calls pt_restore() (which waits for the node's restore
 * point, at most 15 s) and goes on from the step it returns. A trainer
 * whose step failed because a peer vanished (a collective raised an
 * error) asks pt_recover_pending() whether that is why, before giving up.
 * A rank that does not restore within the node's --recover-timeout is
 * restarted with all the others, as without this option. The node
 * recovers in place only to a committed step (before the first commit,
 * every rank restarts: a survivor no longer has its first state), and
 * standalone only (in cluster mode the controller restarts the job).
 */

/* Has the node asked this trainer to restore in place? Asks the SMP every
 * 20 ms until timeout_ms (0: once): PT_RECOVER (yes: pt_restore() next;
 * *generation, when not NULL, is the node's count of such recoveries: a
 * trainer that meets its restarted peers at a new rendezvous uses it, as
 * `ptd node` gives the restarted ones MASTER_PORT = PT_MASTER_PORT_BASE +
 * generation % 64), PT_OK (not asked by then), or an error (PT_ESTATE: the
 * client was not opened with recover_in_place). */
int pt_recover_pending(pt_client *c, int timeout_ms, uint64_t *generation);

/* The blob: a small opaque byte string stored with every snapshot, for
 * state that lives outside registered memory (a pickled sampler, a
 * learning-rate scheduler, an RNG of the language runtime). */
#define PT_BLOB_MAX ((size_t)1 << 20) /* bytes */

/* Sets the blob that every following pt_snapshot() stores with its step,
 * until the next pt_blob_set() (len 0: an empty blob) or pt_restore()
 * (which makes the restored blob the current one). [data, data+len) is
 * copied here: the caller may reuse it as soon as this returns, also while
 * a snapshot's copy is in flight (the blob a snapshot stores is copied, and
 * its CRC32C computed, inside pt_snapshot(), at memcpy speed). data may be
 * NULL when len is 0. PT_ETOOBIG for len > PT_BLOB_MAX; -EINVAL for NULL
 * data with len > 0. Before any pt_blob_set() the blob is empty. */
int pt_blob_set(pt_client *c, const void *data, size_t len);

/* The blob of the step the last successful pt_restore() brought back,
 * checked against the CRC sealed with it (a damaged blob fails that
 * pt_restore() with PT_ECHECKSUM). OUT: *len, its bytes (also on -ENOBUFS,
 * so that the caller can size buf; 0 on PT_ENOSNAP); buf receives them.
 * PT_ENOSNAP: no pt_restore() has succeeded on c (a fresh start, or the
 * last one failed). -ENOBUFS: cap < *len, nothing copied. buf may be NULL
 * when cap is 0. */
int pt_blob_get(pt_client *c, void *buf, size_t cap, size_t *len);

struct pt_status {
  uint32_t rank, world;
  uint64_t regions, bytes;        /* registered */
  uint64_t snapshots_started;     /* pt_snapshot() that returned PT_OK */
  uint64_t snapshots_skipped;     /* that returned PT_SKIPPED */
  uint64_t snapshots_failed;      /* that returned or fenced an error */
  bool has_committed;             /* the SMP reported a committed step */
  uint64_t committed_step;
  bool in_flight;                 /* a snapshot started whose outcome no
                                   * pt_fence() (or later call) collected */
  const char *backend;            /* "cpu" or "cuda" */
};
int pt_status_get(pt_client *c, struct pt_status *st);

/* The text of the last failure on this client (the SMP's message where it gave
 * one), or "" — never NULL. Valid until the next call on c. */
const char *pt_last_error(pt_client *c);

/* Fences, tells the SMP the trainer is finished when done is true, stops
 * libpt's threads and frees everything. Keeps the request deadlines: an SMP
 * that is gone or hangs delays it by at most about twice timeout_ms.
 * c may be NULL. In a forked child (see Processes above) it returns at once
 * and releases nothing. */
void pt_client_close(pt_client *c, bool done);

#ifdef __cplusplus
}
#endif
#endif /* PT_H */
