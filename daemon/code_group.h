/*
 * code_group.h — the coding group an SMP is a member of (DESIGN.md "Erasure
 * coding across nodes"; the controller forms the groups, ctl_groups.c), as
 * ptd node passes it to each ptd smp it spawns and the SMP checks it.
 *
 * On the SMP's command line (all or none):
 *
 *   --code K+M --group G --member I --node-id ID
 *   --group-node INDEX:ID=ADDR     one per member, in member order (K + M)
 *
 * G is the coding group's index (node group x ranks per node + local rank),
 * I this SMP's member number in it (ec/rs.h's layout numbers members), ID
 * its own node's id; every member is the SMP of the same local rank on the
 * job's node INDEX, whose node is ID, advertised at ADDR (empty: not known
 * to the controller when it assigned the part). ID and ADDR are written
 * with every byte outside [A-Za-z0-9._:[]-] as %XX, so that a name with '='
 * or ',' reads back as it was.
 *
 * What the next pieces need is all here: the SMP knows its group, its
 * member number, k, m, and for every other member its node and address.
 */
#ifndef PT_CODE_GROUP_H
#define PT_CODE_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ec/rs.h"
#include "rpc/rpc.h"

#define CODE_GROUP_ADDR_MAX 255u

struct code_group_member {
  uint32_t node_index;                 /* the job's node index */
  char node_id[RPC_NODE_ID_MAX + 1];
  char addr[CODE_GROUP_ADDR_MAX + 1];  /* "" : not known */
};

struct code_group {
  uint32_t k, m;   /* 0+0: none (the rest unused) */
  uint32_t group;  /* the coding group's index */
  uint32_t member; /* this SMP's member number, below k + m */
  uint32_t n;      /* members given */
  struct code_group_member members[RS_MAX_MEMBERS];
};

/* "K+M", digits only, each at most RS_MAX_MEMBERS. OUT: *k, *m. PT_OK or
 * -EINVAL. */
int code_group_code_parse(const char *s, uint32_t *k, uint32_t *m);
/* One member as INDEX:ID=ADDR. OUT: out (len bytes). -E2BIG when it does
 * not fit. */
int code_group_member_format(const struct code_group_member *m, char *out,
                             size_t len);
/* The inverse. -EINVAL with err on anything else (no index, no '=', a bad
 * %XX, an empty or too long id, an address too long or not printable). */
int code_group_member_parse(const char *s, struct code_group_member *m,
                            char *err, size_t errlen);

/* A whole group: k >= 1, m >= 1, k + m <= RS_MAX_MEMBERS, n == k + m,
 * member < n, node indexes and node ids distinct; when self is not NULL,
 * members[member] is node self. PT_OK or -EINVAL with err naming what is
 * wrong. */
int code_group_check(const struct code_group *g, const char *self,
                     char *err, size_t errlen);

#endif /* PT_CODE_GROUP_H */
