/*
 * commit.h — the two-phase commit of a step over a fixed set of voters
 * (daemon/commit/).
 *
 *   commit.c       the round: its id, phase, votes, deadlines and verdict
 *   commit_plan.c  pure decisions: the voters' sealed sets, the step of the
 *                  next round, the verdict of a phase from its votes
 *
 * A voter is an index 0..n-1 and nothing more: `ptd node` runs rounds over
 * its SMPs (one voter per local rank), and a controller can run the same
 * rounds over nodes. The module does no I/O and reads no clock: the owner
 * sends what the module asks for through struct commit_ops, feeds back the
 * answers (commit_reply), the voters it lost (commit_voter_gone) and the
 * time (every `now`, in milliseconds on any one clock), and arms a timer
 * for commit_next_deadline().
 *
 * A round for step N:
 *
 *   PIN      every voter is asked to pin N (keep it, whatever comes next);
 *            every voter's answer is awaited, so that a voter still being
 *            asked cannot pin N after the round gave up on it;
 *   COMMIT   when every voter pinned N: N is committed from then on (the
 *            verdict); every voter is told, and one that does not take it
 *            keeps N pinned until its owner commits it again;
 *   UNPIN    otherwise (a refusal, a voter gone, the deadline): the voters
 *            that pinned N, or may have (no answer), are told to let go.
 *
 * One round is open at a time; a round's step is newer than the committed
 * step and than the last round's (a round never goes back). A phase that
 * outlives its deadline counts every missing answer as lost. An answer is
 * matched to the request it answers by the ticket the owner gave when it
 * sent it, so that an answer of a round that is over is ignored.
 */
#ifndef PT_COMMIT_H
#define PT_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COMMIT_SEALED_MAX 64 /* sealed-but-uncommitted steps kept per voter */
#define COMMIT_WHY_MAX 128

/* ---- pure decisions (commit_plan.c) ---- */

/* The steps a voter sealed that are not committed yet, ascending, no
 * duplicates; when full, the oldest is dropped. */
struct commit_sealed_set {
  uint64_t steps[COMMIT_SEALED_MAX];
  uint32_t n;
};
void commit_plan_sealed_add(struct commit_sealed_set *s, uint64_t step);
/* Drops every step <= upto. */
void commit_plan_sealed_prune(struct commit_sealed_set *s, uint64_t upto);
bool commit_plan_sealed_has(const struct commit_sealed_set *s, uint64_t step);

/* The step of the next round: the largest step newer than floor (any step
 * when has_floor is false) that every one of the n sets holds. False when
 * there is none (or n == 0). */
bool commit_plan_step(const struct commit_sealed_set *const *sets, uint32_t n,
                      bool has_floor, uint64_t floor, uint64_t *out);

/* A voter's vote in the phase under way. */
enum commit_vote {
  COMMIT_VOTE_NONE = 0, /* not asked in this phase */
  COMMIT_VOTE_WAIT,     /* asked; no answer yet */
  COMMIT_VOTE_YES,      /* did what it was asked */
  COMMIT_VOTE_NO,       /* refused (PIN: it no longer holds the step) */
  COMMIT_VOTE_LOST,     /* no answer: gone, past the deadline, or the
                           request could not be sent */
};
enum commit_verdict {
  COMMIT_VERDICT_WAIT,   /* some voter has not answered yet */
  COMMIT_VERDICT_COMMIT, /* every voter pinned the step */
  COMMIT_VERDICT_ABORT,  /* every voter answered, not every one yes */
};
/* The verdict of the pin phase from the n votes (NONE counts as no answer
 * yet). A refusal does not end the phase early. n == 0:
 * COMMIT_VERDICT_ABORT. */
enum commit_verdict commit_plan_verdict(const enum commit_vote *votes,
                                        uint32_t n);
/* True when no vote is WAIT: the commit or unpin phase is over. */
bool commit_plan_votes_in(const enum commit_vote *votes, uint32_t n);
/* Whether the UNPIN of a failed round goes to a voter that voted v in the
 * pin phase: yes when it pinned the step (YES), or may have (LOST). */
bool commit_plan_unpin_to(enum commit_vote v);

/* ---- the round (commit.c) ---- */

enum commit_phase {
  COMMIT_PH_IDLE = 0, /* no round open */
  COMMIT_PH_PIN,
  COMMIT_PH_COMMIT,
  COMMIT_PH_UNPIN,
};

/* How the pin phase of a round ended, for the owner's log. voter, vote,
 * sent and text name the first voter that did not pin (voter UINT32_MAX:
 * none, e.g. no voters); sent is false when its request could not even be
 * sent. any_lost: some voter gave no answer at all (not merely refused,
 * which is the usual race between rounds and new snapshots). */
struct commit_outcome {
  uint64_t round, step;
  bool committed;
  uint32_t voter;
  enum commit_vote vote;
  bool sent;
  bool any_lost;
  char text[COMMIT_WHY_MAX];
};

struct commit;

/* What the owner does for the module. Called from within the commit_*
 * calls below, never later. */
struct commit_ops {
  /* Sends phase's request (PIN, COMMIT or UNPIN of step) to voter. OUT:
   * *ticket, any number that tells this request apart from the owner's
   * others; the answer is fed back with it. Non-zero: the request could
   * not be sent (the vote is LOST; the text is pt_strerror-like, owned by
   * the owner and copied). */
  int (*send)(void *ctx, uint32_t voter, enum commit_phase phase,
              uint64_t round, uint64_t step, uint64_t *ticket);
  /* The pin phase ended: the verdict. When committed, the step is
   * committed from this moment on, before any COMMIT is sent. */
  void (*verdict)(void *ctx, const struct commit_outcome *o);
  /* A voter did not take the COMMIT of step (refused, lost or gone): it
   * still holds the step pinned. May be NULL. */
  void (*commit_missed)(void *ctx, uint32_t voter, uint64_t step,
                        const char *text);
  /* The round ended (every phase over). May be NULL. */
  void (*ended)(void *ctx, uint64_t round, uint64_t step);
  /* Text for an error code returned by send (e.g. pt_strerror). May be
   * NULL: the code is written as a number. */
  const char *(*strerror)(int err);
};

struct commit_voter {
  struct commit_sealed_set sealed;
  enum commit_vote vote;   /* in the phase under way */
  uint64_t ticket;         /* of the request that vote waits on */
  bool asked;              /* that request was sent */
  bool gone;               /* lost in this round: not asked again in it */
};

struct commit {
  const struct commit_ops *ops;
  void *ctx;
  uint32_t n;              /* voters */
  struct commit_voter *v;  /* heap, n entries */
  uint32_t phase_ms;       /* each phase's deadline, after it starts */

  enum commit_phase phase;
  uint64_t round;          /* the open round's id, or the last one's */
  uint64_t rounds;         /* rounds started: the next id is rounds + 1 */
  uint64_t step;           /* the open round's step */
  uint64_t deadline;       /* of the phase under way; 0 none */
  struct commit_outcome out; /* of the open round's pin phase */
  bool sending;            /* inside a phase's sends: answers fed back
                              meanwhile are counted, then judged */

  bool has_committed;      /* the floor: the committed step ... */
  uint64_t committed;
  bool has_last;           /* ... or the last round's, whichever is newer */
  uint64_t last;
};

/* Sets up c for n voters (n >= 1) with no round open and nothing sealed.
 * phase_ms: how long a phase waits for its answers. -ENOMEM, -EINVAL.
 * Released with commit_release() (also after a failure). */
int commit_init(struct commit *c, uint32_t n, uint32_t phase_ms,
                const struct commit_ops *ops, void *ctx);
void commit_release(struct commit *c);

/* The committed step is now step (a restore, or one adopted from the
 * voters), or none (has false): any open round is dropped without a word
 * (answers still to come are ignored), and every sealed set and the last
 * round are forgotten. */
void commit_reset(struct commit *c, bool has, uint64_t step);
/* The committed step moved to step without a round (adopted): sealed
 * steps up to it are dropped; an open round goes on. Nothing when step is
 * not newer than the committed one. */
void commit_note_committed(struct commit *c, uint64_t step);
/* Drops the open round without a word (a restart, the end): answers still
 * to come are ignored. Nothing else changes. */
void commit_cancel(struct commit *c);

/* Voter sealed step; ignored when it is not newer than the floor. */
void commit_sealed(struct commit *c, uint32_t voter, uint64_t step);
/* Forgets what voter sealed (before its steps are given again). */
void commit_sealed_clear(struct commit *c, uint32_t voter);

/* The floor a round's step must be newer than (see above). False: none
 * yet. */
bool commit_floor(const struct commit *c, uint64_t *floor);
/* The step of the open round, or else of the one commit_drive would
 * start. False: neither. */
bool commit_target(const struct commit *c, uint64_t *step);
bool commit_is_open(const struct commit *c);

/* Starts a round when none is open and every voter sealed a step newer
 * than the floor. True when a round was started (it may have ended
 * already, e.g. when no request could be sent). */
bool commit_drive(struct commit *c, uint64_t now);
/* The answer to the request with ticket from voter: vote YES, NO or LOST
 * (text: why, may be NULL). Ignored unless it is the answer the open
 * round waits for from voter. */
void commit_reply(struct commit *c, uint32_t voter, uint64_t ticket,
                  enum commit_vote vote, const char *text, uint64_t now);
/* Voter is gone (its connection, its process, its node): what the round
 * waits for from it is LOST, and it is not asked again in this round. */
void commit_voter_gone(struct commit *c, uint32_t voter, const char *text,
                       uint64_t now);
/* The phase under way outlived its deadline at now: every missing answer
 * is LOST. */
void commit_tick(struct commit *c, uint64_t now);
/* When commit_tick has something to do; UINT64_MAX: never. */
uint64_t commit_next_deadline(const struct commit *c);

const char *commit_phase_name(enum commit_phase ph);

#endif /* PT_COMMIT_H */
