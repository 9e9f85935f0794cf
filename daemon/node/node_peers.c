/*
 * node_peers.c — a coded job's links between SMPs, as the node sees them:
 * its SMPs' ports go to the controller in JOB_PART_STATE (peer_ports, by
 * local rank; node_part_report.c), and the controller's JOB_PEERS (where
 * the SMPs of this node's group listen) goes to each local SMP as
 * PEERS_SET, for the part's epoch: once the table comes, again to an SMP
 * that (re)subscribes (a restarted SMP knows nothing), and again in every
 * new table. A table of another job or epoch is ignored: it is stale.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"

struct node_peers_member {
  uint32_t node_index;
  bool known;
  char host[64];
  uint32_t nports;
  uint32_t ports[NODE_MAX_RANKS];
};

struct node_peers {
  uint64_t epoch;
  struct node_peers_member m[RS_MAX_MEMBERS]; /* by member of the group */
};

void node_peers_forget(struct node *n)
{
  free(n->peers);
  n->peers = NULL;
}

void node_peers_on_job_peers(struct node *n, const Pt__JobPeers *m)
{
  const struct code_group *g = &n->cfg.group;

  if (g->k == 0 || strcmp(m->job, n->cfg.job) != 0 ||
      m->epoch != node_part_epoch(n)) {
    log_debug("JOB_PEERS of job '%s' epoch %" PRIu64 " ignored (this node "
              "runs '%s' epoch %" PRIu64 "%s)", LOG_ESC(m->job), m->epoch,
              n->cfg.job, node_part_epoch(n), g->k == 0 ? ", no code" : "");
    return;
  }
  if (n->peers == NULL && (n->peers = calloc(1, sizeof(*n->peers))) == NULL)
    return;
  struct node_peers *t = n->peers;
  t->epoch = m->epoch;
  for (uint32_t i = 0; i < g->n; i++) {
    t->m[i].node_index = g->members[i].node_index;
    for (size_t x = 0; x < m->n_nodes; x++) {
      const Pt__JobPeerNode *pn = m->nodes[x];
      if (pn->node_index != t->m[i].node_index)
        continue;
      if (strlen(pn->host) >= sizeof(t->m[i].host) ||
          pn->n_ports > NODE_MAX_RANKS) {
        log_warn("JOB_PEERS: node index %" PRIu32 "'s entry does not fit; "
                 "ignored", pn->node_index);
        break;
      }
      t->m[i].known = true;
      snprintf(t->m[i].host, sizeof(t->m[i].host), "%s", pn->host);
      t->m[i].nports = (uint32_t)pn->n_ports;
      if (pn->n_ports > 0) /* none yet: protobuf-c gives NULL */
        memcpy(t->m[i].ports, pn->ports, pn->n_ports * sizeof(uint32_t));
      break;
    }
  }
  for (uint32_t r = 0; r < n->cfg.ranks; r++)
    n->ranks[r].peers_due = true;
  node_peers_drive(n);
}

int node_peers_msg(const struct node *n, const struct node_rank *r,
                   Pt__PeersSet *out, Pt__PeerAddr *addrs,
                   Pt__PeerAddr **ptrs)
{
  const struct node_peers *t = n->peers;
  const struct code_group *g = &n->cfg.group;

  if (t == NULL || g->k == 0)
    return -ENOENT;
  pt__peers_set__init(out);
  out->epoch = t->epoch;
  out->peers = ptrs;
  for (uint32_t i = 0; i < g->n; i++) {
    if (i == g->member || !t->m[i].known)
      continue;
    Pt__PeerAddr *a = &addrs[out->n_peers];
    pt__peer_addr__init(a);
    a->member = i;
    a->host = (char *)t->m[i].host;
    a->port = r->rank < t->m[i].nports ? t->m[i].ports[r->rank] : 0;
    ptrs[out->n_peers++] = a;
  }
  return PT_OK;
}

void node_peers_drive(struct node *n)
{
  if (n->peers == NULL || n->peers->epoch != node_part_epoch(n))
    return;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (!r->peers_due || !r->subscribed)
      continue;
    if (node_smp_request(n, r, NODE_REQ_PEERS_SET, 0, NULL) == PT_OK)
      r->peers_due = false;
  }
}
