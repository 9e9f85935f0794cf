/*
 * smp_internal.h — what the files of ptd smp share (daemon/smp/): the
 * process's state and one accepted connection's state. Not an interface:
 * the role's only entry point is smp_main() in daemon/roles.h.
 *
 *   smp.c              start-up, listener, signals, shutdown
 *   smp_args.c         the command line
 *   smp_serve.c        helpers the requests share; the dispatch by role
 *   smp_trainer_pid.c  the trainer's process (pidfd watch) and the trainer
 *                      the node announced (TRAINER_SET)
 *   smp_trainer.c      the trainer's requests: HELLO, SLOT_ACQUIRE, SEAL,
 *                      RELEASE, RESTORE_QUERY, BYE
 *   smp_node.c         the node's requests: SUBSCRIBE, STATE_QUERY, PIN,
 *                      COMMIT, UNPIN, SET_RESTORE
 *   smp_protect.c      the protection engine of a coded job (its own
 *                      interface, smp_protect.h; no sockets)
 *   smp_peer.c         each sealed step's protection over the group's links
 *   smp_peer_link.c    the links to the other members of the coding group
 *   smp_peer_serve.c   what a rebuild of another member gets from this one
 *   smp_peer_rebuild.c the rebuild of this member's step from the group
 */
#ifndef PT_SMP_INTERNAL_H
#define PT_SMP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "daemon/code_group.h"
#include "daemon/node_secret.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

enum conn_role { ROLE_NONE = 0, ROLE_TRAINER = 1, ROLE_NODE = 2 };

/* A role-less connection that has sent something (a partial frame, or a
 * request that gave it no role) and then nothing for this long is closed. */
#define SMP_ROLELESS_IDLE_MS 10000u
/* Role-less connections kept at once; past it, the one idle longest is
 * closed for a new one. libpt connects before its HELLO, so a silent
 * role-less connection is not closed for its silence alone. */
#define SMP_ROLELESS_MAX 32u

struct smp;
struct pid_watch;

/* One accepted connection. */
struct smp_conn {
  struct smp *smp;
  struct rpc_conn *conn;
  struct smp_conn *prev, *next;
  int role;
  uint64_t nframes;    /* frames received */
  bool closing;        /* closed by the SMP, its on_close still to come */
  int32_t pid;         /* trainer pid: the peer's (SO_PEERCRED), else HELLO's */
  bool gone_sent;      /* EVENT_TRAINER_GONE already sent for this trainer */
  bool restore_owed;   /* a committed step existed at HELLO and this trainer
                        * has not asked RESTORE_QUERY since */
  struct pid_watch *watch; /* the trainer's pidfd under uv_poll; NULL: none */
  bool wait_logged;    /* a HELLO of this connection was told to wait */
  bool recover_in_place; /* its HELLO said it can restore in place */
  uint32_t nwriting;   /* slots acquired and not yet sealed */
  struct {
    uint32_t slot;
    uint64_t generation;
  } writing[SNAP_MAX_SLOTS];
};

struct smp {
  /* options */
  const char *job, *socket_path, *prefix;
  uint32_t rank, world, nslots;
  uint64_t budget;
  bool autocommit;
  uint8_t instance[SNAP_INSTANCE_BYTES]; /* --instance; zero when not given */
  const char *secret_file;               /* --secret-file; NULL: none */
  /* The node's secret, read from secret_file at start. Without one, only
   * the SMP's parent (getppid(), by SO_PEERCRED) may SUBSCRIBE. */
  bool has_secret;
  uint8_t secret[NODE_SECRET_BYTES];
  bool huge_pages;                       /* --huge-pages */
  /* The coding group this SMP is a member of (--code, --group, --member,
   * --node-id, --group-node; daemon/code_group.h), checked at start;
   * group.k 0: none. The object is made with the code's parity areas
   * (smp_trainer.c) and one made for another code is refused (smp.c);
   * smp_protect.h is the engine the transfer of chunks runs. */
  struct code_group group;
  const char *node_id;                   /* --node-id; NULL: not given */
  /* The links to the group (smp_peer.c): --key (the cluster key; none: no
   * links, nothing protected), --peer-listen (the host to take chunks on),
   * --protect-timeout-ms (a step's protection from its seal). */
  const char *key_file, *peer_listen;
  uint32_t protect_ms;
  bool rebuild_chain;      /* repair pipelining (PT_REPAIR_PIPELINE=0: off) */
  struct smp_peer *peer;                     /* NULL: no links */
  /* The persistent tier (smp_persist.c): --persist-dir (the job's
   * directory; NULL: none), --persist-rate (bytes per second; 0: no
   * limit). */
  const char *persist_dir;
  uint64_t persist_rate;
  struct smp_persist *persist;
  struct smp_persist_load *load; /* a restore from disk (smp_persist_load.c) */

  uv_loop_t loop;
  uv_signal_t sig_term, sig_int;
  struct rpc_listener *listener;
  struct smp_conn *conns;
  bool stopping;

  char shm_name[256];
  struct snap_store *store;   /* locked (snap_store_lock) while held */
  uv_timer_t check_timer;     /* re-validates the store now and then */
  /* Why the object under shm_name cannot be used (another instance's,
   * another world size's, another user's, another SMP's): every HELLO is
   * refused with it until it changes. 0: no refusal. */
  int refuse_rc;
  char refuse_msg[768];

  struct smp_conn *trainer; /* the connection whose HELLO was accepted */
  struct smp_conn *node;    /* the subscriber of events */
  int32_t trainer_pid;
  bool trainer_done;

  /* The trainer the node announced (TRAINER_SET): HELLO is accepted only
   * from a process of the session this pid leads. With --secret-file, none
   * announced means every HELLO waits (-EAGAIN). Watched through a pidfd:
   * its exit ends the announcement. */
  bool announced;
  int32_t announced_pid;
  struct pid_watch *announce_watch;

  /* SET_RESTORE's answer to RESTORE_QUERY, until the next one or a COMMIT */
  bool restore_set, restore_has_step;
  uint64_t restore_step;

  /* RECOVER (smp_recover.c): the node asked the connected trainer to
   * restore in place; recover_point: a SET_RESTORE came since. Ends with
   * the trainer's next answered RESTORE_QUERY, or its connection. */
  bool recover_pending, recover_point;
  uint64_t recover_gen;
};

/* smp_persist.c: the persistent tier's writer. start: opens --persist-dir
 * (refused: a symlink, not a directory, another user's, writable by
 * others), 0 without one. committed: step was committed with the persist
 * mark: its flush begins, or EVENT_PERSISTED says why not. busy_slots: the
 * slot being written, as a mask (never handed out meanwhile). stop: the
 * flush under way is cancelled (the loop runs until it ends); free after
 * the loop ended. dir_open: the checks of start, for a path. */
int smp_persist_start(struct smp *smp);
void smp_persist_committed(struct smp *smp, uint64_t step, uint64_t mark);
uint32_t smp_persist_busy_slots(const struct smp *smp);
void smp_persist_stop(struct smp *smp);
void smp_persist_free(struct smp *smp);
int smp_persist_dir_open(const char *path, int *out, char *err, size_t len);

/* smp_persist_load.c: a restore from disk. set: SET_RESTORE{from_disk}
 * (-EBUSY while an earlier read runs); clear: a restore point not from
 * disk replaces it (-EBUSY while a read runs: refused, never under it); store_ready: the trainer's HELLO made the object, the
 * read may begin; pending: a read is due or under way (the trainer owes a
 * restore); held_query: RESTORE_QUERY held (true) while it runs;
 * conn_gone, stop, free as their names say. */
int smp_persist_load_set(struct smp *smp, uint64_t step, const char *dir,
                         uint64_t mark, bool any_instance, char *err,
                         size_t len);
int smp_persist_load_clear(struct smp *smp); /* -EBUSY: a read runs */
void smp_persist_load_store_ready(struct smp *smp);
bool smp_persist_load_pending(const struct smp *smp);
bool smp_persist_load_held_query(struct smp_conn *sc, uint64_t id,
                                 uint32_t wait_ms);
void smp_persist_load_conn_gone(struct smp *smp, struct smp_conn *sc);
/* A SET_RESTORE while a read runs: held (true), the read cancelled, and
 * the request applied and answered once the read stopped. */
bool smp_persist_load_defer(struct smp_conn *sc, uint64_t id,
                            const Pt__SetRestore *m);
void smp_persist_load_stop(struct smp *smp);
void smp_persist_load_free(struct smp *smp);

/* smp_args.c: the command line into smp. 0, 1 (--help printed), or
 * -EINVAL (a sentence on stderr). */
int smp_args_parse(struct smp *smp, int argc, char **argv);

/* rpc_conn_ops.on_msg of every accepted connection (smp_serve.c). */
int smp_serve_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
               ProtobufCMessage *msg);

/* A connection was given a role: no idle deadline, no buffer cap. */
void smp_serve_conn_role_given(struct smp_conn *sc, int role);

/* A connection is gone: frees the slots it acquired and did not seal, ends
 * its trainer role (telling the node) and drops it as the subscriber. The
 * caller unlinks and frees sc. */
void smp_serve_conn_gone(struct smp_conn *sc);

/* Ends the node's trainer announcement and stops watching its pid (the
 * SMP is stopping, or the announced trainer exited). */
void smp_trainer_pid_announce_clear(struct smp *smp);

/* The object under shm_name, opened and checked as this SMP's (smp.c): on
 * return smp->store is the locked object, or NULL when there is none (or a
 * damaged one was set aside; the next HELLO creates one). A non-zero return
 * is a refusal kept in refuse_rc/refuse_msg (logged once): the object is
 * another instance's (PT_EFOREIGN), another world size's (PT_EWORLD),
 * another user's (-EPERM), held by another SMP (-EBUSY), or cannot be read. */
int smp_store_load(struct smp *smp);

/* Checks that the store may still be touched (snap_store_check; full: also
 * its header and name). When it may not, the store is dropped with a log
 * line saying why: slots in flight are forgotten, the trainer's connection is
 * closed (its next call says HELLO again and gets a fresh object), and a
 * damaged object that is still ours is set aside. Returns false then. */
bool smp_store_guard(struct smp *smp, bool full);

/* Runs fn(arg) with a fault (SIGBUS) of the store's mapping caught: the
 * store is dropped as by smp_store_guard and -EIO returned; else fn's
 * return. Every entry point that may touch the mapping goes through it. */
int smp_guarded(struct smp *smp, int (*fn)(void *arg), void *arg);
/* A read of the store's mapping faulted in another thread (-EFAULT from
 * snapshot/): inside smp_guarded(), leaves it as the fault itself would
 * have; outside, drops the store the same way and returns. */
void smp_fault_unwind(struct smp *smp);

/* ---- between the files that serve requests ---- */

/* smp_serve.c: helpers of both roles' requests. */

/* Answers request id with a plain Reply. */
void smp_serve_reply_status(struct smp_conn *sc, uint64_t id, int status,
                      const char *message);

/* Sends ev to the node, when one is subscribed. */
void smp_serve_event_send(struct smp *smp, Pt__Event *ev);
/* An event that ends something about step (EVENT_PERSISTED, _LOAD_FAILED,
 * _REBUILD_FAILED): its status and words, and the flush's mark (NULL:
 * none). */
void smp_serve_event_outcome(struct smp *smp, Pt__EventKind kind,
                             uint64_t step, int status, const char *msg,
                             const uint64_t *mark);

/* Remembers a slot sc acquired. A slot has one current generation, so an
 * older entry for the same slot is replaced. */
void smp_serve_writing_add(struct smp_conn *sc, uint32_t slot, uint64_t gen);

/* Forgets a slot sc acquired (sealed, or failed in the trainer). */
void smp_serve_writing_remove(struct smp_conn *sc, uint32_t slot, uint64_t gen);

/* Frees every slot this connection acquired and did not seal. */
void smp_serve_writing_abort_all(struct smp_conn *sc);

/* The trainer role of sc ends (BYE, close or its process's exit): tell the
 * node once. */
void smp_serve_trainer_release(struct smp_conn *sc, bool done);

/* Commits step (SEAL with --autocommit, or COMMIT); logs a failure. */
int smp_serve_commit_step(struct smp *smp, uint64_t step);

/* smp_trainer_pid.c: which process is the trainer. */

/* Watches the trainer process pid of sc: when it exits, sc stops being the
 * trainer's and is closed. Replaces any earlier watch. */
void smp_trainer_pid_watch_start(struct smp_conn *sc, int pid);

/* Stops watching sc's trainer process (none: nothing). */
void smp_trainer_pid_watch_stop(struct smp_conn *sc);

/* Whether the HELLO of peer pid may go on: 0, -EAGAIN while no trainer is
 * announced (with --secret-file; without, only an announcement restricts),
 * PT_EROLE from outside the announced session. OUT: msg when not. */
int smp_trainer_pid_hello_peer_check(struct smp *smp, int peer, char *msg, size_t len);

/* The request handlers, each answering request id (they return 0, as
 * smp_serve_on_msg does). smp_trainer_pid.c: */
int smp_trainer_pid_on_trainer_set(struct smp_conn *sc, uint64_t id,
                       const Pt__TrainerSet *m);
/* smp_trainer.c: */
int smp_trainer_on_hello(struct smp_conn *sc, uint64_t id, const Pt__Hello *m);
int smp_trainer_on_slot_acquire(struct smp_conn *sc, uint64_t id,
                        const Pt__SlotAcquire *m);
int smp_trainer_on_seal(struct smp_conn *sc, uint64_t id, const Pt__Seal *m);
int smp_trainer_on_release(struct smp_conn *sc, uint64_t id, const Pt__Release *m);
/* m may be NULL (a held query answered now). */
int smp_trainer_on_restore_query(struct smp_conn *sc, uint64_t id,
                                 const Pt__RestoreQuery *m);
int smp_trainer_on_bye(struct smp_conn *sc, uint64_t id, const Pt__Bye *m);
/* smp_recover.c: recovery in place. on_recover: the node's RECOVER;
 * on_query: the trainer's RECOVER_QUERY; hold_restore: true when a
 * RESTORE_QUERY must wait for the node's restore point (answered
 * -EINPROGRESS; libpt asks again); restored: the RESTORE_QUERY of a
 * pending recovery was answered rc (step when 0): the request ends, the
 * node hears EVENT_RECOVERED; set_restore: a SET_RESTORE was applied;
 * trainer_gone: the trainer's connection ended. */
int smp_recover_on_recover(struct smp_conn *sc, uint64_t id,
                           const Pt__Recover *m);
int smp_recover_on_query(struct smp_conn *sc, uint64_t id);
bool smp_recover_hold_restore(struct smp_conn *sc, uint64_t id);
void smp_recover_restored(struct smp *smp, int rc, uint64_t step);
void smp_recover_set_restore(struct smp *smp);
void smp_recover_trainer_gone(struct smp *smp);
/* smp_node.c (STATE_QUERY: smp_node_state_reply; verify: read every readable
 * slot in full, or with newest_first from the newest step down until one is
 * intact): */
void smp_node_state_reply(struct smp_conn *sc, uint64_t id, bool verify,
                          bool newest_first);
int smp_node_on_subscribe(struct smp_conn *sc, uint64_t id,
                     const Pt__Subscribe *m);
int smp_node_on_commit(struct smp_conn *sc, uint64_t id, const Pt__Commit *m);
int smp_node_on_pin(struct smp_conn *sc, uint64_t id, const Pt__Pin *m);
int smp_node_on_unpin(struct smp_conn *sc, uint64_t id, const Pt__Unpin *m);
int smp_node_on_set_restore(struct smp_conn *sc, uint64_t id,
                       const Pt__SetRestore *m);

/* smp_peer.c: erasure coding with the group (no-ops without links). */
#define SMP_PROTECT_MS_DEFAULT 5000u
/* Listens for the group's links (with --key and a group); -errno. */
int smp_peer_start(struct smp *smp);
void smp_peer_stop(struct smp *smp);
/* The port the group's links come to; 0: none. */
int smp_peer_port(const struct smp *smp);
/* The store is about to be unmapped: nothing queued may point into it. */
void smp_peer_store_gone(struct smp *smp);
/* sc is gone: a PIN of its waiting is forgotten. */
void smp_peer_conn_gone(struct smp *smp, struct smp_conn *sc);
int smp_peer_link_on_peers_set(struct smp_conn *sc, uint64_t id,
                               const Pt__PeersSet *m);
/* The trainer took slot for step / sealed step in slot / gave slot back. */
void smp_peer_slot_begun(struct smp *smp, uint32_t slot, uint64_t step);
void smp_peer_sealed(struct smp *smp, uint32_t slot, uint64_t step);
void smp_peer_slot_dropped(struct smp *smp, uint32_t slot);
/* The trainer's snapshot of step was skipped (no free slot): the group
 * hears it (PEER_SKIP) and gives the step up at once. */
void smp_peer_skipped(struct smp *smp, uint64_t step);
/* Whether the trainer may take a slot for step: false when a member of
 * the group skipped it already, or while this SMP's previous step is in
 * flight (one step at a time; the group then hears that step is skipped
 * here). A step is in flight from its slot's taking until the job decides
 * it (COMMIT, UNPIN: smp_peer_committed, smp_peer_unpinned), it fails, or
 * --protect-timeout-ms from its seal pass: the decision reaches every
 * SMP of the job at nearly one moment, so all are free for the same next
 * step. True without code. */
bool smp_peer_may_take(struct smp *smp, uint64_t step);
/* step (and every older one) is committed. */
void smp_peer_committed(struct smp *smp, uint64_t step);
/* The job's restore point is step (has false: none): the group's checksum
 * tables of newer steps are dropped (smp_peer_serve.c). */
void smp_peer_restore_point(struct smp *smp, bool has, uint64_t step);
/* The node let go of step (UNPIN: its round failed, or its ranks fell
 * apart): it will not be committed, so its protection here ends at once
 * and the group hears so (PEER_SKIP). */
void smp_peer_unpinned(struct smp *smp, uint64_t step);
/* The slots whose steps are being protected (newer than the committed
 * one, within their deadline): not handed to the trainer (bit i: slot i). */
uint32_t smp_peer_busy_slots(struct smp *smp);
/* A PIN of step, pinned (fresh: by this PIN; false: it was pinned
 * already): true when this answers it (now or once the step is protected,
 * or at its deadline); false: no code, answer it plainly. A PIN answered
 * with an error leaves no pin it made: the slot is sealed again, so that
 * no refusal, whatever its code, can leave a slot held for a round that
 * will never commit it. */
bool smp_peer_pin(struct smp_conn *sc, uint64_t id, uint64_t step,
                  bool fresh);

/* smp_peer_rebuild.c: the rebuild of a step this member does not hold. */
/* SET_RESTORE{has_step, step, damaged}: true when a rebuild takes it (a
 * coded job with links, and no slot of step here, or the node found its
 * copy damaged): every slot is freed, and the rebuild starts once the
 * trainer's HELLO made the object. False: set the restore point as usual
 * (any rebuild under way is given up). */
bool smp_peer_rebuild_set_restore(struct smp *smp, bool has_step, uint64_t step,
                                  bool damaged);
/* RESTORE_QUERY id of sc, whose trainer waits wait_ms for the answer (0:
 * a trainer that did not say): true when the rebuild answers it (held until
 * it ends, or its failure now; with wait_ms, -EINPROGRESS with its progress
 * before wait_ms is out, and the trainer asks again). */
bool smp_peer_rebuild_held_query(struct smp_conn *sc, uint64_t id,
                                 uint32_t wait_ms);
void smp_peer_rebuild_held_conn_gone(struct smp *smp, struct smp_conn *sc);
/* The object is about to be unmapped: a rebuild into it begins again with
 * the next one. */
void smp_peer_rebuild_store_gone(struct smp *smp);
void smp_peer_rebuild_stop(struct smp *smp);

#endif /* PT_SMP_INTERNAL_H */
