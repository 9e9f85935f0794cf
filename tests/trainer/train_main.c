/*
 * train_main.c — pt-train, the reference trainer: the training loop and its
 * use of libpt.
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
 * backward (these only read the registered state, so they overlap the copy of
 * step N-1's snapshot); pt_fence(); AdamW update and the small regions written
 * (the only writes to registered memory, all after the fence); pt_snapshot(N).
 * A restore of step R therefore leaves exactly the state that step R left, and
 * the run goes on at R+1 drawing the same samples it would have drawn.
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

struct region {
  const char *name;
  void *ptr;
  size_t bytes;
};

enum { REG_CONFIG, REG_PARAMS, REG_M, REG_V, REG_RNG, REG_CURSOR, REG_STEP, REG_COUNT };

struct trainer {
  struct train_flags flags;
  int rank;
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
         err == PT_EOVERLAP || err == PT_ETOOBIG;
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

/* This rank: --rank, else $PT_RANK, else $RANK, else 0. */
static int rank_resolve(const struct train_flags *f, int *rank)
{
  if (f->rank >= 0) {
    *rank = f->rank;
    return 0;
  }
  static const char *const vars[] = {"PT_RANK", "RANK"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
    const char *s = getenv(vars[i]);
    if (s == NULL || s[0] == '\0')
      continue;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > (1 << 20)) {
      fprintf(stderr, "pt-train: invalid %s='%s': expected a rank number\n", vars[i], s);
      return -EINVAL;
    }
    *rank = (int)v;
    return 0;
  }
  *rank = 0;
  return 0;
}

static void identity_fill(struct train_identity *id, const struct train_flags *f,
                          uint32_t hidden, int rank)
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
}

/* The data generator of a rank: the seed mixed with the rank. */
static uint64_t data_seed(uint64_t seed, int rank)
{
  return seed ^ (0xd1b54a32d192ed03ull * ((uint64_t)rank + 1));
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

/* Opens the client, registers the regions and restores. Returns the exit
 * status to leave with (after printing why), or 0 to train from *start. */
static int pt_setup(struct trainer *t, uint64_t *start, bool *restored, uint64_t *from)
{
  struct pt_options opts = {0};
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

  /* The bytes passed their checksums; they must also be this job's state. */
  struct train_identity want;
  identity_fill(&want, &t->flags, t->model.hidden, t->rank);
  if (memcmp(&want, &t->identity, sizeof(want)) != 0) {
    fprintf(stderr,
            "pt-train: cannot restore: the snapshot of step %" PRIu64
            " was taken with another configuration (seed, sizes, batch, rank or "
            "optimizer settings differ)\n",
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
  printf("restored step %" PRIu64 "\n", step);
  *start = step + 1;
  *restored = true;
  *from = step;
  return 0;
}

/* One training step; returns its loss. Registered memory is written only
 * between the fence and the snapshot. */
static double train_step(struct trainer *t, uint64_t step, double *fence_ms, double *snap_ms)
{
  struct train_model *m = &t->model;
  struct train_rng rng = t->rng;
  uint64_t cursor = t->cursor;
  int rc;

  train_batch_draw(&t->teacher, &rng, &cursor, m->batch, m->act[0], m->labels);
  double loss = train_model_backprop(m);

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
    } else {
      t->failed++;
      warn_snapshot(t, "cannot start snapshot", step, rc);
    }
  }
  return loss;
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
  if (rank_resolve(f, &t->rank) != 0)
    return EXIT_USAGE;

  rc = train_teacher_init(&t->teacher, f->seed, f->inputs, f->classes);
  if (rc != 0) {
    fprintf(stderr, "pt-train: cannot allocate the teacher: %s\n", pt_strerror(rc));
    return 1;
  }
  rc = train_model_init(&t->model, f->inputs, f->hidden, f->layers, f->classes, f->batch,
                        f->seed);
  if (rc != 0) {
    fprintf(stderr, "pt-train: cannot allocate a model of %llu bytes of state: %s\n",
            (unsigned long long)train_state_bytes(f->inputs, f->hidden, f->layers,
                                                  f->classes),
            pt_strerror(rc));
    goto out_teacher;
  }
  struct train_model *m = &t->model;
  t->adamw = (struct train_adamw){f->lr, f->beta1, f->beta2, f->eps, f->weight_decay};
  identity_fill(&t->identity, f, m->hidden, t->rank);
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
         "batch %u, seed %llu%s\n",
         t->rank, f->inputs, m->hidden, f->layers, f->classes, m->n_params,
         (double)state_bytes / (1 << 20), f->batch, (unsigned long long)f->seed,
         f->no_pt ? ", without pt" : "");

  uint64_t start = 1, from = 0;
  bool restored = false;
  if (!f->no_pt) {
    status = pt_setup(t, &start, &restored, &from);
    if (status != 0)
      goto out_client;
    status = 1;
  }
  if (!restored)
    printf("starting at step 1\n");

  uint64_t ran = 0, timed = 0;
  double step_ms = 0, fence_ms = 0, snap_ms = 0;
  for (uint64_t step = start; step <= f->steps; step++) {
    double fm = 0, sm = 0, t0 = now_ms();
    double loss = train_step(t, step, &fm, &sm);
    double dt = now_ms() - t0;
    ran++;
    if (ran > TIMING_WARMUP_STEPS) {
      timed++;
      step_ms += dt;
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

  uint64_t digest = state_digest(t);
  printf("digest %016" PRIx64 "\n", digest);
  if (f->timing) {
    if (timed == 0)
      printf("timing step_ms_avg=nan steps_timed=0\n");
    else
      printf("timing step_ms_avg=%.3f steps_timed=%" PRIu64
             " fence_ms_avg=%.3f snapshot_call_ms_avg=%.3f\n",
             step_ms / (double)timed, timed, fence_ms / (double)timed,
             snap_ms / (double)timed);
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
  pt_client_close(t->client, status == 0);
  t->client = NULL;
  train_model_release(&t->model);
out_teacher:
  train_teacher_release(&t->teacher);
  return status;
}
