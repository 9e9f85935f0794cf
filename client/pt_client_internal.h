/*
 * pt_client_internal.h — libpt's private header: struct pt_client and the
 * functions that the files of libpt's client share. Not installed; the
 * contract with the trainer is client/pt.h.
 *
 * The files:
 *   pt_client.c          options, pt_client_open(), pt_status_get(),
 *                        pt_last_error(), pt_client_close()
 *   pt_client_conn.c     messages (the log), time, the connection to the SMP
 *                        (requests, owed replies) and the session (HELLO)
 *   pt_client_regions.c  the region table and the mapped object, the name and
 *                        address indexes, pt_region_register/update()
 *   pt_client_snap.c     the sealer thread, pt_snapshot(), pt_fence()
 *   pt_client_restore.c  pt_restore(), pt_blob_set/get()
 *
 * Functions shared between these files are named client_*: libpt.so exports
 * only pt_* (client/libpt.map), and libpt.a then puts no short, common name
 * (conn_open, session_call, ...) into a program that links it statically.
 *
 * A client holds one blocking Unix-socket connection to its rank's SMP, the
 * region table the trainer registered, a copy engine (kernels/kernels.h), a
 * sealer thread and, once the table is frozen, a read-write mapping of the
 * SMP's shm object.
 *
 * Invariants kept here:
 *   - Two threads of ours use a client: the trainer's (every pt_* call) and
 *     the sealer, started at the first pt_snapshot() and joined by
 *     pt_client_close(); plus the copy engine's own. The sealer waits for the
 *     copy in flight to complete and at once sends its SEAL, so the node can
 *     commit the step during the trainer's next forward and backward pass
 *     instead of during the optimizer step between pt_fence() and the next
 *     pt_snapshot().
 *   - One more thread, started with each new mapping of the object and
 *     stopped before it is unmapped, fills this process's page tables for
 *     it, the slot in use first (snapshot/snap_populate.h); it only reads.
 *   - conn_mu serialises the connection: every request and its reply, every
 *     connect and HELLO, and fd / epoch / hello_ok. It is never held while
 *     data is copied, and never taken while mu is held (the sealer's log
 *     path takes no lock at all), so the two cannot deadlock.
 *   - mu and cv guard the pending snapshot's phase (IDLE -> COPYING ->
 *     SEALING -> DONE -> IDLE). Only the trainer's thread starts a snapshot
 *     (IDLE -> COPYING) and collects an outcome (DONE -> IDLE); only the
 *     sealer moves COPYING -> SEALING -> DONE. The trainer's thread sends
 *     requests (SLOT_ACQUIRE, RESTORE_QUERY, HELLO, BYE) and calls the engine
 *     only in IDLE, so the engine sees one caller at a time and the sealer's
 *     seal never races a reconnect that would renumber its connection.
 *     pt_snapshot() and pt_restore() refuse while a copy runs (PT_EINFLIGHT)
 *     but wait for a seal already on its way, as a finished copy was always
 *     sealed before they went on.
 *   - Every exchange with the SMP has a deadline (timeout_ms). Training never
 *     waits for protection: pt_snapshot() waits on the SMP at most
 *     snap_timeout_ms (a seal still on its way, the slot request), else the
 *     step is PT_SKIPPED; pt_fence() waits for a seal's answer at most
 *     snap_timeout_ms past the copy's end. Only a client's first HELLO (the
 *     SMP may create and pre-fault its object) takes the whole timeout_ms.
 *     The sealer's seal is answered or given up within timeout_ms of the
 *     copy's end.
 *   - A request that timed out before any byte of its reply came keeps the
 *     connection: its reply is owed (owed[]), read before the next request
 *     is sent, so a stopped SMP gets one request, not one per step; a slot
 *     that a late SLOT_REPLY assigned is handed back at once. Every other
 *     failure closes the connection.
 *   - The region table is frozen by the first pt_snapshot() or pt_restore():
 *     that call sends HELLO, maps the object the SMP names and checks that its
 *     region table equals ours.
 *   - A broken connection (the SMP died or restarted) is closed and forgotten;
 *     the next call reconnects and says HELLO again within its own deadline.
 *     A HELLO answered -EAGAIN (the SMP waits for its node to name the
 *     trainer it started) is asked again, within the same deadline.
 *     A snapshot whose connection broke before its seal is reported as failed:
 *     the SMP freed its slot. Nothing here is ever fatal to the trainer.
 *   - libpt never prints: messages go to the application's log callback, and
 *     the last failure's text is kept for pt_last_error(). The sealer keeps
 *     its messages with the outcome; the trainer's thread hands them on when
 *     it collects the outcome, so the callback and last_error are only ever
 *     touched by the application's thread.
 */
#ifndef PT_CLIENT_INTERNAL_H
#define PT_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "rpc/rpc.h"
#include "snapshot/snap_populate.h"
#include "snapshot/snap_store.h"

/* Requests sent whose reply is still owed (they timed out on a connection
 * that stays up); one more, and the connection is closed instead. */
#define OWED_MAX 4
/* Messages the sealer keeps for one snapshot; a further one replaces the
 * last, so the outcome's own message is always kept. */
#define SEAL_MSG_MAX 4

struct region {
  char name[SNAP_NAME_MAX];
  void *ptr;
  size_t bytes;
  int kind; /* enum pt_mem */
};

/* Where the pending snapshot stands (pt_client.phase, under mu). */
enum seal_phase {
  PHASE_IDLE = 0, /* nothing pending, or its outcome was collected */
  PHASE_COPYING,  /* the copy runs; the sealer waits for it */
  PHASE_SEALING,  /* the copy is done; the sealer's SEAL is on its way */
  PHASE_DONE,     /* outcome recorded in seal_rc, not yet collected */
};

struct seal_msg {
  int level;
  char text[512];
};

/* A request that timed out before any byte of its reply came: the reply is
 * still owed and is settled when it arrives (owed_settle()). */
struct owed {
  uint64_t id;
  uint32_t type;
  uint64_t step; /* SLOT_ACQUIRE, SEAL, RELEASE: the step asked for */
};

struct pt_client {
  /* configuration */
  char *socket_path;
  char job[SNAP_JOB_MAX];
  uint32_t rank, world;
  int copy_threads;
  int timeout_ms;
  int snap_timeout_ms; /* the bound of pt_snapshot() and of a fence's wait */
  bool recover_in_place; /* pt_options.recover_in_place: said in HELLO */
  pt_log_fn log_fn;
  void *log_arg;
  char last_error[512];
  /* the process that opened the client: its threads, locks and connection
   * are that process's; a forked child may not use them (client_foreign_process) */
  pid_t owner_pid;
  /* retries of a session (a refused or failed HELLO tried again until the
   * deadline): the first failure is logged, the repeats only counted and
   * summed up once the retries end (quiet_end). Trainer's thread. */
  bool quiet;
  int quiet_count, quiet_level;
  uint64_t quiet_since;
  char quiet_last[512];

  /* connection to the SMP, under conn_mu */
  pthread_mutex_t conn_mu;
  int fd;          /* -1: disconnected */
  uint64_t epoch;  /* incremented at every connect */
  bool hello_ok;   /* HELLO accepted on the current connection */
  bool had_session; /* a HELLO was accepted once: later ones are bounded */
  uint64_t next_id; /* request ids on this client's connections, never 0 */
  struct owed owed[OWED_MAX];
  int nowed;

  /* region table, in registration order, plus an index sorted by address */
  struct region *regions;
  size_t *by_addr;
  size_t nregions, cap;
  /* index of the names: open addressing, entries hold a region's index + 1
   * (0: empty); names_cap is a power of two above twice nregions */
  uint32_t *names;
  size_t names_cap;
  uint64_t total_bytes;
  bool frozen;
  struct snap_region_desc *descs;
  struct kern_xfer *xfers;

  /* copy engine and the mapped object */
  struct kern_engine *engine;
  struct snap_store *store;
  void *reg_base; /* registered with the engine */
  /* fills this process's page tables for the mapping in the background,
   * the slot in use first (snapshot/snap_populate.h); NULL when it could
   * not start. Started and stopped with the mapping, trainer's thread. */
  struct snap_populate *populate;
  uint64_t store_ctime;
  char shm_name[256];

  /* the pending snapshot: p_* are written by the trainer's thread in IDLE
   * and read by the sealer after it took the job under mu */
  uint32_t p_slot;
  uint64_t p_gen, p_step, p_epoch;

  /* the sealer; phase, seal_*, stop under mu; cv (CLOCK_MONOTONIC) is
   * broadcast at every change of them */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t sealer;
  bool sealer_started;    /* trainer's thread only */
  bool stop;
  enum seal_phase phase;
  int seal_rc;            /* the outcome, in PHASE_DONE */
  int copy_fault;         /* client_test_copy_fault(): the next copy's rc */
  uint64_t seal_deadline; /* rpc_now_ms() limit of the SEAL, from SEALING */
  uint64_t seal_sent;     /* rpc_now_ms() when the copy ended, from SEALING */
  bool seal_abandoned;    /* pt_fence() gave up on it: already counted */
  /* the sealer's messages of the pending snapshot: written by the sealer
   * before DONE, read by the trainer's thread after it */
  struct seal_msg seal_msgs[SEAL_MSG_MAX];
  int seal_nmsgs;

  bool has_last_step;
  uint64_t last_step;
  bool restore_called; /* pt_restore() answered PT_OK or PT_ENOSNAP */
  bool found_committed; /* the first accepted HELLO named a committed step:
                         * an earlier run's, not one of this client's */
  uint64_t hang_skips;  /* snapshots skipped in a row: the SMP is slow */

  uint64_t started, skipped, failed;
  bool has_committed;
  uint64_t committed_step;

  /* the blob: the one pt_snapshot() stores (set by pt_blob_set() or the
   * last restore) and the one the last pt_restore() brought back; each
   * buffer PT_BLOB_MAX bytes once allocated. Trainer's thread only. */
  uint8_t *blob;
  size_t blob_len;
  uint8_t *rblob;
  size_t rblob_len;
  bool rblob_ok; /* a pt_restore() succeeded: rblob holds its blob */
  bool had_hello;         /* a HELLO was accepted once (conn_mu) */
};

_Static_assert(PT_BLOB_MAX == SNAP_BLOB_MAX,
               "pt.h's blob limit is the snapshot object's blob area");
_Static_assert(PT_MAX_REGIONS == SNAP_MAX_REGIONS &&
                   PT_REGION_NAME_MAX + 1 == SNAP_NAME_MAX,
               "pt.h's region limits are the snapshot object's");
_Static_assert(SNAP_MAX_REGIONS <= UINT32_MAX - 1,
               "the name index holds a region's index + 1 in 32 bits");
_Static_assert((uint64_t)SNAP_MAX_REGIONS * (SNAP_NAME_MAX + 22) + 4096 <=
                   RPC_MAX_BODY_HELLO,
               "a HELLO with the largest region table fits the SMP's frames");

/* ---- pt_client_conn.c ---- */

void client_log(pt_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The client whose sealer runs on this thread; NULL on every other thread. */
extern _Thread_local pt_client *client_tls_sealer_of;
void client_seal_msgs_flush(pt_client *c);
uint64_t client_deadline_after(const pt_client *c);
void client_deadline_timespec(uint64_t deadline, struct timespec *ts);
void client_conn_drop(pt_client *c);
/* A RELEASE of slot (generation gen) for step: status, the pt error that
 * ended the snapshot (0: none given), and reason, in words (may be NULL;
 * borrowed, not copied). */
void client_release_init(Pt__Release *m, uint32_t slot, uint64_t gen,
                         uint64_t step, int status, const char *reason);
/* Test hook: the next snapshot's copy ends with rc (non-zero), as if the
 * copy engine had failed, so that tests can drive the failed-copy path.
 * Not exported by libpt.so. */
void client_test_copy_fault(pt_client *c, int rc);
int client_conn_open(pt_client *c, uint64_t deadline);
int client_conn_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
              uint32_t reply_type, uint64_t deadline,
              ProtobufCMessage **reply);
int client_conn_call_locked(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                     uint32_t reply_type, uint64_t deadline,
                     ProtobufCMessage **reply);
int client_session_open(pt_client *c, uint64_t deadline);
int client_session_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                 uint32_t reply_type, uint64_t deadline,
                 ProtobufCMessage **reply, uint64_t *epoch);

/* ---- pt_client_regions.c ---- */

int client_table_freeze(pt_client *c);
int client_store_attach(pt_client *c, const char *name, uint64_t bytes);
void client_store_release(pt_client *c);

/* ---- pt_client_snap.c ---- */

void client_sealer_stop(pt_client *c);
int client_outcome_take_locked(pt_client *c, bool *abandoned);
void client_outcome_report(pt_client *c, int rc, bool abandoned);
int client_pending_settle(pt_client *c, uint64_t *busy_step, uint64_t until);

/* ---- pt_client.c ---- */

bool client_foreign_process(pt_client *c);

#endif /* PT_CLIENT_INTERNAL_H */
