/*
 * ctl_peers.c — where the SMPs of a coded job take their group's chunks:
 * each node reports its SMPs' ports in JOB_PART_STATE (peer_ports, by
 * local rank); the controller keeps them per part and sends every node of
 * a node group JOB_PEERS with the host and ports of that group's members,
 * which the node hands to its SMPs (PEERS_SET). A node gets the table
 * again whenever it reports ports (after its own restart, or in a new
 * epoch), and every member of its group gets it when its ports change.
 *
 * The host is the node's advertised address when that is numeric, else
 * the address its connection to the controller comes from: the SMPs dial
 * numeric addresses only (rpc_tcp.c resolves no names).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "ec/rs.h"

void ctl_peers_host(const char *advertise, const char *peer_name, char *out,
                    size_t len)
{
  out[0] = '\0';
  if (rpc_addr_is_numeric(advertise)) {
    snprintf(out, len, "%s", advertise);
    return;
  }
  char why[128];
  int port;
  if (peer_name == NULL ||
      rpc_addr_parse(peer_name, 0, out, len, &port, why, sizeof(why)) != PT_OK)
    out[0] = '\0';
}

/* JOB_PEERS of p's node group to p's node. */
static void send_table(struct controller *ctl, const struct ctl_job *j,
                       uint32_t p)
{
  const struct ctl_groups *g = &j->groups;
  const struct ctl_part *pt = &j->parts[p];

  if (g->n == 0 || pt->node >= ctl->members.n ||
      ctl->members.nodes[pt->node].conn == NULL)
    return;
  uint32_t gi = g->group_of[p], size = ctl_groups_size(g, gi);
  Pt__JobPeerNode nodes[RS_MAX_MEMBERS], *np[RS_MAX_MEMBERS];
  char hosts[RS_MAX_MEMBERS][CTL_ADVERTISE_MAX + 1];
  Pt__JobPeers m = PT__JOB_PEERS__INIT;

  m.job = j->spec->name;
  m.epoch = j->epoch;
  for (uint32_t x = 0; x < size && x < RS_MAX_MEMBERS; x++) {
    uint32_t q = g->member[g->first[gi] + x];
    const struct ctl_part *qt = &j->parts[q];
    pt__job_peer_node__init(&nodes[x]);
    nodes[x].node_index = q;
    hosts[x][0] = '\0';
    if (qt->node < ctl->members.n) {
      const struct ctl_node *nd = &ctl->members.nodes[qt->node];
      ctl_peers_host(nd->advertise,
                     nd->conn != NULL ? rpc_conn_peer_name(nd->conn) : NULL,
                     hosts[x], sizeof(hosts[x]));
    }
    nodes[x].host = hosts[x];
    nodes[x].n_ports = qt->npeer_ports;
    nodes[x].ports = qt->peer_ports;
    np[m.n_nodes++] = &nodes[x];
  }
  m.nodes = np;
  int rc = rpc_conn_send(ctl->members.nodes[pt->node].conn, RPC_JOB_PEERS, 0,
                         &m.base);
  if (rc != PT_OK && rc != -EPIPE)
    log_warn("job '%s': cannot send the group's addresses to node '%s': %s",
             j->spec->name, pt->node_id, pt_strerror(rc));
}

void ctl_peers_on_part_state(struct controller *ctl, struct ctl_job *j,
                             uint32_t p, const Pt__JobPartState *m)
{
  struct ctl_part *pt = &j->parts[p];
  const struct ctl_groups *g = &j->groups;

  if (g->n == 0 || m->n_peer_ports == 0 || m->epoch != j->epoch)
    return;
  if (m->n_peer_ports != j->spec->ranks_per_node) {
    log_warn("job '%s': node '%s' reports %zu peer ports for %u ranks; "
             "ignored", j->spec->name, pt->node_id, m->n_peer_ports,
             j->spec->ranks_per_node);
    return;
  }
  bool changed = pt->npeer_ports != m->n_peer_ports ||
                 memcmp(pt->peer_ports, m->peer_ports,
                        m->n_peer_ports * sizeof(uint32_t)) != 0;
  if (changed) {
    uint32_t *np = realloc(pt->peer_ports,
                           m->n_peer_ports * sizeof(uint32_t));
    if (np == NULL)
      return;
    memcpy(np, m->peer_ports, m->n_peer_ports * sizeof(uint32_t));
    pt->peer_ports = np;
    pt->npeer_ports = (uint32_t)m->n_peer_ports;
  }
  if (!changed) {
    send_table(ctl, j, p);
    return;
  }
  uint32_t gi = g->group_of[p];
  for (uint32_t x = 0; x < ctl_groups_size(g, gi); x++)
    send_table(ctl, j, g->member[g->first[gi] + x]);
}
