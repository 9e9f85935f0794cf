/*
 * train_main.c — pt-train, the reference trainer: the training loop and its
 * use of libpt.
 *
 * Start-up: the state is allocated as lazily mapped zero pages and
 * registered, pt_restore() is called, and only when there is nothing to
 * restore (PT_ENOSNAP) are the parameters drawn from --seed: a restarted
 * trainer pays for the restore's copy, not for an initialisation it would
 * overwrite. The small regions are set before the restore (it overwrites
 * them, or leaves them as a fresh start needs them); nothing outside the
 * registered regions depends on the initialisation (the teacher has its own
 * generator, seeded by --seed, and is rebuilt by every run).
 *
 * Registered state, as separate named regions in this order (the digest runs
 * over them in the same order):
 *   config       struct train_identity: what decides the trajectory
 *   params       the model's parameters (float32)
 *   adam_m       AdamW first moments
 *   adam_v       AdamW second moments
 *   rng          the data generator (xoshiro256**, 32 bytes)
 *   data_cursor  samples drawn so far (uint64)
 *   step         the last step completed (uint64)
 *
 * Step N: draw the batch from a working copy of the generator; forward and
 * backward; the gradient and the loss averaged over every rank (all-reduce;
 * these three only read the registered state and write the gradient, which
 * is not registered, so they overlap the copy of step N-1's snapshot);
 * pt_fence(); AdamW update and the small regions written (the only writes to
 * registered memory, all after the fence); pt_snapshot(N). A restore of step
 * R therefore leaves exactly the state that step R left, and the run goes on
 * at R+1 drawing the same samples it would have drawn.
 *
 * Data parallel: every rank starts from the same parameters (seeded by --seed)
 * and applies the same averaged gradient, so params, adam_m and adam_v stay
 * the same bits on every rank; the data generator, the cursor and the config
 * (which names the rank) differ. The ranks move in lockstep: a rank that dies
 * or hangs makes the others fail within --comm-timeout-s, and ptd node
 * restarts them all from one step.
 *
 * Snapshot failures never stop training: they are counted and reported.
 */
#include <errno.h>
#include <inttypes.h>
#include <isa-l/crc64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pt.h"
#include "train.h"

#define EXIT_USAGE 2
#define EXIT_CONFIG 78 /* EX_CONFIG: permanent, ptd node does not restart */
#define TIMING_WARMUP_STEPS 3
#define WARN_FIRST 10  /* snapshot warnings printed before thinning out */
#define WARN_EVERY 100 /* then one per this many */
#define MASTER_ADDR_DEFAULT "127.0.0.1"
#define MASTER_PORT_DEFAULT 29500
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct region {
  const char *name;
  void *ptr;
  size_t bytes;
};

enum { REG_CONFIG, REG_PARAMS, REG_M, REG_V, REG_RNG, REG_CURSOR, REG_STEP, REG_COUNT };

struct trainer {
  struct train_flags flags;
  int rank, world;
  const char *master_addr;
  uint32_t master_port;
  struct train_comm comm;
  struct train_teacher teacher;
  struct train_model model;
  struct train_adamw adamw;
  /* the small registered regions */
  struct train_identity identity;
  struct train_rng rng;
  uint64_t cursor;
  uint64_t step;
  struct region regions[REG_COUNT];

  pt_client *client; /* NULL with --no-pt */
  uint64_t snapshots, skipped, failed;
  uint64_t snapshot_step; /* step of the last snapshot started */
  uint64_t warnings;
};

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(uint32_t ms)
{
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* libpt's messages, shown on stderr down to the level --verbose asks for. */
static void on_libpt_log(void *arg, int level, const char *msg)
{
  int verbose = *(const int *)arg;
  int shown = verbose >= 2 ? PT_LOG_DEBUG : verbose == 1 ? PT_LOG_INFO : PT_LOG_WARN;
  if (level <= shown)
    fprintf(stderr, "pt-train: libpt: %s\n", msg);
}

/* Failures that no restart can cure: the job must stop (exit 78). */
static bool is_permanent(int err)
{
  return err == PT_EREGIONS || err == PT_EBUDGET || err == -ENOSPC ||
         err == PT_ECONFIG || err == PT_ENODEVICE || err == PT_EVERSION ||
         err == PT_EOVERLAP || err == PT_ETOOBIG || err == PT_EFOREIGN ||
         err == PT_EWORLD || err == PT_ENORESTORE || err == PT_ESTEP ||
         err == -EPERM || err == PT_EROLE;
}

/* Prints "pt-train: <what>: <text>[: <libpt's detail>]" on stderr. */
static void report_pt_error(struct trainer *t, const char *what, int err)
{
  const char *detail = t->client != NULL ? pt_last_error(t->client) : "";
  if (detail[0] != '\0')
    fprintf(stderr, "pt-train: %s: %s: %s\n", what, pt_strerror(err), detail);
  else
    fprintf(stderr, "pt-train: %s: %s\n", what, pt_strerror(err));
}

/* A snapshot problem: counted, and reported while it stays rare. */
static void warn_snapshot(struct trainer *t, const char *what, uint64_t step, int err)
{
  char buf[96];
  t->warnings++;
  if (t->warnings > WARN_FIRST && t->warnings % WARN_EVERY != 0)
    return;
  snprintf(buf, sizeof(buf), "warning: %s at step %" PRIu64 " (%" PRIu64 " so far)",
           what, step, t->warnings);
  report_pt_error(t, buf, err);
}

/* The first of the variables `vars` that is set, as a number in [lo, hi]:
 * 0 with *out set, 1 when none is set, or -EINVAL after a message. */
static int env_number(const char *const *vars, size_t n_vars, long lo, long hi,
                      const char *what, long *out)
{
  for (size_t i = 0; i < n_vars; i++) {
    const char *s = getenv(vars[i]);
    if (s == NULL || s[0] == '\0')
      continue;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
      fprintf(stderr, "pt-train: invalid %s='%s': expected %s\n", vars[i], s, what);
      return -EINVAL;
    }
    *out = v;
    return 0;
  }
  return 1;
}

/* This rank: --rank, else $PT_RANK, else $RANK, else 0. The world size:
 * $PT_WORLD_SIZE, else $WORLD_SIZE, else 1. Rank 0's address: $MASTER_ADDR,
 * else 127.0.0.1; its port: --master-port, else $MASTER_PORT, else 29500. */
static int ranks_resolve(struct trainer *t)
{
  static const char *const rank_vars[] = {"PT_RANK", "RANK"};
  static const char *const world_vars[] = {"PT_WORLD_SIZE", "WORLD_SIZE"};
  static const char *const port_vars[] = {"MASTER_PORT"};
  const struct train_flags *f = &t->flags;
  long v;
  int rc;

  t->rank = 0;
  if (f->rank >= 0) {
    t->rank = f->rank;
  } else {
    rc = env_number(rank_vars, ARRAY_LEN(rank_vars), 0, 1 << 20, "a rank number", &v);
    if (rc < 0)
      return rc;
    if (rc == 0)
      t->rank = (int)v;
  }

  t->world = 1;
  rc = env_number(world_vars, ARRAY_LEN(world_vars), 1, 1 << 20, "a world size of at least 1", &v);
  if (rc < 0)
    return rc;
  if (rc == 0)
    t->world = (int)v;
  /* One rank alone may be any rank: it only chooses the data. */
  if (t->world > 1 && t->rank >= t->world) {
    fprintf(stderr, "pt-train: rank %d is not below the world size %d\n", t->rank,
            t->world);
    return -EINVAL;
  }

  const char *addr = getenv("MASTER_ADDR");
  t->master_addr = addr != NULL && addr[0] != '\0' ? addr : MASTER_ADDR_DEFAULT;
  t->master_port = MASTER_PORT_DEFAULT;
  if (f->master_port != 0) {
    t->master_port = f->master_port;
  } else {
    rc = env_number(port_vars, ARRAY_LEN(port_vars), 1, 65535, "a port number", &v);
    if (rc < 0)
      return rc;
    if (rc == 0)
      t->master_port = (uint32_t)v;
  }
  return 0;
}

static void identity_fill(struct train_identity *id, const struct train_flags *f,
                          uint32_t hidden, int rank, int world)
{
  memset(id, 0, sizeof(*id));
  id->magic = TRAIN_IDENTITY_MAGIC;
  id->seed = f->seed;
  id->inputs = f->inputs;
  id->hidden = hidden;
  id->layers = f->layers;
  id->classes = f->classes;
  id->batch = f->batch;
  id->rank = (uint32_t)rank;
  id->lr = f->lr;
  id->beta1 = f->beta1;
  id->beta2 = f->beta2;
  id->eps = f->eps;
  id->weight_decay = f->weight_decay;
  id->world = (uint32_t)world;
}

/* What every rank of one job must agree on: the identity with the rank left
 * out, the last step (a rank that stopped early would leave the others
 * waiting) and the job's name (two jobs that meet on one port refuse). */
static uint64_t config_hash(const struct trainer *t)
{
  struct train_identity id = t->identity;
  uint64_t steps = t->flags.steps;
  const char *job = getenv("PT_JOB");
  id.rank = 0;
  uint64_t h = crc64_ecma_refl(0, (const unsigned char *)&id, sizeof(id));
  h = crc64_ecma_refl(h, (const unsigned char *)&steps, sizeof(steps));
  if (job != NULL)
    h = crc64_ecma_refl(h, (const unsigned char *)job, strlen(job));
  return h;
}

/* The data generator of a rank: the seed mixed with the rank. */
static uint64_t data_seed(uint64_t seed, int rank)
{
  return seed ^ (0xd1b54a32d192ed03ull * ((uint64_t)rank + 1));
}

/* CRC-64 of the parameters alone: equal on every rank of a job. */
static uint64_t param_digest(const struct trainer *t)
{
  return crc64_ecma_refl(0, t->regions[REG_PARAMS].ptr, t->regions[REG_PARAMS].bytes);
}

/* CRC-64 over every registered region, in order. */
static uint64_t state_digest(const struct trainer *t)
{
  uint64_t crc = 0;
  for (int i = 0; i < REG_COUNT; i++)
    crc = crc64_ecma_refl(crc, t->regions[i].ptr, t->regions[i].bytes);
  return crc;
}

/* Writes "<16 hex digits>\n" to the digest file, "%r" replaced by the rank. */
static int digest_write(const char *pattern, int rank, uint64_t digest)
{
  char path[4096];
  size_t n = 0;
  for (const char *p = pattern; *p != '\0' && n + 16 < sizeof(path); p++) {
    if (p[0] == '%' && p[1] == 'r') {
      n += (size_t)snprintf(path + n, sizeof(path) - n, "%d", rank);
      p++;
    } else if (p[0] == '%' && p[1] == '%') {
      path[n++] = '%';
      p++;
    } else {
      path[n++] = *p;
    }
  }
  path[n] = '\0';

  FILE *fp = fopen(path, "w");
  if (fp == NULL) {
    int err = -errno;
    fprintf(stderr, "pt-train: cannot write digest file '%s': %s\n", path, pt_strerror(err));
    return err;
  }
  fprintf(fp, "%016" PRIx64 "\n", digest);
  if (fclose(fp) != 0) {
    int err = -errno;
    fprintf(stderr, "pt-train: cannot write digest file '%s': %s\n", path, pt_strerror(err));
    return err;
  }
  return 0;
}

static int restored_check(struct trainer *t, uint64_t step);

/* Opens the client, registers the regions and restores. Returns the exit
 * status to leave with (after printing why), or 0 to train from *start. */
static int pt_setup(struct trainer *t, uint64_t *start, bool *restored, uint64_t *from)
{
  struct pt_options opts = {.size = sizeof(opts)};
  int rc;

  if (getenv("PT_SMP_SOCKET") == NULL || getenv("PT_SMP_SOCKET")[0] == '\0') {
    fprintf(stderr, "pt-train: PT_SMP_SOCKET is not set: run under 'ptd node', "
                    "or pass --no-pt to train without snapshots\n");
    return EXIT_CONFIG;
  }
  opts.rank = t->rank;
  opts.rank_set = true;
  opts.log_fn = on_libpt_log;
  opts.log_arg = &t->flags.verbose;
  opts.recover_in_place = t->flags.recover_in_place;
  rc = pt_client_open(&t->client, &opts);
  if (rc != 0) {
    t->client = NULL;
    report_pt_error(t, "cannot open the snapshot client", rc);
    return is_permanent(rc) ? EXIT_CONFIG : 1;
  }
  for (int i = 0; i < REG_COUNT; i++) {
    struct region *r = &t->regions[i];
    rc = pt_region_register(t->client, r->name, r->ptr, r->bytes, PT_MEM_HOST);
    if (rc != 0) {
      char what[128];
      snprintf(what, sizeof(what), "cannot register region '%s' (%zu bytes)", r->name,
               r->bytes);
      report_pt_error(t, what, rc);
      return is_permanent(rc) ? EXIT_CONFIG : 1;
    }
  }

  uint64_t step = 0;
  rc = pt_restore(t->client, &step);
  if (rc == PT_ENOSNAP) {
    *start = 1;
    *restored = false;
    return 0;
  }
  if (rc != 0) {
    report_pt_error(t, "cannot restore", rc);
    return is_permanent(rc) ? EXIT_CONFIG : 1;
  }
  if ((rc = restored_check(t, step)) != 0)
    return rc;
  printf("restored step %" PRIu64 "\n", step);
  *start = step + 1;
  *restored = true;
  *from = step;
  return 0;
}

/* The bytes of restored step passed their checksums; they must also be
 * this job's state. Returns 0 or the exit status (after saying why). */
static int restored_check(struct trainer *t, uint64_t step)
{
  struct train_identity want;
  identity_fill(&want, &t->flags, t->model.hidden, t->rank, t->world);
  if (memcmp(&want, &t->identity, sizeof(want)) != 0) {
    fprintf(stderr,
            "pt-train: cannot restore: the snapshot of step %" PRIu64
            " was taken with another configuration (seed, sizes, batch, rank, world "
            "size or optimizer settings differ)\n",
            step);
    return EXIT_CONFIG;
  }
  if (t->step != step || t->cursor != step * t->flags.batch) {
    fprintf(stderr,
            "pt-train: cannot restore: snapshot says step %" PRIu64
            " but its state is at step %" PRIu64 " with %" PRIu64 " samples drawn\n",
            step, t->step, t->cursor);
    return 1;
  }
  return 0;
}

/* The rendezvous of recovery gen: the port `ptd node` gives the restarted
 * ranks (PT_MASTER_PORT_BASE + gen % 64, kept below 65536). */
static uint32_t recover_port(const struct trainer *t, uint64_t gen)
{
  const char *b = getenv("PT_MASTER_PORT_BASE");
  uint32_t base = t->master_port;
  char *end;

  if (b != NULL && b[0] != '\0') {
    unsigned long v = strtoul(b, &end, 10);
    if (*end == '\0' && v >= 1 && v <= 65535)
      base = (uint32_t)v;
  }
  uint32_t port = base + (uint32_t)(gen % 64u);
  return port > 65535u ? port - 64u : port;
}

#define RECOVER_ASK_MS 5000 /* a failed exchange: how long to wait for the
                               node's word that a peer died */

/* --recover-in-place: the node asked this rank to restore in place (a peer
 * died and is restarted alone). Leaves the all-reduce, restores the node's
 * step (or a fresh start) and meets the restarted ranks at the recovery's
 * rendezvous. Returns 0 with *start (the next step) and *from, or the exit
 * status. */
static int recover_in_place(struct trainer *t, uint64_t gen,
                            struct train_comm_config *cc, uint64_t *start,
                            bool *restored, uint64_t *from)
{
  uint64_t step = 0;
  int rc;

  train_comm_close(&t->comm);
  printf("recovering in place (recovery %" PRIu64 ")\n", gen);
  /* The node recovers in place only to a committed step: PT_ENOSNAP (a
   * fresh start, whose first parameters this process no longer has) is a
   * failure, and every rank restarts. */
  rc = pt_restore(t->client, &step);
  if (rc != 0) {
    report_pt_error(t, "cannot restore in place", rc);
    return is_permanent(rc) ? EXIT_CONFIG : 1;
  }
  if ((rc = restored_check(t, step)) != 0)
    return rc;
  printf("restored step %" PRIu64 " in place\n", step);
  *start = step + 1;
  *restored = true;
  *from = step;
  cc->port = recover_port(t, gen);
  cc->start_step = *start;
  rc = train_comm_open(&t->comm, cc);
  if (rc != 0)
    return is_permanent(rc) ? EXIT_CONFIG : 1;
  return 0;
}

/* One training step. OUT: *loss, the mean over the ranks. Registered memory
 * is written only between the fence and the snapshot. Returns 0, or the
 * all-reduce's error (already reported): the step was not taken. */
static int train_step(struct trainer *t, uint64_t step, double *loss, double *comm_ms,
                      double *fence_ms, double *snap_ms)
{
  struct train_model *m = &t->model;
  struct train_rng rng = t->rng;
  uint64_t cursor = t->cursor;
  int rc;

  train_batch_draw(&t->teacher, &rng, &cursor, m->batch, m->act[0], m->labels);
  *loss = train_model_backprop(m);
  double c0 = now_ms();
  rc = train_comm_allreduce_mean(&t->comm, step, m->grad, loss);
  *comm_ms = now_ms() - c0;
  if (rc != 0)
    return rc;

  if (t->client != NULL) {
    double t0 = now_ms();
    rc = pt_fence(t->client);
    *fence_ms = now_ms() - t0;
    if (rc != 0) {
      t->failed++;
      warn_snapshot(t, "snapshot failed", t->snapshot_step, rc);
    }
  }

  train_model_update(m, &t->adamw, step);
  t->rng = rng;
  t->cursor = cursor;
  t->step = step;

  if (t->client != NULL && step % t->flags.snapshot_every == 0) {
    double t0 = now_ms();
    rc = pt_snapshot(t->client, step);
    *snap_ms = now_ms() - t0;
    if (rc == PT_OK) {
      t->snapshots++;
      t->snapshot_step = step;
    } else if (rc == PT_SKIPPED) {
      t->skipped++;
    } else if (rc == PT_RECOVER) {
      return PT_RECOVER; /* the step is done; the node asks for a restore */
    } else {
      t->failed++;
      warn_snapshot(t, "cannot start snapshot", step, rc);
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  static struct trainer tr;
  struct trainer *t = &tr;
  int status = 1, rc;

  setvbuf(stdout, NULL, _IOLBF, 0); /* fault tests read the last step printed */

  rc = train_flags_parse(&t->flags, argc, argv);
  if (rc == 1)
    return 0;
  if (rc != 0)
    return EXIT_USAGE;
  const struct train_flags *f = &t->flags;
  if (ranks_resolve(t) != 0)
    return EXIT_USAGE;

  rc = train_teacher_init(&t->teacher, f->seed, f->inputs, f->classes);
  if (rc != 0) {
    fprintf(stderr, "pt-train: cannot allocate the teacher: %s\n", pt_strerror(rc));
    return 1;
  }
  rc = train_model_init(&t->model, f->inputs, f->hidden, f->layers, f->classes, f->batch);
  if (rc != 0) {
    fprintf(stderr, "pt-train: cannot allocate a model of %llu bytes of state: %s\n",
            (unsigned long long)train_state_bytes(f->inputs, f->hidden, f->layers,
                                                  f->classes),
            pt_strerror(rc));
    goto out_teacher;
  }
  struct train_model *m = &t->model;
  t->adamw = (struct train_adamw){f->lr, f->beta1, f->beta2, f->eps, f->weight_decay};
  identity_fill(&t->identity, f, m->hidden, t->rank, t->world);
  train_rng_seed(&t->rng, data_seed(f->seed, t->rank));
  t->cursor = 0;
  t->step = 0;

  size_t pbytes = m->n_params * sizeof(float);
  struct region regions[REG_COUNT] = {
      [REG_CONFIG] = {"config", &t->identity, sizeof(t->identity)},
      [REG_PARAMS] = {"params", m->params, pbytes},
      [REG_M] = {"adam_m", m->m, pbytes},
      [REG_V] = {"adam_v", m->v, pbytes},
      [REG_RNG] = {"rng", &t->rng, sizeof(t->rng)},
      [REG_CURSOR] = {"data_cursor", &t->cursor, sizeof(t->cursor)},
      [REG_STEP] = {"step", &t->step, sizeof(t->step)},
  };
  memcpy(t->regions, regions, sizeof(regions));

  uint64_t state_bytes = 0;
  for (int i = 0; i < REG_COUNT; i++)
    state_bytes += t->regions[i].bytes;
  printf("pt-train: rank %d: mlp %u-%u(x%u)-%u, %zu parameters, state %.1f MiB, "
         "batch %u, seed %llu, world size %d%s\n",
         t->rank, f->inputs, m->hidden, f->layers, f->classes, m->n_params,
         (double)state_bytes / (1 << 20), f->batch, (unsigned long long)f->seed, t->world,
         f->no_pt ? ", without pt" : "");

  uint64_t start = 1, from = 0;
  bool restored = false;
  if (!f->no_pt) {
    status = pt_setup(t, &start, &restored, &from);
    if (status != 0)
      goto out_client;
    status = 1;
  }
  if (!restored) {
    /* Only a fresh start draws the parameters: a restored run would throw
     * them away, and on a large model drawing them costs more than the
     * restore. Everything else a fresh start needs (config, rng, cursor,
     * step; zero moments) is already in place, untouched by PT_ENOSNAP. */
    train_model_init_params(m, f->seed);
    printf("starting at step 1\n");
  }

  struct train_comm_config cc = {
      .rank = t->rank,
      .world = t->world,
      .addr = t->master_addr,
      .port = t->master_port,
      .timeout_s = f->comm_timeout_s,
      .config_hash = config_hash(t),
      .start_step = start,
      .n_floats = m->n_params,
  };
  rc = train_comm_open(&t->comm, &cc);
  if (rc != 0) {
    status = is_permanent(rc) ? EXIT_CONFIG : 1;
    goto out_client;
  }

  uint64_t ran = 0, timed = 0;
  double step_ms = 0, comm_ms = 0, fence_ms = 0, snap_ms = 0;
  const char *restart = getenv("PT_RESTART");
  bool first_start = restart == NULL || strcmp(restart, "0") == 0;
  for (uint64_t step = start; step <= f->steps; step++) {
    double loss, cm = 0, fm = 0, sm = 0, t0 = now_ms();
    if (f->hang_at_step != 0 && step == f->hang_at_step && first_start) {
      printf("hanging before step %" PRIu64 "\n", step);
      fflush(stdout);
      for (;;)
        sleep_ms(1000); /* alive, not progressing: until killed */
    }
    rc = train_step(t, step, &loss, &cm, &fm, &sm);
    if (rc != 0 && t->client != NULL && f->recover_in_place) {
      /* A peer that died breaks the exchange: is that why? */
      uint64_t gen = 0;
      int asked = rc == PT_RECOVER ? pt_recover_pending(t->client, 0, &gen)
                                   : pt_recover_pending(t->client,
                                                        RECOVER_ASK_MS, &gen);
      if (asked == PT_RECOVER) {
        status = recover_in_place(t, gen, &cc, &start, &restored, &from);
        if (status != 0)
          goto out_client;
        status = 1;
        step = start - 1; /* the loop's increment makes it start */
        continue;
      }
    }
    if (rc != 0)
      goto out_client; /* the all-reduce said why; the others stop too */
    double dt = now_ms() - t0;
    ran++;
    if (ran > TIMING_WARMUP_STEPS) {
      timed++;
      step_ms += dt;
      comm_ms += cm;
      fence_ms += fm;
      snap_ms += sm;
    }
    if (step % f->log_every == 0 || step == 1 || step == f->steps)
      printf("step %" PRIu64 " loss %.6f\n", step, loss);
    if (f->step_delay_ms != 0)
      sleep_ms(f->step_delay_ms);
  }

  if (t->client != NULL) {
    rc = pt_fence(t->client);
    if (rc != 0) {
      t->failed++;
      warn_snapshot(t, "snapshot failed", t->snapshot_step, rc);
    }
  }

  train_comm_close(&t->comm);

  uint64_t digest = state_digest(t);
  printf("param_digest %016" PRIx64 "\n", param_digest(t));
  printf("digest %016" PRIx64 "\n", digest);
  if (f->timing) {
    if (timed == 0)
      printf("timing step_ms_avg=nan steps_timed=0\n");
    else
      printf("timing step_ms_avg=%.3f steps_timed=%" PRIu64
             " fence_ms_avg=%.3f snapshot_call_ms_avg=%.3f allreduce_ms_avg=%.3f\n",
             step_ms / (double)timed, timed, fence_ms / (double)timed,
             snap_ms / (double)timed, comm_ms / (double)timed);
  }
  char from_buf[32] = "none";
  if (restored)
    snprintf(from_buf, sizeof(from_buf), "%" PRIu64, from);
  printf("summary steps=%" PRIu64 " snapshots=%" PRIu64 " skipped=%" PRIu64
         " failed=%" PRIu64 " restored_from=%s\n",
         ran, t->snapshots, t->skipped, t->failed, from_buf);
  if (f->digest_file != NULL && digest_write(f->digest_file, t->rank, digest) != 0)
    goto out_client;
  status = 0;

out_client:
  train_comm_close(&t->comm); /* a no-op once closed */
  pt_client_close(t->client, status == 0);
  t->client = NULL;
  train_model_release(&t->model);
out_teacher:
  train_teacher_release(&t->teacher);
  return status;
}
