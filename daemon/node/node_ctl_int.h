/*
 * node_ctl_int.h — what node_ctl.c and node_ctl_snapshots.c share. Not an
 * interface.
 */
#ifndef PT_NODE_CTL_INT_H
#define PT_NODE_CTL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/pt.pb-c.h"
#include "rpc/rpc.h"

struct node;
struct node_disk_step;

#define NODE_CTL_DISK_STEPS 256 /* the newest step directories shown */

/* A snapshots listing's results (node_ctl_snapshots.c). */
struct node_ctl_listing {
  Pt__SlotView *views; /* ranks x SNAP_MAX_SLOTS */
  char *names;         /* 16 bytes per view: its state's name */
  size_t nviews;
  char merr[400];      /* the first rank whose object was not read */
  struct node_disk_step *ds; /* NODE_CTL_DISK_STEPS */
  uint32_t nd;
};

/* The status reply, with a listing's results when l is not NULL. */
int node_ctl_status_send(struct node *n, struct rpc_conn *c, uint64_t id,
                         const struct node_ctl_listing *l);
/* Starts the listing on the pool (answered from its end), or answers
 * -EBUSY while one runs. */
int node_ctl_snapshots_start(struct node *n, struct rpc_conn *c, uint64_t id);
/* A control connection closed: a listing for it answers nobody. */
void node_ctl_snapshots_conn_gone(struct node *n, struct rpc_conn *c);

#endif /* PT_NODE_CTL_INT_H */
