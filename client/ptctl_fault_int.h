/*
 * ptctl_fault_int.h — what ptctl_fault.c (inject, classes) and
 * ptctl_fault_campaign.c share. Not an interface.
 */
#ifndef PT_PTCTL_FAULT_INT_H
#define PT_PTCTL_FAULT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/ptctl.h"
#include "rpc/rpc.h"

/* The job as the controller's JOBS_REPLY shows it, for a campaign. */
struct job_view {
  bool ok;  /* the controller answered and knows the job */
  char state[32];
  uint64_t epoch;
  bool has_committed, has_restore;
  uint64_t committed, restore;
  bool parts_running; /* every part running on an alive node */
  uint32_t nparts, ranks_per_node;
  char node[64][RPC_NODE_ID_MAX + 1]; /* the first 64 parts' nodes */
  uint32_t first_rank[64];
  char reason[256];
  bool coded;             /* the job has coding groups */
  uint32_t tolerates;     /* the fewest node losses a group absorbs now */
  uint32_t m;             /* the code's m (0: no code) */
  /* the first 8 groups' member nodes, in member order (for "group") */
  uint32_t ngroups, gsize[8];
  char gnode[8][16][RPC_NODE_ID_MAX + 1];
  bool persist;           /* the job has a persist dir */
  bool has_disk;          /* ... and a step complete there */
  uint64_t disk_step;
  bool restore_disk;      /* this epoch restored from disk */
};

void ptctl_fault_sleep_ms(uint32_t ms);
/* Whether class cls loses a node (its memory too). */
bool ptctl_fault_loses_node(int cls);
void ptctl_fault_job_read(const struct ptctl_opts *o, const char *job,
                          struct job_view *v);
bool ptctl_fault_job_ended(const struct job_view *v);
/* One FAULT: see ptctl_fault.c. */
int ptctl_fault_send(const struct ptctl_opts *o, const char *job,
                     const char *kind, const char *node, bool has_rank,
                     uint32_t rank, uint32_t ms, int *pid, bool *has_step,
                     uint64_t *step, char *msg, size_t len);
uint32_t ptctl_fault_stop_ms_default(const struct ptctl_opts *o);
int ptctl_fault_campaign(const struct ptctl_opts *o, int argc, char **argv);

#endif /* PT_PTCTL_FAULT_INT_H */
