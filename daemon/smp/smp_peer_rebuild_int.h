/*
 * smp_peer_rebuild_int.h — what smp_peer_rebuild.c (the rebuild of this
 * member's step) and smp_peer_rebuild_link.c (its fetches' replies on the
 * links it dialled) share. Not an interface.
 */
#ifndef PT_SMP_PEER_REBUILD_INT_H
#define PT_SMP_PEER_REBUILD_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"
#include "daemon/smp/smp_rebuild.h"

#define REBUILD_STALL_MS 9000u   /* a rebuild that receives nothing this
                                  * long fails (it may take any time while
                                  * bytes come) */
#define REBUILD_ANSWER_MS 4000u  /* a held RESTORE_QUERY gets the progress
                                  * (-EINPROGRESS) after this, or half its
                                  * trainer's wait_ms when that is less */
#define REBUILD_FETCH_MS 3000u   /* one fetch */
#define REBUILD_LINK_MS 3000u    /* a member not linked by then is lost */
#define REBUILD_TICK_MS 1u       /* a link up or a size said is seen at once */
#define REBUILD_AGAIN_MS 2u      /* a fetch refused with -EAGAIN */
#define REBUILD_QUEUE 64u
#define REBUILD_WINDOW 8u        /* slices in flight */
#define REBUILD_SLICE ((size_t)1 << 20) /* bytes per fetch */
#define REBUILD_CRC_TRIES 3u
#define REBUILD_LANES 4u         /* fetches outstanding per member (its
                                  * link serves 2 * PEER_PIECE queued at
                                  * most: 8 slices) */

enum rb_state { RB_NONE, RB_WAIT, RB_META, RB_DATA, RB_DONE, RB_FAILED };

/* One of this SMP's fetches from another member. */
struct rb_fetch {
  bool busy;                  /* outstanding */
  bool meta;                  /* it is the table's */
  bool unsent;                /* to be sent (again) once the link is up */
  struct smp_rebuild_fetch f;
  uint64_t req;               /* its request id */
  uint64_t deadline, again_at;
  bool landing;               /* a payload being read into f.dst */
  uint64_t landing_req;
  unsigned crc_fails;
  unsigned agains;            /* -EAGAIN answers in a row */
  bool wrong_kind;            /* a sum for a piece, or the other way round */
};

/* What this SMP fetches from one other member. */
struct rb_member {
  struct rb_fetch lane[REBUILD_LANES];
  bool no_table;              /* refused the table */
  uint64_t down_since;        /* its link is not up since (0: up) */
};

struct smp_peer_rebuild {
  struct smp_peer *p;
  enum rb_state state;
  uint64_t step;
  uint32_t attempt;
  uint64_t t_start, deadline;  /* deadline: REBUILD_STALL_MS past the last
                                * bytes received */
  uint64_t received_seen;      /* r->received when the deadline moved */
  uint64_t us_start, us_table, us_data; /* its phases (rpc_now_us) */
  bool has_slot;
  uint32_t slot;
  uint64_t gen;
  uint8_t *table;
  size_t table_len;
  struct smp_rebuild *rb;
  struct smp_rebuild_fetch q[REBUILD_QUEUE];
  unsigned nq;
  struct rb_member mem[RS_MAX_MEMBERS];
  uint32_t used;              /* members pieces came from */
  uint32_t skip_src;          /* erased at the start (a verify retry) */
  bool unchained;             /* a pipelined fetch failed: piece by piece */
  bool chained_try;           /* this try began pipelined */
  unsigned verify_tries;
  uint32_t cand, base_erased; /* the first try's sources, and erased */
  uint64_t received;
  int rc;
  char err[600];
  /* the trainer's RESTORE_QUERY, held */
  bool held;
  struct smp_conn *held_sc;
  uint64_t held_id, held_until; /* until: its progress answer is due */
  bool hold_logged;
  uv_timer_t timer;
  bool timer_init, timer_on;
};

/* Microseconds of the monotonic clock: the phases' times in the log. */
static inline uint64_t smp_peer_rebuild_now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* smp_peer_rebuild_held.c: the held RESTORE_QUERY answered now, at the
 * rebuild's end (as usual when done, else with r->rc and r->err), or with
 * its progress (-EINPROGRESS; the trainer asks again). */
void smp_peer_rebuild_held_answer(struct smp_peer_rebuild *r);
void smp_peer_rebuild_held_progress(struct smp_peer_rebuild *r);

/* smp_peer_rebuild.c */
bool smp_peer_rebuild_active(const struct smp_peer_rebuild *r);
/* The rebuild fails (rc, a sentence): logged, slots freed, the held
 * RESTORE_QUERY answered with it. */
void smp_peer_rebuild_fail(struct smp_peer_rebuild *r, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Member i fails as a source (why): erased, its stripes from the others. */
void smp_peer_rebuild_member_failed(struct smp_peer_rebuild *r, uint32_t i,
                                    const char *why);
/* (Again) sends fetch x of member i. */
void smp_peer_rebuild_send(struct smp_peer_rebuild *r, uint32_t i, struct rb_fetch *x);
/* Member i's outstanding fetch of request id req; NULL. */
struct rb_fetch *smp_peer_rebuild_find(struct smp_peer_rebuild *r, uint32_t i,
                                       uint64_t req);
/* Member i's PEER_META: this member's table, when it fits the object. */
void smp_peer_rebuild_table_in(struct smp_peer_rebuild *r, uint32_t i,
                               const Pt__PeerMeta *m);
/* What can go now goes: phases, deadlines, fetches, the end. */
void smp_peer_rebuild_drive(struct smp_peer_rebuild *r);

/* smp_peer_rebuild_layout.c */
/* Every member's slot bytes (this one's from the object) into out; false
 * while one is not known. */
bool smp_peer_rebuild_layout_sizes(const struct smp_peer_rebuild *r, size_t *out);
/* The members that were sources of the stripes holding bad block `bad` of
 * the rebuilt slot (erased: the members erased then); 0 when that cannot
 * be told. */
uint32_t smp_peer_rebuild_layout_bad_sources(const struct smp_peer_rebuild *r,
                                             uint32_t bad, uint32_t erased);

#endif /* PT_SMP_PEER_REBUILD_INT_H */
