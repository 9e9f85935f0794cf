/*
 * node_ctl_snapshots.c — `ptctl snapshots` against a standalone node: every
 * rank's slots (the records of its shm object, as this job instance's) and
 * the step directories on disk, gathered on libuv's pool (a hung file
 * system must never hold the node's loop, its watchdog or its commits),
 * one listing at a time, and answered from the loop once it is done, to
 * the connection that asked if it is still open.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_ctl_int.h"
#include "daemon/node/node_persist.h"


/* Every rank's slots as their records say (ptctl snapshots): the node's
 * own objects, opened and checked as this instance's; no data read. OUT:
 * views (ranks x SNAP_MAX_SLOTS), how many; err: the first rank that could
 * not be read. */
static size_t slots_list(const struct node *n, Pt__SlotView *views,
                         char *names, char *err, size_t errlen)
{
  size_t k = 0;
  for (uint32_t r = 0; r < n->cfg.ranks; r++) {
    char name[256], why[300] = "";
    struct snap_store *s = NULL;
    uint32_t rank = n->cfg.first_rank + r;
    int rc = snap_store_name(name, sizeof(name), n->cfg.shm_prefix,
                             n->cfg.job, rank);
    if (rc == PT_OK)
      rc = snap_store_open(&s, name, why, sizeof(why));
    if (rc == PT_OK &&
        memcmp(snap_store_instance(s), n->instance, SNAP_INSTANCE_BYTES) != 0) {
      rc = PT_EFOREIGN;
      snprintf(why, sizeof(why), "'%s' is another job instance's", name);
    }
    if (rc != PT_OK) {
      if (err[0] == '\0')
        snprintf(err, errlen, "rank %" PRIu32 ": %s", rank,
                 why[0] ? why : pt_strerror(rc));
      snap_store_close(s);
      continue;
    }
    for (uint32_t i = 0; i < snap_store_nslots(s) && i < SNAP_MAX_SLOTS; i++) {
      struct snap_slot_info si;
      snap_slot_get(s, i, &si);
      Pt__SlotView *v = &views[k];
      pt__slot_view__init(v);
      v->rank = rank;
      v->slot = i;
      char *st = names + k * 16;
      snprintf(st, 16, "%s", snap_state_name(si.state));
      v->state = st;
      v->has_step = si.record_ok && si.state != SNAP_FREE;
      v->step = si.step;
      v->has_record_ok = true;
      v->record_ok = si.record_ok;
      k++;
    }
    snap_store_close(s);
  }
  return k;
}

struct listing {
  struct node_ctl_listing l; /* first: the results */
  struct node *n;
  uv_work_t work;
  struct rpc_conn *c;        /* NULL: it closed meanwhile */
  uint64_t id;
};

static struct listing *LS(const struct node *n) { return n->ctl_listing; }

static void work_cb(uv_work_t *req)
{
  struct listing *ls = req->data;
  struct node *n = ls->n;
  ls->l.nviews = slots_list(n, ls->l.views, ls->l.names, ls->l.merr,
                            sizeof(ls->l.merr));
  ls->l.nd = node_persist_restore_list(n, ls->l.ds, NODE_CTL_DISK_STEPS);
}

static void free_listing(struct listing *ls)
{
  free(ls->l.views);
  free(ls->l.names);
  free(ls->l.ds);
  free(ls);
}

static void after_cb(uv_work_t *req, int status)
{
  struct listing *ls = req->data;
  struct node *n = ls->n;
  n->ctl_listing = NULL;
  if (ls->c != NULL && status == 0) {
    int rc = node_ctl_status_send(n, ls->c, ls->id, &ls->l);
    if (rc != PT_OK)
      log_warn("control: cannot answer a snapshots query: %s",
               pt_strerror(rc));
  }
  free_listing(ls);
}

int node_ctl_snapshots_start(struct node *n, struct rpc_conn *c, uint64_t id)
{
  if (LS(n) != NULL) {
    Pt__StatusReply rep = PT__STATUS_REPLY__INIT;
    rep.status = -EBUSY;
    rep.job = n->cfg.job;
    rep.state = "busy";
    rep.message = "another snapshots listing is under way; ask again";
    return rpc_conn_send(c, RPC_STATUS_REPLY, id, &rep.base);
  }
  struct listing *ls = calloc(1, sizeof(*ls));
  size_t cap = (size_t)n->cfg.ranks * SNAP_MAX_SLOTS;
  if (ls == NULL)
    return -ENOMEM;
  ls->l.views = calloc(cap > 0 ? cap : 1, sizeof(*ls->l.views));
  ls->l.names = calloc(cap > 0 ? cap : 1, 16);
  ls->l.ds = calloc(NODE_CTL_DISK_STEPS, sizeof(*ls->l.ds));
  if (ls->l.views == NULL || ls->l.names == NULL || ls->l.ds == NULL) {
    free_listing(ls);
    return -ENOMEM;
  }
  ls->n = n;
  ls->c = c;
  ls->id = id;
  ls->work.data = ls;
  int rc = uv_queue_work(n->loop, &ls->work, work_cb, after_cb);
  if (rc != 0) {
    free_listing(ls);
    return -EAGAIN;
  }
  n->ctl_listing = ls;
  return PT_OK;
}

void node_ctl_snapshots_conn_gone(struct node *n, struct rpc_conn *c)
{
  struct listing *ls = LS(n);
  if (ls != NULL && ls->c == c)
    ls->c = NULL; /* answered to nobody */
}
