/*
 * test_ctl_persist.c — the persistent tier of a cluster job, as the
 * controller runs it (daemon/controller/ctl_jobs_persist.c), without
 * sockets: every persist_every'th commit marked (its JOB_COMMITs carry the
 * flush), one at a time; complete only once every part reported its files
 * durable, journaled (PERSISTED) before any JOB_PERSISTED, the older steps
 * past persist_keep let go; a failed flush stays incomplete and training
 * goes on; more of a group lost than its code rebuilds restores the newest
 * complete step from disk instead of failing the job, every epoch until a
 * step commits; a part whose files of it fail (disk_failed) sends the job
 * to the complete step before, and with none left it fails; memory that
 * cannot serve the restore step (PT_ENOFRAG) goes to disk; all of it
 * replayed from the journal and its compaction.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

/* ---- what the table asks for, as lines ---- */

static char ev[1024][160];
static size_t nev;
static uint64_t last_ticket[64], tickets;
static struct journal *JR; /* a real journal too, when open */
static struct ctl_members M;
static struct ctl_jobs JS;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
  va_list ap;
  if (nev >= 1024)
    return;
  va_start(ap, fmt);
  vsnprintf(ev[nev++], sizeof(ev[0]), fmt, ap);
  va_end(ap);
}

static long idx_of(const char *s)
{
  for (size_t i = 0; i < nev; i++)
    if (strcmp(ev[i], s) == 0)
      return (long)i;
  return -1;
}
static bool seen(const char *s)
{
  return idx_of(s) >= 0;
}
static void dump(void)
{
  for (size_t i = 0; i < nev; i++)
    fprintf(stderr, "  ev %zu: %s\n", i, ev[i]);
}

/* The node the assignment goes to, as the membership has it. */
static int f_assign(void *ctx, struct ctl_job *j, uint32_t p)
{
  struct ctl_jobs *js = ctx;
  size_t i = j->parts[p].node;
  note("assign %u to %s e%llu r%u restore=%lld", p,
       i < js->m->n ? js->m->nodes[i].id : "?", (unsigned long long)j->epoch,
       ctl_jobs_first_rank(j, p),
       j->has_restore ? (long long)j->restore_step : -1LL);
  return 0;
}
static int f_halt(void *ctx, struct ctl_job *j, uint32_t p, bool remove)
{
  (void)ctx;
  note("halt %u e%llu remove=%d", p, (unsigned long long)j->epoch, remove);
  return 0;
}
static int f_pin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step,
                 uint64_t *ticket)
{
  (void)ctx;
  (void)j;
  (void)step;
  *ticket = last_ticket[p] = ++tickets;
  return 0;
}
static int f_cu(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  (void)ctx;
  (void)j;
  (void)p;
  (void)step;
  return 0;
}
/* EPOCH lines name the parts placed (empty) as the record holds them. */
static int f_journal(void *ctx, const struct ctl_job *j, enum ctl_rec kind)
{
  struct ctl_jobs *js = ctx;
  char placed[128] = "";
  size_t off = 0;
  switch (kind) {
  case CTL_REC_JOB:
    note("J JOB %s", j->spec->name);
    break;
  case CTL_REC_EPOCH:
    for (uint32_t p = 0; p < j->nparts; p++)
      if (j->parts[p].empty && off < sizeof(placed))
        off += (size_t)snprintf(placed + off, sizeof(placed) - off, " %u=%s",
                                p, j->parts[p].node_id);
    note("J EPOCH %s e%llu%s", j->spec->name, (unsigned long long)j->epoch,
         placed);
    break;
  case CTL_REC_COMMIT:
    note("J COMMIT %s s%llu", j->spec->name,
         (unsigned long long)j->committed);
    break;
  case CTL_REC_END:
    note("J END %s %s", j->spec->name, ctl_jobs_state_name(j->state));
    break;
  case CTL_REC_PERSISTED:
    note("J PERSISTED %s s%llu", j->spec->name,
         (unsigned long long)ctl_jobs_persist_newest(j)->step);
    break;
  default:
    break;
  }
  if (JR == NULL)
    return 0;
  int rc = ctl_journal_append(JR, j, kind);
  return rc == PT_OK ? ctl_journal_compact(JR, js, false) : rc;
}
static int f_persisted(void *ctx, struct ctl_job *j, uint32_t p)
{
  (void)ctx;
  note("persisted %u s%llu keep_from=%llu", p,
       (unsigned long long)ctl_jobs_persist_newest(j)->step,
       (unsigned long long)ctl_jobs_persist_keep_from(j));
  return 0;
}

static int f_probe(void *ctx, struct ctl_job *j, uint32_t p)
{
  (void)ctx;
  note("probe %u e%llu r%u+%u of %u %s", p, (unsigned long long)j->epoch,
       ctl_jobs_first_rank(j, p), j->spec->ranks_per_node,
       ctl_jobs_world_size(j), j->spec->resume_from);
  return 0;
}

static const struct ctl_jobs_ops OPS = {f_assign, f_halt,    f_pin,
                                        f_cu,     f_cu,      f_journal,
                                        f_persisted, f_probe};

static const struct ctl_timeouts T = {.heartbeat_ms = 1000,
                                      .dead_after_ms = 10000,
                                      .grace_ms = 5000};
static uint8_t INC[16] = {1};

static void world_init(void)
{
  ctl_members_init(&M, &T, NULL, NULL);
  ctl_jobs_init(&JS, &M, &OPS, &JS);
}
static void setup(void)
{
  nev = 0;
  JR = NULL;
  world_init();
}
static void world_close(void)
{
  if (JR != NULL)
    journal_close(JR);
  JR = NULL;
  ctl_jobs_release(&JS);
  ctl_members_release(&M);
}

/* Node id on connection conn (the conns of the test's nodes: 1..32). */
static void add_node(const char *id, const char *dom, uint32_t cap,
                     uintptr_t conn, uint64_t now)
{
  char adv[32];
  snprintf(adv, sizeof(adv), "10.0.0.%u", (unsigned)conn);
  struct ctl_register r = {.node_id = id, .handshake_id = id,
                           .advertise = adv, .failure_domain = dom,
                           .capacity = cap, .incarnation = INC,
                           .incarnation_len = 16};
  enum ctl_reg_kind kind;
  void *old;
  char err[256];
  ck_assert_int_eq(ctl_members_register(&M, &r, (void *)conn, now, &kind, &old,
                                        err, sizeof(err)),
                   PT_OK);
  struct ctl_node *n = ctl_members_find(&M, id);
  ctl_jobs_node_registered(&JS, (size_t)(n - M.nodes), now);
}

static size_t node_index(const char *id)
{
  struct ctl_node *n = ctl_members_find(&M, id);
  ck_assert_ptr_nonnull(n);
  return (size_t)(n - M.nodes);
}

/* Nodes on the connections in dead[] (0-terminated) lose them at now and
 * are declared dead together; the others heartbeat. */
static void nodes_die(const uintptr_t *dead, uint64_t now)
{
  for (const uintptr_t *d = dead; *d != 0; d++)
    ctl_members_lost(&M, (void *)*d, now);
  for (uintptr_t c = 1; c <= 32; c++) {
    bool is_dead = false;
    for (const uintptr_t *d = dead; *d != 0; d++)
      is_dead |= *d == c;
    if (!is_dead)
      (void)ctl_members_heartbeat(&M, (void *)c, now + T.grace_ms);
  }
  ctl_members_tick(&M, now + T.grace_ms, NULL, 0);
  for (const uintptr_t *d = dead; *d != 0; d++)
    for (size_t i = 0; i < M.n; i++)
      if (M.nodes[i].state == CTL_NODE_DEAD && M.nodes[i].jobp != NULL)
        ctl_jobs_node_down(&JS, i, now + T.grace_ms);
}

static char *ARGV[] = {"pt-train", "--steps", "10"};

/* Job name on nodes (its code: k+m, or the default when k is 0 and m is
 * 1; none when both are 0), running. */
static const char *PDIR_SPEC; /* the next job's persist dir (NULL: none) */
static struct ctl_job *start_job(const char *name, uint32_t nodes, uint32_t k,
                                 uint32_t m, uint64_t now)
{
  char err[256];
  struct ctl_job *j;
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  s.name = (char *)name;
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = nodes;
  s.ranks_per_node = 1;
  if (!(k == 0 && m == 1)) {
    s.has_code_k = s.has_code_m = true;
    s.code_k = k;
    s.code_m = m;
  }
  if (PDIR_SPEC != NULL) {
    s.persist_dir = (char *)PDIR_SPEC;
    s.has_persist_every = true;
    s.persist_every = 2;
    s.has_persist_keep = true;
    s.persist_keep = 2;
  }
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, now, &j, err, sizeof(err)), PT_OK);
  for (uint32_t p = 0; p < nodes; p++)
    ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, p, j->epoch,
                                         CTL_PART_RUNNING, NULL, NULL, now),
                     PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  return j;
}

static void run_all(struct ctl_job *j, uint64_t now)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_parts_state(&JS, j, p, j->epoch, CTL_PART_RUNNING, NULL, NULL,
                        now);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
}

static void commit_steps(struct ctl_job *j, uint64_t from, uint64_t to)
{
  for (uint64_t st = from; st <= to; st++) {
    for (uint32_t p = 0; p < j->nparts; p++)
      ctl_jobs_parts_sealed(&JS, j, p, j->epoch, st, false, 10);
    for (uint32_t p = 0; p < j->nparts; p++)
      ctl_jobs_parts_vote(&JS, j, p, j->epoch, st, last_ticket[p], 0, NULL, 10);
  }
  ck_assert_uint_eq(j->committed, to);
}


static char DIRP[64], PATH[128];

/* Every part reports the marked step durable (status 0) or p_fail fails. */
static void report_all(struct ctl_job *j, uint32_t p_fail)
{
  uint64_t mark = j->persist.mark, step = j->persist.marked;
  for (uint32_t p = 0; p < j->nparts; p++)
    ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, p, step, mark,
                                             p == p_fail ? -ENOSPC : PT_OK,
                                             p == p_fail ? "disk full" : NULL,
                                             1000),
                     PT_OK);
}

/* a b c (conns 1-3) run job j, code 2+1, persisted every 2nd commit. */
static struct ctl_job *abc_job(void)
{
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  PDIR_SPEC = "/shared/pt";
  struct ctl_job *j = start_job("j", 3, 2, 1, 0);
  PDIR_SPEC = NULL;
  nev = 0;
  return j;
}

/* Marks, completion, the journal before JOB_PERSISTED, keep, a failure. */
START_TEST(marks_and_completes)
{
  setup();
  struct ctl_job *j = abc_job();
  uint64_t mark;
  commit_steps(j, 1, 1);
  ck_assert(!j->persist.has_marked);
  commit_steps(j, 2, 2);
  ck_assert(j->persist.has_marked);
  ck_assert_uint_eq(j->persist.marked, 2);
  ck_assert(ctl_jobs_persist_marked(j, 2, &mark));
  ck_assert_uint_eq(mark, j->persist.mark);
  uint64_t none;
  ck_assert(!ctl_jobs_persist_marked(j, 1, &none));
  ck_assert_uint_eq(none, 0);
  /* not complete until every part said so; a stale mark is ignored */
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 0, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 1, 2, mark + 1, PT_OK,
                                           NULL, 1000), PT_OK);
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 0, 2, mark, PT_OK, NULL, 1000),
                   PT_OK); /* twice: counted once */
  ck_assert_ptr_null(ctl_jobs_persist_newest(j));
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 1, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_ptr_null(ctl_jobs_persist_newest(j));
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 2, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_ptr_nonnull(ctl_jobs_persist_newest(j));
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 2);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->mark, mark);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->bytes, 3000); /* once each */
  long pj = idx_of("J PERSISTED j s2");
  ck_assert_msg(pj >= 0 && idx_of("persisted 0 s2 keep_from=2") > pj,
                "PERSISTED at %ld", pj);
  ck_assert(seen("persisted 1 s2 keep_from=2") &&
            seen("persisted 2 s2 keep_from=2"));
  /* 4 and 6 complete: keep 2, so 2 goes (keep_from 4) */
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  commit_steps(j, 5, 6);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(j->persist.disk[0].step, 4);
  ck_assert(seen("persisted 0 s6 keep_from=4"));
  ck_assert_uint_eq(j->persist.persisted, 3);
  /* a flush that fails on one node: incomplete, said, the next mark comes */
  commit_steps(j, 7, 8);
  ck_assert_uint_eq(j->persist.marked, 8);
  report_all(j, 1);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  ck_assert_ptr_nonnull(strstr(j->persist.error, "step 8: node 'b': disk full"));
  commit_steps(j, 9, 10);
  ck_assert(j->persist.has_marked && j->persist.marked == 10);
  /* while a mark is outstanding, the next is not made */
  commit_steps(j, 11, 12);
  ck_assert_uint_eq(j->persist.marked, 10);
  /* a new epoch drops it: its late reports make nothing complete */
  uint64_t mark10 = j->persist.mark;
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&JS, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert(!j->persist.has_marked);
  for (uint32_t p = 0; p < 3; p++)
    ctl_jobs_persist_report(&JS, j, p, 10, mark10, PT_OK, NULL, 1000);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  /* a report from a part out of range is refused */
  ck_assert_int_eq(ctl_jobs_persist_report(&JS, j, 7, 10, mark10, PT_OK,
                                           NULL, 1000), PT_OK);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  world_close();
}
END_TEST

/* Two of the 2+1 group lost with step 4 complete on disk: spares take both
 * places and every part restores 4 from disk (the EPOCH, then the
 * assignments); an epoch that fails before a commit restores from disk
 * again; disk_failed goes to step 2; failed again, none is left: the job
 * fails saying so. A commit ends the disk's turn. */
START_TEST(m_plus_one_from_disk)
{
  setup();
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  commit_steps(j, 5, 5);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  nev = 0;
  uintptr_t bc[] = {2, 3, 0};
  nodes_die(bc, 1000);
  if (j->state != CTL_JOB_STARTING)
    dump();
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_ptr_eq(M.nodes[node_index("e")].jobp, j);
  ck_assert(j->has_restore && j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 4);
  ck_assert_uint_eq(j->restore_mark, j->persist.disk[1].mark);
  ck_assert_uint_eq(j->committed, 4); /* the job went back to it */
  long e = idx_of("J EPOCH j e2 1=d 2=e");
  ck_assert_msg(e >= 0 && idx_of("assign 0 to a e2 r0 restore=4") > e &&
                    idx_of("assign 1 to d e2 r1 restore=4") > e,
                "EPOCH at %ld", e);
  ck_assert_ptr_nonnull(strstr(j->reason, "restoring step 4 from disk"));
  ck_assert_ptr_nonnull(strstr(j->reason, "lost 2 of 3 members (b, c)"));
  /* a part fails before a commit (not the disk's fault): from disk again */
  run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = true;
  m.status = -EIO;
  ctl_jobs_parts_state(&JS, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 2100);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert(j->restore_disk && j->restore_step == 4);
  /* d's file of step 4 fails: step 2 next */
  run_all(j, 61000);
  m.has_disk_failed = m.disk_failed = true;
  m.status = PT_ECHECKSUM;
  ctl_jobs_parts_state(&JS, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 61100);
  ck_assert(j->persist.disk[1].bad);
  ctl_jobs_tick_all(&JS, 120000);
  ck_assert_uint_eq(j->epoch, 4);
  ck_assert(j->restore_disk && j->restore_step == 2);
  /* and step 2 fails too: nothing older, the job fails */
  run_all(j, 121000);
  ctl_jobs_parts_state(&JS, j, 2, j->epoch, CTL_PART_FAILED, "bad", &m,
                      121100);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "no older complete step on disk"));
  world_close();

  /* the restore from disk, then a commit: memory holds the job again, and
   * the next restart restores from memory */
  setup();
  j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  run_all(j, 2000);
  commit_steps(j, 3, 3);
  ck_assert(!j->persist.next_disk);
  m = (Pt__JobPartState)PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&JS, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 3000);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert(!j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 3);
  world_close();

  /* nothing complete on disk: failed as without the tier */
  setup();
  j = abc_job();
  commit_steps(j, 1, 1);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "tolerates 1"));
  world_close();
}
END_TEST

/* A part that finds too little of the restore step in memory (PT_ENOFRAG:
 * its group cannot rebuild it) sends the next epoch to disk. */
START_TEST(nofrag_to_disk)
{
  setup();
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 3);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = true;
  m.status = -EIO;
  ctl_jobs_parts_state(&JS, j, 1, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert(!j->restore_disk && j->restore_step == 3);
  run_all(j, 61000);
  m.status = PT_ENOFRAG;
  ctl_jobs_parts_state(&JS, j, 1, j->epoch, CTL_PART_FAILED,
                      "cannot rebuild step 3", &m, 61100);
  ctl_jobs_tick_all(&JS, 120000);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert(j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 2);
  world_close();
}
END_TEST

/* The complete steps and a disk epoch survive the controller's restart,
 * and the compaction. */
START_TEST(replayed)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);

  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  uint64_t mark4 = j->persist.disk[1].mark;
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 4);
  world_close();

  for (int round = 0; round < 2; round++) {
    world_init();
    int rc = ctl_journal_open(&JR, PATH, &JS, &dropped, err, sizeof(err));
    ck_assert_msg(rc == PT_OK, "round %d: %s", round, err);
    ctl_jobs_replay_done(&JS, 0);
    j = ctl_jobs_find(&JS, "j");
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(j->persist.ndisk, 2);
    ck_assert_uint_eq(j->persist.disk[0].step, 2);
    ck_assert_uint_eq(j->persist.disk[1].step, 4);
    ck_assert_uint_eq(j->persist.disk[1].mark, mark4);
    ck_assert_uint_eq(j->persist.disk[1].bytes, 3000);
    ck_assert(j->restore_disk);
    ck_assert_uint_eq(j->restore_step, 4);
    ck_assert_uint_eq(j->restore_mark, mark4);
    ck_assert(j->persist.next_disk); /* no commit since: disk again */
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(JR, &JS, true), PT_OK);
    world_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* The step chosen on disk is held by step and flush, not by place: a late
 * report of the mark outstanding at the loss is not taken (the mark goes
 * with the choice), so nothing shifts or prunes the step the next epoch
 * restores; bad steps do not count toward --persist-keep; ptctl restore
 * is the operator's step, from memory. */
START_TEST(choice_held)
{
  setup();
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  commit_steps(j, 5, 6); /* step 6 marked, not yet reported */
  ck_assert(j->persist.has_marked && j->persist.marked == 6);
  uint64_t mark6 = j->persist.mark;
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 4);
  ck_assert(!j->persist.has_marked);
  /* the late reports of step 6: ignored, nothing completes or is pruned */
  for (uint32_t p = 0; p < 3; p++)
    ctl_jobs_persist_report(&JS, j, p, 6, mark6, PT_OK, NULL, 1000);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 4);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  /* step 4 fails: 2 next; bad 4 kept, not counted toward keep */
  run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = m.has_disk_failed = m.disk_failed = true;
  m.status = PT_ECHECKSUM;
  ctl_jobs_parts_state(&JS, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 2100);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  ck_assert(seen("J PERSISTED j s2") && j->persist.disk[1].bad);
  /* running from 2: steps 3..4 again, 4 complete again (a new flush) */
  run_all(j, 61000);
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 4);
  ck_assert(!ctl_jobs_persist_newest(j)->bad);
  /* (the old 4 was of the history left: dropped; 2 and 4 kept) */
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(j->persist.disk[0].step, 2);
  world_close();

  /* ptctl restore in a disk epoch: the operator's step, from memory */
  setup();
  j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 3);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  run_all(j, 2000);
  bool has;
  uint64_t restored;
  char err[256];
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, 3000, &has, &restored,
                                    err, sizeof(err)), PT_OK);
  ck_assert(!j->restore_disk);
  ck_assert(has && restored == j->restore_step);
  world_close();
}
END_TEST

/* Bad steps are journaled: a restarted controller never tries them. */
START_TEST(bad_replayed)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  nodes_die(bc, 1000);
  ck_assert(j->restore_step == 4);
  run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_disk_failed = m.disk_failed = true;
  ctl_jobs_parts_state(&JS, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 2100);
  ck_assert(j->persist.disk[1].bad);
  world_close();
  for (int round = 0; round < 2; round++) {
    world_init();
    ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                      sizeof(err)), PT_OK);
    ctl_jobs_replay_done(&JS, 0);
    j = ctl_jobs_find(&JS, "j");
    ck_assert_uint_eq(j->persist.ndisk, 2);
    ck_assert(!j->persist.disk[0].bad && j->persist.disk[1].bad);
    /* the epoch journaled restores 4 from disk; its next one, 2 */
    ck_assert(j->persist.next_disk);
    ck_assert_uint_eq(j->persist.next_step, 2);
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(JR, &JS, true), PT_OK);
    world_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* After a restart from memory, the steps completed in the new epoch
 * survive a compaction and the controller's restart (the EPOCH's rollback
 * drops only a history the job left). */
START_TEST(compaction_keeps_epoch_steps)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  struct ctl_job *j = abc_job();
  commit_steps(j, 1, 3);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&JS, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&JS, 60000);
  ck_assert(j->has_restore && !j->restore_disk && j->restore_step == 3);
  run_all(j, 61000);
  commit_steps(j, 4, 5);
  report_all(j, UINT32_MAX);
  commit_steps(j, 6, 7);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  uint64_t newest = ctl_jobs_persist_newest(j)->step;
  ck_assert_int_eq(ctl_journal_compact(JR, &JS, true), PT_OK);
  world_close();
  world_init();
  int rc = ctl_journal_open(&JR, PATH, &JS, &dropped, err, sizeof(err));
  ck_assert_msg(rc == PT_OK, "%s", err);
  ctl_jobs_replay_done(&JS, 0);
  j = ctl_jobs_find(&JS, "j");
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, newest);
  ck_assert(!j->persist.next_disk);
  world_close();
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* ---- a cold start from an earlier run's files (ctl_jobs_probe.c) ---- */

/* a b c (conns 1-3) start job r, code 2+1, resuming from /old/pt: not
 * running, probing. */
static struct ctl_job *resume_job(void)
{
  char err[256];
  struct ctl_job *j;
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  nev = 0;
  s.name = "r";
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = 3;
  s.ranks_per_node = 1;
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  s.persist_dir = "/shared/pt";
  s.resume_from = "/old/pt";
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  return j;
}

/* Part p answers steps[] (step, mark pairs; 0-terminated). */
static int answer(struct ctl_job *j, uint32_t p, const uint64_t *steps,
                  uint32_t other_world, uint64_t now)
{
  Pt__DiskProbeReply m = PT__DISK_PROBE_REPLY__INIT;
  Pt__ProbeStep st[16], *sp[16];
  size_t n = 0;
  for (; steps != NULL && steps[2 * n] != 0; n++) {
    pt__probe_step__init(&st[n]);
    st[n].step = steps[2 * n];
    st[n].mark = steps[2 * n + 1];
    st[n].has_bytes = true;
    st[n].bytes = 100;
    sp[n] = &st[n];
  }
  m.job = "r";
  m.epoch = j->epoch;
  m.n_steps = n;
  m.steps = sp;
  m.has_other_world = m.has_other_world_step = other_world != 0;
  m.other_world = other_world;
  m.other_world_step = 50;
  return ctl_jobs_probe_reply(&JS, j, p, j->epoch, &m, now);
}

/* Every part is asked before any epoch; the steps all of them hold, of
 * one flush, are journaled (resumed) before the first EPOCH, which
 * restores the newest from the resume dir; a damaged one sends the job to
 * the one before; all of it replayed. */
START_TEST(probe_cold_start)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  struct ctl_job *j = resume_job();
  ck_assert(j->persist.probing);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(seen("probe 0 e0 r0+1 of 3 /old/pt"));
  ck_assert(seen("probe 2 e0 r2+1 of 3 /old/pt"));
  ck_assert(!seen("J EPOCH r e1"));
  /* step 10 is not on b; 30 is of another flush on b; 20 everywhere */
  const uint64_t a[] = {10, 7, 20, 8, 30, 9, 0};
  const uint64_t b[] = {20, 8, 30, 99, 0};
  const uint64_t c[] = {10, 7, 20, 8, 30, 9, 0};
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 0, b, 0, 5), PT_OK); /* twice: the first holds */
  ck_assert_int_eq(answer(j, 1, b, 0, 5), PT_OK);
  ck_assert(j->persist.probing && !seen("J EPOCH r e1"));
  ck_assert_int_eq(answer(j, 2, c, 0, 5), PT_OK);
  ck_assert(!j->persist.probing);
  long pe = idx_of("J PERSISTED r s20"), ep = idx_of("J EPOCH r e1");
  ck_assert_msg(pe >= 0 && ep > pe, "PERSISTED before EPOCH");
  ck_assert(idx_of("assign 0 to a e1 r0 restore=20") > ep);
  ck_assert(j->restore_disk && j->restore_step == 20 && j->restore_mark == 8);
  ck_assert(ctl_jobs_persist_restore_resumed(j));
  ck_assert_uint_eq(j->persist.ndisk, 1);
  ck_assert_uint_eq(j->persist.disk[0].bytes, 300);
  /* a stale answer after the epoch began: not this probe's */
  ck_assert_int_eq(answer(j, 0, a, 0, 6), PT_EEPOCH);
  world_close();
  for (int round = 0; round < 2; round++) {
    world_init();
    int rc = ctl_journal_open(&JR, PATH, &JS, &dropped, err, sizeof(err));
    ck_assert_msg(rc == PT_OK, "round %d: %s", round, err);
    ctl_jobs_replay_done(&JS, 0);
    j = ctl_jobs_find(&JS, "r");
    ck_assert_ptr_nonnull(j);
    ck_assert(!j->persist.probing);
    ck_assert_uint_eq(j->persist.ndisk, 1);
    ck_assert(j->persist.disk[0].resumed);
    ck_assert(j->restore_disk && j->restore_step == 20);
    ck_assert(ctl_jobs_persist_restore_resumed(j));
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(JR, &JS, true), PT_OK);
    world_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* Another world size, no step in common, a node that cannot read the
 * directory, one that does not answer: the job fails, saying so; a
 * controller restarted before the first EPOCH asks again. */
START_TEST(probe_refusals)
{
  char err[512];
  uint64_t dropped = 0;
  setup();
  struct ctl_job *j = resume_job();
  const uint64_t a[] = {20, 8, 0};
  ck_assert_int_eq(answer(j, 0, NULL, 4, 5), PT_OK);
  ck_assert_int_eq(answer(j, 1, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 2, NULL, 0, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "step 50 was written by a job of 4 ranks; "
                                  "this one has 3") != NULL, "%s", j->reason);
  ck_assert(!seen("J EPOCH r e1"));
  world_close();

  setup();
  j = resume_job();
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 1, NULL, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 2, a, 0, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "no step holds a file of every rank") &&
                    strstr(j->reason, "node 'b' holds none"), "%s", j->reason);
  world_close();

  setup();
  j = resume_job();
  Pt__DiskProbeReply m = PT__DISK_PROBE_REPLY__INIT;
  m.job = "r";
  m.status = -EACCES;
  m.message = "cannot open '/old/pt/r': Permission denied";
  ck_assert_int_eq(ctl_jobs_probe_reply(&JS, j, 1, j->epoch, &m, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "node 'b' cannot read '/old/pt/r'") &&
                    strstr(j->reason, "Permission denied"), "%s", j->reason);
  world_close();

  /* unanswered: its deadline fails the job, naming the node; before it,
   * a controller restart asks every node again */
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  j = resume_job();
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  world_close();
  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)), PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  nev = 0;
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  j = ctl_jobs_find(&JS, "r");
  ck_assert(j->persist.probing && j->persist.nprobed == 0);
  ck_assert(seen("probe 0 e0 r0+1 of 3 /old/pt"));
  ck_assert(seen("probe 1 e0 r1+1 of 3 /old/pt"));
  add_node("c", NULL, 1, 3, 0);
  ck_assert_int_eq(answer(j, 0, a, 0, 10), PT_OK);
  ck_assert_int_eq(answer(j, 1, a, 0, 10), PT_OK);
  ctl_jobs_tick_all(&JS, CTL_PROBE_MS - 1);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ctl_jobs_tick_all(&JS, CTL_PROBE_MS + 10);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "node 'c' did not say within") != NULL,
                "%s", j->reason);
  world_close();
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_persist");
  TCase *tc = tcase_create("persist");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, marks_and_completes);
  tcase_add_test(tc, m_plus_one_from_disk);
  tcase_add_test(tc, nofrag_to_disk);
  tcase_add_test(tc, replayed);
  tcase_add_test(tc, choice_held);
  tcase_add_test(tc, bad_replayed);
  tcase_add_test(tc, compaction_keeps_epoch_steps);
  tcase_add_test(tc, probe_cold_start);
  tcase_add_test(tc, probe_refusals);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
