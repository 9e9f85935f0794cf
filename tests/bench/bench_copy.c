/*
 * bench_copy.c — the copy figures of ptbench, all on the same region buffers
 * in the same process:
 *
 *   copy limit  the plain copies of bench_limit.c (glibc memcpy in one call
 *               and in 1 MiB pieces, streaming stores; on the caller's
 *               thread and on as many threads as the copy engine has) of
 *               every region into a pre-faulted slot of a real snapshot
 *               object; the fastest is the machine's limit for this path;
 *   snapshot    the copy engine (kern_save_start with crc=false, then
 *               kern_save_wait) into the same slot;
 *   snapshot+crc  libpt as a trainer runs it: pt_snapshot() then pt_fence()
 *               against a real `ptd smp --autocommit` child, with per-block
 *               CRC32C and the seal round trip;
 *   restore     pt_restore(): the committed slot back into the regions, every
 *               block's checksum verified, then the regions compared with
 *               what was snapshotted.
 *   first snapshot  a fresh client (as a restarted trainer opens one):
 *               pt_client_open, register, pt_snapshot, pt_fence, timed (its
 *               pt_restore in between, which libpt requires, is not); then
 *               its second snapshot, into the other slot. Its mapping of the
 *               object starts with empty page tables.
 *
 * The plain copies, the engine and libpt run interleaved, one of each per
 * repetition in a rotating order, so that the machine's background load
 * falls on all of them alike; one warm-up repetition is discarded (it maps
 * and faults the slots). Rates are the state size divided by the median
 * time.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_store.h"
#include "tests/bench/bench.h"

#define MAX_REGIONS 4
#define SMP_START_MS 10000
#define COPY_TIMEOUT_MS 120000
/* Timed per repetition: the plain copies, then the engine and libpt. */
#define FIG_ENGINE BENCH_LIMIT_COUNT
#define FIG_LIBPT (BENCH_LIMIT_COUNT + 1)
#define NFIG (BENCH_LIMIT_COUNT + 2)

struct copy_ctx {
  const struct bench_opts *o;
  unsigned char *state;
  uint64_t bytes;
  uint32_t nregions;
  struct snap_region_desc desc[MAX_REGIONS];
  unsigned char *reg_ptr[MAX_REGIONS];

  /* the raw engine's own snapshot object */
  char raw_name[256];
  struct snap_store *raw;
  struct kern_engine *eng;
  bool eng_registered;
  uint32_t raw_slot;
  uint64_t raw_gen;
  bool raw_acquired;
  struct kern_xfer xfer[MAX_REGIONS];
  struct bench_limit *limit; /* its copies go into the raw object's slot */

  /* libpt against a real SMP */
  char smp_name[256], smp_sock[512], smp_log[512];
  pid_t smp_pid;
  pt_client *client;
  uint64_t step;
};

/* True while connection attempts to a starting SMP are expected to fail. */
static bool libpt_quiet;

static void libpt_log(void *arg, int level, const char *msg)
{
  const struct bench_opts *o = arg;
  if (libpt_quiet)
    return;
  if (level <= PT_LOG_WARN || o->verbose)
    fprintf(stderr, "ptbench: libpt: %s\n", msg);
}

/* Cuts the state into a few regions, as a trainer registers parameters and
 * optimizer moments; every region but the last is a multiple of 4 KiB, so
 * the slot layout is the state, contiguous. */
static void regions_plan(struct copy_ctx *c)
{
  uint32_t n = c->bytes >= (uint64_t)MAX_REGIONS * (1u << 20) ? MAX_REGIONS : 1;
  uint64_t each = (c->bytes / n) & ~(uint64_t)4095;
  uint64_t off = 0;
  static const char *names[MAX_REGIONS] = { "params", "adam_m", "adam_v", "rest" };
  c->nregions = n;
  for (uint32_t i = 0; i < n; i++) {
    memset(&c->desc[i], 0, sizeof(c->desc[i]));
    snprintf(c->desc[i].name, sizeof(c->desc[i].name), "%s", n == 1 ? "state" : names[i]);
    c->desc[i].bytes = i + 1 == n ? c->bytes - off : each;
    c->desc[i].kind = 0;
    c->reg_ptr[i] = c->state + off;
    off += c->desc[i].bytes;
  }
}

static int raw_open(struct copy_ctx *c, char *errbuf, size_t errlen)
{
  const struct bench_opts *o = c->o;
  char job[64];
  int rc;

  snprintf(job, sizeof(job), "%sraw", o->job);
  rc = snap_store_name(c->raw_name, sizeof(c->raw_name), o->shm_prefix, job, 0);
  if (rc < 0) {
    snprintf(errbuf, errlen, "shm name for the raw copy: %s", pt_strerror(rc));
    return rc;
  }
  bench_cleanup_shm(c->raw_name);
  struct snap_params p = {
    .job = job, .rank = 0, .world = 1, .nslots = 2,
    .regions = c->desc, .nregions = c->nregions,
  };
  char why[256] = "";
  rc = snap_store_create(&c->raw, c->raw_name, &p, why, sizeof(why));
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot create '%s': %s%s%s", c->raw_name,
             pt_strerror(rc), why[0] ? ": " : "", why);
    return rc;
  }
  rc = snap_slot_acquire(c->raw, 1, &c->raw_slot, &c->raw_gen);
  if (rc != 0) {
    snprintf(errbuf, errlen, "no slot in '%s': %s", c->raw_name, pt_strerror(rc));
    return rc < 0 ? rc : PT_ESTATE;
  }
  c->raw_acquired = true;
  rc = kern_engine_new(&c->eng, o->copy_threads);
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot start the copy engine: %s", pt_strerror(rc));
    return rc;
  }
  rc = kern_host_register(c->eng, snap_store_base(c->raw), snap_store_total_bytes(c->raw));
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot register '%s' with the copy engine: %s",
             c->raw_name, pt_strerror(rc));
    return rc;
  }
  c->eng_registered = true;
  unsigned char *data = snap_slot_data(c->raw, c->raw_slot);
  for (uint32_t i = 0; i < c->nregions; i++) {
    const struct snap_region *sr = snap_store_region(c->raw, i);
    c->xfer[i] = (struct kern_xfer){
      .dst = data + sr->offset, .src = c->reg_ptr[i], .bytes = c->desc[i].bytes,
      .crcs = NULL, .src_mem = KERN_MEM_HOST, .dst_mem = KERN_MEM_HOST,
    };
  }
  /* The plain copies go the same way, on as many threads as the engine's. */
  struct bench_copy_seg seg[MAX_REGIONS];
  for (uint32_t i = 0; i < c->nregions; i++)
    seg[i] = (struct bench_copy_seg){ c->xfer[i].dst, c->xfer[i].src, c->xfer[i].bytes };
  rc = bench_limit_new(&c->limit, seg, c->nregions, o->copy_threads);
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot start %d thread(s) for the plain copies: %s",
             o->copy_threads, pt_strerror(rc));
    return rc;
  }
  return 0;
}

static void raw_close(struct copy_ctx *c)
{
  bench_limit_free(c->limit);
  c->limit = NULL;
  if (c->eng != NULL) {
    kern_save_wait(c->eng, COPY_TIMEOUT_MS);
    if (c->eng_registered)
      kern_host_unregister(c->eng, snap_store_base(c->raw));
    kern_engine_free(c->eng);
    c->eng = NULL;
  }
  if (c->raw != NULL) {
    if (c->raw_acquired)
      snap_slot_abort(c->raw, c->raw_slot, c->raw_gen);
    snap_store_close(c->raw);
    c->raw = NULL;
    snap_store_unlink(c->raw_name);
  }
}

static int time_raw(struct copy_ctx *c, double *secs, char *errbuf, size_t errlen)
{
  double t0 = bench_now();
  int rc = kern_save_start(c->eng, c->xfer, c->nregions, false);
  if (rc == 0)
    rc = kern_save_wait(c->eng, COPY_TIMEOUT_MS);
  *secs = bench_now() - t0;
  if (rc < 0)
    snprintf(errbuf, errlen, "copy engine save failed: %s", pt_strerror(rc));
  return rc;
}

/* Opens c->client, retrying while the SMP is not listening yet or still
 * closing the previous connection (a new HELLO may meet -EBUSY for a
 * moment), until the SMP exits or SMP_START_MS pass. */
static int client_open(struct copy_ctx *c, char *errbuf, size_t errlen)
{
  const struct bench_opts *o = c->o;
  struct pt_options po = {
    .size = sizeof(struct pt_options), .socket_path = c->smp_sock, .job = o->job, .rank = 0, .rank_set = true,
    .world = 1, .copy_threads = o->copy_threads, .timeout_ms = COPY_TIMEOUT_MS,
    .log_fn = libpt_log, .log_arg = (void *)o,
  };
  uint64_t deadline = bench_now_ms() + SMP_START_MS;

  for (;;) {
    int rc, st;
    libpt_quiet = true;
    rc = pt_client_open(&c->client, &po);
    libpt_quiet = false;
    if (rc == 0)
      return 0;
    if (!bench_child_is_alive(c->smp_pid, &st)) {
      char how[64];
      snprintf(errbuf, errlen, "'%s smp' %s before it accepted a connection", o->ptd,
               bench_wait_text(how, sizeof(how), st));
      c->smp_pid = 0;
      bench_log_tail(c->smp_log, 20);
      return -ECHILD;
    }
    if (bench_now_ms() >= deadline) {
      snprintf(errbuf, errlen, "cannot connect to the SMP at '%s' within %d ms: %s",
               c->smp_sock, SMP_START_MS, pt_strerror(rc));
      bench_log_tail(c->smp_log, 20);
      return rc;
    }
    bench_sleep_ms(20);
  }
}

static int smp_start(struct copy_ctx *c, char *errbuf, size_t errlen)
{
  const struct bench_opts *o = c->o;
  int rc;

  rc = snap_store_name(c->smp_name, sizeof(c->smp_name), o->shm_prefix, o->job, 0);
  if (rc < 0) {
    snprintf(errbuf, errlen, "shm name for the SMP: %s", pt_strerror(rc));
    return rc;
  }
  bench_cleanup_shm(c->smp_name);
  snprintf(c->smp_sock, sizeof(c->smp_sock), "%s/smp.0.sock", o->tmp_dir);
  snprintf(c->smp_log, sizeof(c->smp_log), "%s/smp.log", o->tmp_dir);
  char *argv[] = {
    (char *)o->ptd, "smp", "--job", (char *)o->job, "--rank", "0", "--world", "1",
    "--socket", c->smp_sock, "--slots", "2", "--shm-prefix", (char *)o->shm_prefix,
    "--autocommit", "--log-level", o->verbose ? "6" : "4", NULL,
  };
  rc = bench_child_spawn(&c->smp_pid, argv, c->smp_log, errbuf, errlen);
  if (rc < 0)
    return rc;

  /* The SMP listens once it has started: retry the connection until then. */
  return client_open(c, errbuf, errlen);
}

static int client_register(struct copy_ctx *c, char *errbuf, size_t errlen)
{
  for (uint32_t i = 0; i < c->nregions; i++) {
    int rc = pt_region_register(c->client, c->desc[i].name, c->reg_ptr[i],
                                c->desc[i].bytes, PT_MEM_HOST);
    if (rc < 0) {
      snprintf(errbuf, errlen, "pt_region_register('%s'): %s", c->desc[i].name,
               pt_strerror(rc));
      return rc;
    }
  }
  return 0;
}

/* pt_snapshot() + pt_fence(): OUT: the blocking time and the whole time. */
static int time_libpt(struct copy_ctx *c, double *block, double *total,
                      uint64_t *skipped, char *errbuf, size_t errlen)
{
  int rc;
  for (int tries = 0;; tries++) {
    double t0 = bench_now();
    rc = pt_snapshot(c->client, ++c->step);
    double t1 = bench_now();
    if (rc == PT_SKIPPED && tries < 200) {
      /* The SMP has not freed a slot yet; a trainer would carry on. */
      (*skipped)++;
      bench_sleep_ms(5);
      continue;
    }
    if (rc != 0) {
      snprintf(errbuf, errlen, "pt_snapshot(%llu): %s: %s",
               (unsigned long long)c->step, pt_strerror(rc), pt_last_error(c->client));
      return rc < 0 ? rc : PT_ESTATE;
    }
    rc = pt_fence(c->client);
    double t2 = bench_now();
    if (rc != 0) {
      snprintf(errbuf, errlen, "pt_fence after step %llu: %s: %s",
               (unsigned long long)c->step, pt_strerror(rc), pt_last_error(c->client));
      return rc < 0 ? rc : PT_ESTATE;
    }
    *block = t1 - t0;
    *total = t2 - t0;
    return 0;
  }
}

static int libpt_restore(struct copy_ctx *c, double *secs, char *errbuf, size_t errlen)
{
  uint64_t step = 0;
  double t0 = bench_now();
  int rc = pt_restore(c->client, &step);
  *secs = bench_now() - t0;
  if (rc != 0) {
    snprintf(errbuf, errlen, "pt_restore: %s: %s", pt_strerror(rc),
             pt_last_error(c->client));
    return rc < 0 ? rc : PT_ESTATE;
  }
  if (step != c->step) {
    snprintf(errbuf, errlen, "pt_restore returned step %llu, the last snapshot was %llu",
             (unsigned long long)step, (unsigned long long)c->step);
    return PT_ESTATE;
  }
  return 0;
}

/* A fresh client's first two snapshots (one per slot): the first timed
 * from pt_client_open to its pt_fence, as a restarted trainer pays it. */
static int first_snapshot_phase(struct copy_ctx *c, struct bench_copy_result *r,
                                char *errbuf, size_t errlen)
{
  double blk, tot;
  int rc;

  pt_client_close(c->client, false);
  c->client = NULL;
  double t0 = bench_now();
  rc = client_open(c, errbuf, errlen);
  if (rc == 0)
    rc = client_register(c, errbuf, errlen);
  double t_open = bench_now() - t0;
  /* A restarted trainer restores before it snapshots (libpt refuses a
   * snapshot over a committed step it never restored): the restore reads
   * the committed slot and is timed apart (restore_phase), so it is left
   * out here; the snapshot then writes the other slot, which this process
   * has never touched. */
  if (rc == 0) {
    uint64_t step = 0;
    rc = pt_restore(c->client, &step);
    if (rc != 0) {
      snprintf(errbuf, errlen, "fresh client: pt_restore: %s: %s",
               pt_strerror(rc), pt_last_error(c->client));
      rc = rc < 0 ? rc : PT_ESTATE;
    }
  }
  if (rc == 0)
    rc = time_libpt(c, &blk, &tot, &r->skipped, errbuf, errlen);
  if (rc < 0)
    return rc;
  r->first_snapshot_ms = (t_open + tot) * 1e3;
  rc = time_libpt(c, &blk, &tot, &r->skipped, errbuf, errlen);
  if (rc < 0)
    return rc;
  r->second_snapshot_ms = tot * 1e3;
  if (c->o->verbose)
    fprintf(stderr, "ptbench: fresh client: first snapshot %.1f ms (open to fence), "
            "second %.1f ms\n", r->first_snapshot_ms, r->second_snapshot_ms);
  return 0;
}

/* A fresh client, as a restarted trainer opens one. */
static int client_reopen(struct copy_ctx *c, char *errbuf, size_t errlen)
{
  int rc;

  pt_client_close(c->client, false);
  c->client = NULL;
  rc = client_open(c, errbuf, errlen);
  return rc < 0 ? rc : client_register(c, errbuf, errlen);
}

static int restore_phase(struct copy_ctx *c, struct bench_copy_result *r,
                         char *errbuf, size_t errlen)
{
  const struct bench_opts *o = c->o;
  int n = o->restore_reps;
  double *t = calloc((size_t)n, sizeof(double));
  double warm;
  int rc;

  if (t == NULL)
    return -ENOMEM;
  uint32_t crc_state = crc32c(c->state, c->bytes);
  /* Every restore must bring back exactly what was snapshotted: wipe the
   * regions first so a restore that copies nothing cannot pass. */
  memset(c->state, 0, c->bytes);

  /* A trainer restores once, after a restart, with a new client: that first
   * restore (hello, mapping the object, copy, verify) is reported apart; the
   * timed ones then restore again on the same, warm client. */
  rc = client_reopen(c, errbuf, errlen);
  if (rc < 0)
    goto out_free;
  rc = libpt_restore(c, &warm, errbuf, errlen);
  if (rc < 0)
    goto out_free;
  r->restore_fresh_client_ms = warm * 1e3;
  if (crc32c(c->state, c->bytes) != crc_state) {
    snprintf(errbuf, errlen, "the restored regions differ from the snapshotted ones");
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  for (int i = 0; i < n; i++) {
    memset(c->state, 0, c->bytes);
    rc = libpt_restore(c, &t[i], errbuf, errlen);
    if (rc < 0)
      goto out_free;
  }
  if (crc32c(c->state, c->bytes) != crc_state) {
    snprintf(errbuf, errlen, "the restored regions differ from the snapshotted ones");
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  r->restore_reps = n;
  r->restore_gbps = (double)c->bytes / bench_median(t, (size_t)n) / 1e9;
  rc = 0;
out_free:
  free(t);
  return rc;
}

void bench_state_free(void *state, uint64_t bytes)
{
  if (state != NULL)
    munmap(state, bytes);
}

int bench_copy_run(const struct bench_opts *o, struct bench_copy_result *r,
                   void **state, char *errbuf, size_t errlen)
{
  struct copy_ctx c;
  int reps = o->reps;
  double *t_lim = NULL, *t_raw = NULL, *t_blk = NULL, *t_tot = NULL, *t_fence = NULL;
  bool skip[NFIG] = { false };
  int rc;

  memset(&c, 0, sizeof(c));
  memset(r, 0, sizeof(*r));
  c.o = o;
  c.bytes = o->bytes;
  *state = NULL;

  c.state = mmap(NULL, c.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (c.state == MAP_FAILED) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot allocate %llu bytes of state: %s",
             (unsigned long long)c.bytes, strerror(errno));
    return rc;
  }
  *state = c.state;
  bench_fill(c.state, c.bytes, 42); /* also faults every page in */
  regions_plan(&c);
  r->regions = (int)c.nregions;

  /* t_lim[w * reps + i]: plain copy w in repetition i. */
  t_lim = calloc((size_t)reps * BENCH_LIMIT_COUNT, sizeof(double));
  t_raw = calloc((size_t)reps, sizeof(double));
  t_blk = calloc((size_t)reps, sizeof(double));
  t_tot = calloc((size_t)reps, sizeof(double));
  t_fence = calloc((size_t)reps, sizeof(double));
  if (!t_lim || !t_raw || !t_blk || !t_tot || !t_fence) {
    rc = -ENOMEM;
    snprintf(errbuf, errlen, "out of memory");
    goto out_free;
  }

  rc = raw_open(&c, errbuf, errlen);
  if (rc < 0)
    goto out_raw;
  rc = smp_start(&c, errbuf, errlen);
  if (rc < 0)
    goto out_smp;
  rc = client_register(&c, errbuf, errlen);
  if (rc < 0)
    goto out_smp;

  if (!bench_limit_has_stream())
    skip[BENCH_LIMIT_STREAM] = skip[BENCH_LIMIT_STREAM_THREADS] = true;
  for (int i = -1; i < reps; i++) {
    double lim[BENCH_LIMIT_COUNT] = { 0 }, raw = 0, blk = 0, tot = 0;
    int first = (i + NFIG) % NFIG; /* rotating order: no figure always runs first */
    for (int k = 0; k < NFIG; k++) {
      int f = (first + k) % NFIG;
      if (skip[f])
        continue;
      if (f == FIG_ENGINE)
        rc = time_raw(&c, &raw, errbuf, errlen);
      else if (f == FIG_LIBPT)
        rc = time_libpt(&c, &blk, &tot, &r->skipped, errbuf, errlen);
      else
        lim[f] = bench_limit_time(c.limit, f);
      if (rc < 0)
        goto out_smp;
    }
    if (i < 0)
      continue; /* warm-up */
    for (int w = 0; w < BENCH_LIMIT_COUNT; w++)
      t_lim[w * reps + i] = lim[w];
    t_raw[i] = raw;
    t_blk[i] = blk * 1e3;
    t_tot[i] = tot;
    t_fence[i] = (tot - blk) * 1e3;
    if (o->verbose) {
      fprintf(stderr, "ptbench: rep %d: plain copies", i);
      for (int w = 0; w < BENCH_LIMIT_COUNT; w++)
        if (!skip[w])
          fprintf(stderr, " %s %.1f", bench_limit_name(w), lim[w] * 1e3);
      fprintf(stderr, " ms; engine %.1f ms, libpt %.3f ms blocking + %.1f ms to fence\n",
              raw * 1e3, blk * 1e3, (tot - blk) * 1e3);
    }
  }
  r->reps = reps;
  r->limit_threads = o->copy_threads;
  r->copy_limit_gbps = 0;
  for (int w = 0; w < BENCH_LIMIT_COUNT; w++) {
    r->limit_gbps[w] = skip[w] ? NAN
                     : (double)c.bytes / bench_median(t_lim + (size_t)w * reps, (size_t)reps) / 1e9;
    if (!skip[w] && r->limit_gbps[w] > r->copy_limit_gbps) {
      r->copy_limit_gbps = r->limit_gbps[w];
      r->limit_which = w;
    }
  }
  r->memcpy_gbps = r->limit_gbps[BENCH_LIMIT_MEMCPY];
  r->snapshot_gbps = (double)c.bytes / bench_median(t_raw, (size_t)reps) / 1e9;
  r->snapshot_crc_gbps = (double)c.bytes / bench_median(t_tot, (size_t)reps) / 1e9;
  r->blocking_samples = reps;
  r->blocking_ms_p50 = bench_percentile(t_blk, (size_t)reps, 0.5);
  r->blocking_ms_p99 = bench_percentile(t_blk, (size_t)reps, 0.99);
  r->blocking_ms_max = t_blk[reps - 1]; /* sorted by the percentile */
  r->fence_ms_p50 = bench_median(t_fence, (size_t)reps);
  r->snapshot_ms = bench_median(t_tot, (size_t)reps) * 1e3;

  /* The raw object is no longer needed: give its memory back first. */
  raw_close(&c);
  rc = first_snapshot_phase(&c, r, errbuf, errlen);
  if (rc == 0)
    rc = restore_phase(&c, r, errbuf, errlen);

out_smp:
  if (c.client != NULL)
    pt_client_close(c.client, true);
  c.client = NULL;
  if (c.smp_pid > 0) {
    int st = bench_child_stop(c.smp_pid, 5000);
    if (rc == 0 && st >= 0 && !(WIFEXITED(st) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM))) {
      char how[64];
      fprintf(stderr, "ptbench: warning: the SMP %s\n", bench_wait_text(how, sizeof(how), st));
    }
    if (rc < 0)
      bench_log_tail(c.smp_log, 20);
  }
  if (c.smp_name[0])
    snap_store_unlink(c.smp_name);
out_raw:
  raw_close(&c);
out_free:
  free(t_lim);
  free(t_raw);
  free(t_blk);
  free(t_tot);
  free(t_fence);
  return rc;
}
