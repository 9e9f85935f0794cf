/*
 * smp_internal.h — what the files of ptd smp share (daemon/smp*.c): the
 * process's state and one accepted connection's state. Not an interface:
 * the role's only entry point is smp_main() in daemon/roles.h.
 *
 *   smp.c        start-up, command line, listener, signals, shutdown
 *   smp_serve.c  the requests of the trainer and of the node
 */
#ifndef PT_SMP_INTERNAL_H
#define PT_SMP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

enum conn_role { ROLE_NONE = 0, ROLE_TRAINER = 1, ROLE_NODE = 2 };

struct smp;

/* One accepted connection. */
struct smp_conn {
  struct smp *smp;
  struct rpc_conn *conn;
  struct smp_conn *prev, *next;
  int role;
  int32_t pid;         /* trainer pid from HELLO */
  bool gone_sent;      /* EVENT_TRAINER_GONE already sent for this trainer */
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
  bool huge_pages;                       /* --huge-pages */

  uv_loop_t loop;
  uv_signal_t sig_term, sig_int;
  struct rpc_listener *listener;
  struct smp_conn *conns;
  bool stopping;

  char shm_name[256];
  struct snap_store *store;

  struct smp_conn *trainer; /* the connection whose HELLO was accepted */
  struct smp_conn *node;    /* the subscriber of events */
  int32_t trainer_pid;
  bool trainer_done;

  /* SET_RESTORE's answer to RESTORE_QUERY, until the next one or a COMMIT */
  bool restore_set, restore_has_step;
  uint64_t restore_step;
};

/* rpc_conn_ops.on_msg of every accepted connection (smp_serve.c). */
int smp_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
               ProtobufCMessage *msg);

/* A connection is gone: frees the slots it acquired and did not seal, ends
 * its trainer role (telling the node) and drops it as the subscriber. The
 * caller unlinks and frees sc. */
void smp_conn_gone(struct smp_conn *sc);

#endif /* PT_SMP_INTERNAL_H */
