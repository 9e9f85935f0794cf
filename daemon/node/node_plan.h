/*
 * node_plan.h — the pure decisions of `ptd node` (node_plan.c): no I/O, no
 * state of their own, each tested alone (test_node_plan). Part of node.h,
 * which includes it after the configuration it takes (struct
 * node_config); include node.h, not this.
 */
#ifndef PT_NODE_PLAN_H
#define PT_NODE_PLAN_H

#ifndef PT_NODE_H
#error "include daemon/node/node.h"
#endif


/* What to do with a slot an SMP reported when it (re)subscribed, left
 * behind by a round that ended without it (the node or the SMP went away
 * in the middle): */
enum node_pin_action {
  NODE_PIN_NONE,   /* nothing: not pinned, or the round will deal with it */
  NODE_PIN_COMMIT, /* COMMIT again: the committed step, pinned or sealed
                      here (the node decided it; this SMP never heard) */
  NODE_PIN_UNPIN,  /* UNPIN: a pin no round is going to commit */
};
/* For a slot in state (enum snap_state) holding step: a slot holding the
 * committed step that is not COMMITTED gets COMMIT; a PINNED slot of
 * the round's step (the round under way, or the one about to start: has_round)
 * is left to that round; any other PINNED slot gets UNPIN. */
enum node_pin_action node_plan_pin(uint32_t state, uint64_t step,
                                   bool has_committed, uint64_t committed,
                                   bool has_round, uint64_t round_step);

/* One slot as an SMP reported it. */
struct node_slot_view {
  uint64_t step;
  uint32_t state;  /* enum snap_state */
  bool verified;   /* read by the SMP for this view (STATE_QUERY{verify}) */
  bool intact;     /* verified and good */
};
struct node_rank_slots {
  const struct node_slot_view *slots; /* IN: n entries */
  uint32_t n;
};
/* The restore step: the largest step that every rank holds intact in a
 * SEALED, PINNED or COMMITTED slot. False: none (a fresh start). */
bool node_plan_restore_step(const struct node_rank_slots *ranks,
                            uint32_t nranks, uint64_t *out);
/* Whether the views, verified newest step first (slots left unread are not
 * verified), decide the same restore step as views verified in full would:
 * false when a slot left unread holds a step newer than the restore step
 * found (has: one was found, *step), which a full read could make the
 * answer. */
bool node_plan_restore_decided(const struct node_rank_slots *ranks,
                               uint32_t nranks, bool has, uint64_t step);

/* Delay before restart `attempt` (1-based): base * 2^(attempt-1), at most
 * cap_ms. */
uint32_t node_plan_backoff_ms(uint32_t base_ms, uint32_t attempt,
                              uint32_t cap_ms);

/* The times of the job's recent restarts, for --max-restarts over
 * --restart-window: a ring of the last cap restarts (cap = --max-restarts;
 * older ones can no longer decide anything). at: heap, cap entries. */
struct node_restart_log {
  uint64_t *at;
  uint32_t cap, n, next;
};
/* Records a restart at now (nothing when cap is 0). */
void node_plan_restart_note(struct node_restart_log *l, uint64_t now);
/* Restarts recorded within the window_ms before now (times > now -
 * window_ms); window_ms 0: all recorded. A restart is allowed while this is
 * below --max-restarts. */
uint32_t node_plan_restarts_recent(const struct node_restart_log *l,
                                   uint64_t now, uint32_t window_ms);
/* Whether the job ran healthy since its last (re)start, so that the next
 * restart's backoff starts again from --backoff-ms: a step was committed
 * since then and the trainers ran at least healthy_ms. */
bool node_plan_healthy(bool committed_since, uint64_t running_since,
                       uint64_t now, uint32_t healthy_ms);

/* The open files the node needs for nranks ranks: a fixed set (standard
 * streams, the loop and its signal pipe, the lock, the control socket and
 * NODE_CTL_MAX ptctl connections, state and /proc files) plus, per rank,
 * its SMP connection, the pidfds of two adopted children and a spawn's
 * pipe. */
uint64_t node_plan_fds_needed(uint32_t nranks);
/* PT_OK when the soft limit suffices, or when the hard one does (then
 * *raise_to is the new soft limit: the need rounded up to a multiple of
 * 1024, at most the hard limit; else 0); -EMFILE with a sentence naming
 * the need and the limits in err otherwise. */
int node_plan_fds_check(uint32_t nranks, uint64_t soft, uint64_t hard,
                        uint64_t *raise_to, char *err, size_t len);
/* --memory-budget before anything starts (budget 0: none): PT_EBUDGET when
 * budget/nranks is below min_object (the smallest snapshot object a rank
 * could have), -ENOSPC when budget exceeds shm_avail; each with a sentence
 * naming the bytes needed and available in err. */
int node_plan_budget_check(uint64_t budget, uint32_t nranks,
                           uint64_t min_object, uint64_t shm_avail, char *err,
                           size_t len);

/* --state-bytes before anything starts (state_bytes 0: not given): each of
 * the nranks objects for that much state takes object bytes; PT_EBUDGET when
 * budget (0: none) gives a rank less, -ENOSPC when /dev/shm (shm_avail) cannot
 * hold them all; each with a sentence naming the bytes in err. */
int node_plan_state_check(uint64_t state_bytes, uint64_t object,
                          uint64_t budget, uint32_t nranks, uint64_t shm_avail,
                          char *err, size_t len);

/* As node_args' --job: a name that fits shm object names and paths
 * (1..SNAP_JOB_MAX-1 of [A-Za-z0-9._-], not starting with '.'). */
bool node_plan_job_name_ok(const char *s);

/* The torchrun environment of local rank local_rank (below cfg->ranks):
 * RANK = first_rank + local_rank, WORLD_SIZE = node_plan_world(cfg),
 * LOCAL_RANK, LOCAL_WORLD_SIZE = cfg->ranks, GROUP_RANK = group_rank,
 * MASTER_ADDR (127.0.0.1 when cfg has none), MASTER_PORT. */
struct node_rank_env {
  uint32_t rank, world, local_rank, local_world, group_rank, master_port;
  const char *master_addr; /* points into cfg or a literal */
};
void node_plan_rank_env(const struct node_config *cfg, uint32_t local_rank,
                        struct node_rank_env *out);
/* The node group of a JOB_ASSIGN (checked by node_plan_assign_check
 * first) for the node self (its node id): none when the job has no code
 * (out->k 0); else the group must match the spec's code (m equal, k at
 * least), have k + m members on distinct nodes of the job, this node among
 * them exactly once (at the assignment's node index, with its id). PT_OK,
 * or -EINVAL with err. OUT: *out (group: the node group's index, member:
 * this node's place). */
int node_plan_group(const Pt__JobAssign *a, const char *self,
                    struct code_group *out, char *err, size_t len);
/* The coding group of local rank local_rank (below cfg->ranks) as its SMP
 * is told: cfg->group with group = node group x cfg->ranks + local rank.
 * OUT: *out (k 0: none). */
void node_plan_smp_group(const struct node_config *cfg, uint32_t local_rank,
                         struct code_group *out);
/* A JOB_ASSIGN the node can take, with capacity ranks: PT_OK, or -EINVAL
 * (-ENOSPC: more ranks than capacity) with a sentence in err. */
int node_plan_assign_check(const Pt__JobAssign *a, uint32_t capacity,
                           char *err, size_t len);
/* The remote decider's STEP_SEALED: the newest step every one of the n
 * ranks' sets holds that is newer than the committed step and than the
 * last step reported (each step is reported once). False: none. */
bool node_plan_seal_report(const struct commit_sealed_set *const *sets,
                           uint32_t n, bool has_committed, uint64_t committed,
                           bool has_sent, uint64_t sent, uint64_t *step);
/* The JOB_VOTE status from the n local ranks' PIN answers (0 pinned, a
 * negated errno otherwise; NODE_PLAN_NO_ANSWER: none yet): 0 when every
 * rank pinned; -ENOENT when some rank no longer holds the step; else the
 * first error, as soon as one rank refused (a round one rank refuses
 * cannot pass: the others, a coded SMP's PIN waiting for its step's
 * protection, are not waited for; their pins are let go). NODE_PLAN_NO_
 * ANSWER while an answer is missing and none refused. */
#define NODE_PLAN_NO_ANSWER 1
int node_plan_vote(const int *status, uint32_t n);
/* A rank's entry for node_plan_vote from its PIN's answer (answered false:
 * none came, status the request's error): 0 or a negated errno, never
 * NODE_PLAN_NO_ANSWER. A positive status (PT_SKIPPED) is a refusal
 * (PT_EPROTO): read as "no answer yet" it would hold the round open. */
int node_plan_pin_status(bool answered, int status);
/* The epoch fence: what a decision about (job, epoch) means to a node
 * whose part is of (part_job, part_epoch) (part_job NULL: no part). */
enum node_fence {
  NODE_FENCE_NONE,      /* no part: take an assignment as it comes */
  NODE_FENCE_OTHER_JOB, /* the part is of another job */
  NODE_FENCE_OLDER,     /* an older epoch than the part's: ignored
                           (JOB_PIN: PT_EEPOCH) */
  NODE_FENCE_SAME,      /* the part's epoch */
  NODE_FENCE_NEWER,     /* a newer epoch: the part's ranks stop first */
};
enum node_fence node_plan_fence(const char *part_job, uint64_t part_epoch,
                                const char *job, uint64_t epoch);

/* "exited with status S" or "killed by signal SIGNAME" into buf. */
const char *node_plan_exit_text(char *buf, size_t len, int64_t status,
                                int term_signal);
/* A rank as every message names it, into buf: standalone, "L" (the local
 * rank is the job's); cluster mode, "G (local L on node ID)", G = first
 * + L the job's global rank. So "rank 3 (local 1 on node b)" never reads
 * as another rank's. NODE_RANK(n, L): the same, in a buffer of its own
 * that lives to the end of the caller's full expression's block. */
#define NODE_RANK_NAME_MAX (RPC_NODE_ID_MAX + 48u)
const char *node_plan_rank_name(char *buf, size_t len, bool cluster,
                                uint32_t first, const char *node_id,
                                uint32_t local);
#define NODE_RANK(n, local)                                                  \
  node_plan_rank_name((char[NODE_RANK_NAME_MAX]){0}, NODE_RANK_NAME_MAX,     \
                      (n)->cfg.cluster, (n)->cfg.first_rank,                 \
                      (n)->cfg.node_id, (local))

#endif /* PT_NODE_PLAN_H */
