/*
 * ptbench — pt's benchmark: every figure beside the machine's own limit,
 * measured in one run on the same buffers.
 *
 *   copy_limit_gbps        the fastest plain copy of the state into a
 *                          pre-faulted shm slot (the limit of the copy
 *                          figures): glibc memcpy in one call and in 1 MiB
 *                          pieces and streaming stores, each on one thread
 *                          and on as many as the snapshot's copy threads
 *                          (copy_limit_<how>_gbps; copy_limit_method names
 *                          the fastest)
 *   memcpy_gbps            of those, glibc memcpy in one call on one thread
 *   snapshot_gbps          the copy engine, no checksums, into the same slot
 *   snapshot_crc_gbps      libpt: pt_snapshot + pt_fence against a real SMP,
 *                          with per-block CRC32C (what a trainer runs)
 *   snapshot_blocking_ms_* how long pt_snapshot() blocks the caller
 *   snapshot_ms            pt_snapshot + pt_fence, median (the steady state)
 *   first_snapshot_ms      a fresh client's first snapshot: open, register,
 *                          pt_snapshot, pt_fence (a restarted trainer's)
 *   restore_gbps           pt_restore(), every checksum verified
 *   file_ckpt_blocking_ms  a synchronous write + fsync of the same state
 *   step_overhead_ratio    pt-train step time, snapshot every step / no pt
 *   recovery_ms            kill -9 of pt-train under ptd node to the first
 *                          step the restarted trainer completes, the node's
 *                          backoff excluded (recovery_backoff_ms);
 *                          recovery_commit_ms to that step's commit
 *   ec_*, ec82_*, isal_raw_* the erasure-coding part (bench_ec.c), medians
 *                          over several fresh allocations of the buffers
 *   tcp_raw_gbps           plain sockets over loopback TCP, 1 MiB writes,
 *                          read into a pre-faulted shm ring as bulk frames
 *                          land (bench_net.c): the limit of the network part
 *   tcp_raw_hot_gbps       the same, read into one buffer that stays in the
 *                          cache: the network stack alone, for reference
 *   bulk_gbps              rpc bulk frames over an authenticated loopback TCP
 *                          connection into a pre-faulted shm buffer, CRC32C
 *                          checked (bench_bulk.c), against that limit
 *   bulk_ratio_median/_min/_max bulk_gbps / tcp_raw_gbps per round: the network
 *                          figures run in rounds (raw, then bulk), each
 *                          figure the median over rounds, and the target's
 *                          ratio the median of the rounds' ratios; in each
 *                          round either side is the faster of two transfers
 *                          (raw: its two read sizes)
 *
 * Copy rates are medians of interleaved repetitions; GB/s means 1e9 bytes
 * per second. The run starts its own SMP (and ptd node for the training
 * figure) with a private socket directory, job name and shm prefix, and
 * removes all of it on exit, on failure and on SIGINT/SIGTERM. Exit status:
 * 0 when everything was measured (targets missed are reported, not errors),
 * 1 when a measurement failed, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "common/conf.h"
#include "tests/bench/bench.h"
#include "tests/bench/bench_ec.h"

#define DEFAULT_BYTES ((uint64_t)1 << 30)
#define QUICK_BYTES ((uint64_t)64 << 20)

static const char usage[] =
    "usage: ptbench [options]\n"
    "\n"
    "Measures pt's snapshot, restore, erasure-coding and training-overhead\n"
    "figures beside the machine's own limits, in one run on the same buffers,\n"
    "and prints a table (or one JSON object with --json) with the issue's\n"
    "targets and whether each holds.\n"
    "\n"
    "  --bytes N          state size, suffixes K, M, G (default 1G)\n"
    "  --quick            a CI-sized run: 64 MiB, few repetitions (< 30 s)\n"
    "  --json             print exactly one JSON object on stdout\n"
    "  --copy-threads N   copy threads of libpt and the copy engine (default 1)\n"
    "  --reps N           interleaved copy repetitions (default 20; quick 30)\n"
    "  --file-dir DIR     where the file checkpoint is written (default /var/tmp)\n"
    "  --ptd PATH         ptd binary (default: next to ptbench)\n"
    "  --pt-train PATH    pt-train binary (default: next to ptbench)\n"
    "  --skip-train       leave out the pt-train figures (step overhead, recovery)\n"
    "  --only PARTS       measure only these parts, comma-separated: net, ec,\n"
    "                     copy, file (with copy), train, recovery, persist;\n"
    "                     the others"
    " are reported 'not measured'\n"
    "  --cluster          instead of the figures above: the commit across nodes\n"
    "                     on a real ptd controller (3 ptd nodes running pt-train,\n"
    "                     and 10, 100, 1000 simulated nodes, each beside the\n"
    "                     kernel floor of the same traffic); with --quick\n"
    "                     fewer steps (< 1 min)\n"
    "  --cluster-step-ms MS  the simulated nodes seal a step every MS ms, or\n"
    "                     when the last committed if later (default 100)\n"
    "  -v, --verbose      progress and per-repetition times on stderr\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 everything measured (missed targets are reported, not\n"
    "errors), 1 a measurement failed, 2 bad usage. With --cluster, a figure\n"
    "that a controller or node without jobs cannot give is reported 'not\n"
    "measured' with the reason, and is not a failure.\n";

enum {
  OPT_BYTES = 256, OPT_QUICK, OPT_JSON, OPT_THREADS, OPT_REPS, OPT_FILE_DIR,
  OPT_PTD, OPT_TRAIN, OPT_SKIP_TRAIN, OPT_CLUSTER, OPT_CLUSTER_STEP, OPT_ONLY,
};

/* The parts of a run (--only). */
enum {
  PART_NET = 1u << 0, PART_EC = 1u << 1, PART_COPY = 1u << 2,
  PART_FILE = 1u << 3, PART_TRAIN = 1u << 4, PART_RECOVERY = 1u << 5,
  PART_PERSIST = 1u << 6,
  PART_ALL = (1u << 7) - 1,
};

/* "net,ec,..." -> a PART_* mask; 0 when a name is unknown. */
static unsigned parse_parts(const char *list)
{
  static const struct { const char *name; unsigned bit; } names[] = {
    { "net", PART_NET }, { "ec", PART_EC }, { "copy", PART_COPY },
    { "file", PART_FILE | PART_COPY }, { "train", PART_TRAIN },
    { "recovery", PART_RECOVERY }, { "persist", PART_PERSIST },
  };
  unsigned mask = 0;
  const char *p = list;

  while (*p != '\0') {
    size_t n = strcspn(p, ",");
    unsigned bit = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (strlen(names[i].name) == n && strncmp(p, names[i].name, n) == 0)
        bit = names[i].bit;
    if (bit == 0)
      return 0;
    mask |= bit;
    p += n;
    if (*p == ',')
      p++;
  }
  return mask;
}

static const struct option options[] = {
  { "bytes", required_argument, NULL, OPT_BYTES },
  { "quick", no_argument, NULL, OPT_QUICK },
  { "json", no_argument, NULL, OPT_JSON },
  { "copy-threads", required_argument, NULL, OPT_THREADS },
  { "reps", required_argument, NULL, OPT_REPS },
  { "file-dir", required_argument, NULL, OPT_FILE_DIR },
  { "ptd", required_argument, NULL, OPT_PTD },
  { "pt-train", required_argument, NULL, OPT_TRAIN },
  { "skip-train", no_argument, NULL, OPT_SKIP_TRAIN },
  { "only", required_argument, NULL, OPT_ONLY },
  { "cluster", no_argument, NULL, OPT_CLUSTER },
  { "cluster-step-ms", required_argument, NULL, OPT_CLUSTER_STEP },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

/* Everything one run measured; NAN where a figure was not measured. */
struct results {
  char cpu[128];
  long cores;
  struct bench_copy_result copy;
  struct bench_file_result file;
  struct bench_net_result net;
  struct bench_train_result train;
  struct bench_recover_result recover;
  struct bench_ec_result ec;
  struct bench_persist_result persist;
  bool have_copy, have_file, have_net, have_train, have_ec, have_recover;
  bool have_persist;
  struct bench_bulk_result bulk;
  bool have_bulk;
  /* bulk_gbps / tcp_raw_gbps per round (the median is the target's), and
   * the spread over the rounds */
  double bulk_ratio, bulk_ratio_lo, bulk_ratio_hi;
  int net_rounds;
  double blocking_vs_file;
  double elapsed_s;
};

struct target {
  const char *key;      /* JSON name of the ratio */
  const char *label;    /* human row */
  double value;
  bool at_least;        /* value >= bound, else value <= bound */
  double bound;
  const char *note;     /* what the ratio divides */
};

static int parse_int(const char *arg, const char *flag, int lo, int hi, int *out)
{
  char *end;
  errno = 0;
  long v = strtol(arg, &end, 10);
  if (errno != 0 || end == arg || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "ptbench: invalid value '%s' for --%s: expected an integer "
            "from %d to %d\n", arg, flag, lo, hi);
    return -EINVAL;
  }
  *out = (int)v;
  return 0;
}

/* "<dir of /proc/self/exe>/name". */
static int beside_self(char *out, size_t len, const char *name)
{
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return -errno;
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash == NULL)
    return -ENOENT;
  *slash = '\0';
  if ((size_t)snprintf(out, len, "%s/%s", self, name) >= len)
    return -ENAMETOOLONG;
  return 0;
}

static size_t targets_fill(const struct results *res, struct target *t)
{
  const struct bench_copy_result *c = &res->copy;
  const struct bench_ec_result *e = &res->ec;
  size_t n = 0;
  double nan_ = NAN;

  t[n++] = (struct target){ "snapshot_vs_copy_limit", "snapshot (no CRC) / copy limit",
                            res->have_copy ? c->snapshot_gbps / c->copy_limit_gbps : nan_,
                            true, 0.9, "snapshot_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "snapshot_crc_vs_copy_limit", "snapshot+CRC / copy limit",
                            res->have_copy ? c->snapshot_crc_gbps / c->copy_limit_gbps : nan_,
                            true, 0.5, "snapshot_crc_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "snapshot_blocking_ms", "pt_snapshot() blocking p50",
                            res->have_copy ? c->blocking_ms_p50 : nan_, false, 1.0,
                            "snapshot_blocking_ms_p50, ms" };
  t[n++] = (struct target){ "restore_vs_copy_limit", "restore / copy limit",
                            res->have_copy ? c->restore_gbps / c->copy_limit_gbps : nan_,
                            true, 0.5, "restore_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "step_overhead", "step time with/without pt",
                            res->have_train ? res->train.step_overhead_ratio : nan_,
                            false, 1.05, "step_overhead_ratio" };
  t[n++] = (struct target){ "ec_encode_vs_isal_raw", "EC 4+2 encode / raw ISA-L",
                            res->have_ec ? e->ec_encode_ratio : nan_,
                            true, 0.9,
                            "median over allocations of ec_encode_gbps / isal_raw_encode_gbps" };
  t[n++] = (struct target){ "ec_decode_vs_encode", "EC 4+2 decode / encode",
                            res->have_ec ? e->ec_decode_ratio : nan_,
                            true, 0.8,
                            "median over allocations of ec_decode_gbps / ec_encode_gbps" };
  t[n++] = (struct target){ "ec82_encode_vs_isal_raw", "EC 8+2 encode / raw ISA-L",
                            res->have_ec ? e->ec82_encode_ratio : nan_,
                            true, 0.9,
                            "median over allocations of ec82_encode_gbps / ec82_isal_raw_encode_gbps" };
  t[n++] = (struct target){ "ec82_decode_vs_encode", "EC 8+2 decode / encode",
                            res->have_ec ? e->ec82_decode_ratio : nan_,
                            true, 0.8,
                            "median over allocations of ec82_decode_gbps / ec82_encode_gbps" };
  t[n++] = (struct target){ "first_snapshot_vs_steady", "first snapshot / steady",
                            res->have_copy ? c->first_snapshot_ms / c->snapshot_ms : nan_,
                            false, 1.5, "first_snapshot_ms / snapshot_ms" };
  t[n++] = (struct target){ "recovery_ms", "kill -9 to next completed step",
                            res->have_recover ? res->recover.recovery_ms : nan_, false, 1000,
                            "recovery_ms (backoff excluded), ms" };
  t[n++] = (struct target){ "bulk_vs_tcp_raw", "bulk frames / raw TCP",
                            res->have_bulk && res->have_net ? res->bulk_ratio : nan_,
                            true, 0.8, "bulk_gbps / tcp_raw_gbps" };
  const struct bench_persist_result *p = &res->persist;
  t[n++] = (struct target){ "persist_vs_raw", "flush / raw O_DIRECT write",
                            res->have_persist ? p->persist_ratio : nan_, true, 0.8,
                            "median over rounds of persist_gbps / persist_raw_gbps" };
  t[n++] = (struct target){ "restore_disk_vs_read_raw", "restore from disk / raw read",
                            res->have_persist ? p->restore_ratio : nan_, true, 0.8,
                            "median over rounds of restore_disk_gbps / read_raw_gbps" };
  t[n++] = (struct target){ "persist_step_overhead", "step time with/without a flush",
                            res->have_persist ? p->persist_step_overhead_ratio : nan_,
                            false, 1.05, "persist_step_overhead_ratio" };
  return n;
}

/* The target named key (every key is filled by targets_fill). */
static const struct target *target_find(const struct target *t, size_t n,
                                        const char *key)
{
  for (size_t i = 0; i < n; i++)
    if (strcmp(t[i].key, key) == 0)
      return &t[i];
  return NULL;
}

static bool target_ok(const struct target *t)
{
  if (!isfinite(t->value))
    return false;
  return t->at_least ? t->value >= t->bound : t->value <= t->bound;
}

/* ---- JSON ---- */

struct json {
  FILE *f;
  bool first;
};

static void json_key(struct json *j, const char *k)
{
  fprintf(j->f, "%s\n  \"%s\": ", j->first ? "" : ",", k);
  j->first = false;
}

static void json_num(struct json *j, const char *k, double v)
{
  json_key(j, k);
  if (isfinite(v))
    fprintf(j->f, "%.6g", v);
  else
    fputs("null", j->f);
}

static void json_u64(struct json *j, const char *k, uint64_t v)
{
  json_key(j, k);
  fprintf(j->f, "%llu", (unsigned long long)v);
}

static void json_bool(struct json *j, const char *k, bool v)
{
  json_key(j, k);
  fputs(v ? "true" : "false", j->f);
}

static void json_str_val(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void json_str(struct json *j, const char *k, const char *s)
{
  json_key(j, k);
  json_str_val(j->f, s);
}

static void print_json(const struct bench_opts *o, const struct results *res,
                       const char *error)
{
  const struct bench_copy_result *c = &res->copy;
  struct json j = { stdout, true };
  double nan_ = NAN;
  struct target t[16];
  size_t nt = targets_fill(res, t);

  fputc('{', stdout);
  json_bool(&j, "complete", error == NULL);
  if (error != NULL)
    json_str(&j, "error", error);
  json_str(&j, "cpu", res->cpu);
  json_u64(&j, "cores", (uint64_t)res->cores);
  json_u64(&j, "bytes", o->bytes);
  json_u64(&j, "copy_threads", (uint64_t)o->copy_threads);
  json_str(&j, "backend", kern_backend_name());
  json_str(&j, "stat", "median");
  json_str(&j, "units", "GB/s = 1e9 bytes per second; ms = milliseconds");

  json_num(&j, "copy_limit_gbps", res->have_copy ? c->copy_limit_gbps : nan_);
  json_str(&j, "copy_limit_method", res->have_copy ? bench_limit_name(c->limit_which) : "");
  json_u64(&j, "copy_limit_threads", (uint64_t)c->limit_threads);
  for (int w = 0; w < BENCH_LIMIT_COUNT; w++) {
    char key[64];
    snprintf(key, sizeof(key), "copy_limit_%s_gbps", bench_limit_name(w));
    json_num(&j, key, res->have_copy ? c->limit_gbps[w] : nan_);
  }
  json_num(&j, "memcpy_gbps", res->have_copy ? c->memcpy_gbps : nan_);
  json_num(&j, "snapshot_gbps", res->have_copy ? c->snapshot_gbps : nan_);
  json_num(&j, "snapshot_crc_gbps", res->have_copy ? c->snapshot_crc_gbps : nan_);
  json_num(&j, "snapshot_blocking_ms_p50", res->have_copy ? c->blocking_ms_p50 : nan_);
  json_num(&j, "snapshot_blocking_ms_p99", res->have_copy ? c->blocking_ms_p99 : nan_);
  json_num(&j, "snapshot_blocking_ms_max", res->have_copy ? c->blocking_ms_max : nan_);
  json_num(&j, "snapshot_fence_ms_p50", res->have_copy ? c->fence_ms_p50 : nan_);
  json_num(&j, "snapshot_ms", res->have_copy ? c->snapshot_ms : nan_);
  json_num(&j, "first_snapshot_ms", res->have_copy ? c->first_snapshot_ms : nan_);
  json_num(&j, "second_snapshot_ms", res->have_copy ? c->second_snapshot_ms : nan_);
  json_u64(&j, "snapshot_blocking_samples", (uint64_t)c->blocking_samples);
  json_u64(&j, "snapshot_skipped", c->skipped);
  json_u64(&j, "copy_reps", (uint64_t)c->reps);
  json_u64(&j, "regions", (uint64_t)c->regions);
  json_num(&j, "restore_gbps", res->have_copy ? c->restore_gbps : nan_);
  json_u64(&j, "restore_reps", (uint64_t)c->restore_reps);
  json_num(&j, "restore_fresh_client_ms", res->have_copy ? c->restore_fresh_client_ms : nan_);

  json_num(&j, "file_ckpt_blocking_ms", res->have_file ? res->file.blocking_ms : nan_);
  json_num(&j, "file_ckpt_write_ms", res->have_file ? res->file.write_ms : nan_);
  json_num(&j, "file_ckpt_fsync_ms", res->have_file ? res->file.fsync_ms : nan_);
  json_str(&j, "file_dir", o->file_dir);
  json_str(&j, "file_fs", res->file.fs_type);
  json_num(&j, "snapshot_blocking_vs_file", res->blocking_vs_file);

  json_num(&j, "step_overhead_ratio", res->have_train ? res->train.step_overhead_ratio : nan_);
  json_num(&j, "train_step_ms_pt", res->have_train ? res->train.step_ms_pt : nan_);
  json_num(&j, "train_step_ms_nopt", res->have_train ? res->train.step_ms_nopt : nan_);
  json_num(&j, "train_fence_ms_avg", res->have_train ? res->train.fence_ms : nan_);
  json_num(&j, "train_snapshot_call_ms_avg", res->have_train ? res->train.snapshot_call_ms : nan_);
  json_u64(&j, "train_state_mb", (uint64_t)res->train.state_mb);
  json_u64(&j, "train_steps", (uint64_t)res->train.steps);
  const struct bench_recover_result *rv = &res->recover;
  json_num(&j, "recovery_ms", res->have_recover ? rv->recovery_ms : nan_);
  json_num(&j, "recovery_commit_ms", res->have_recover ? rv->commit_ms : nan_);
  json_num(&j, "recovery_backoff_ms", res->have_recover ? rv->backoff_ms : nan_);
  json_num(&j, "recovery_total_ms", res->have_recover ? rv->total_ms : nan_);
  json_num(&j, "recovery_step_ms", res->have_recover ? rv->step_ms : nan_);
  json_num(&j, "recovery_node_ms", res->have_recover ? rv->node_ms : nan_);
  json_num(&j, "recovery_trainer_ms", res->have_recover ? rv->trainer_ms : nan_);
  json_u64(&j, "recovery_state_mb", (uint64_t)rv->state_mb);

  const struct bench_persist_result *pp = &res->persist;
  json_num(&j, "persist_gbps", res->have_persist ? pp->persist_gbps : nan_);
  json_num(&j, "persist_raw_gbps", res->have_persist ? pp->persist_raw_gbps : nan_);
  json_num(&j, "restore_disk_gbps", res->have_persist ? pp->restore_disk_gbps : nan_);
  json_num(&j, "read_raw_gbps", res->have_persist ? pp->read_raw_gbps : nan_);
  json_num(&j, "persist_step_overhead_ratio",
           res->have_persist ? pp->persist_step_overhead_ratio : nan_);
  json_num(&j, "persist_step_ms", res->have_persist ? pp->step_ms_persist : nan_);
  json_num(&j, "persist_step_ms_without", res->have_persist ? pp->step_ms_pt : nan_);
  json_num(&j, "persist_vs_raw_median", res->have_persist ? pp->persist_ratio : nan_);
  json_num(&j, "restore_disk_vs_read_raw_median",
           res->have_persist ? pp->restore_ratio : nan_);
  json_u64(&j, "persist_bytes", pp->bytes);
  json_u64(&j, "persist_rounds", (uint64_t)pp->rounds);
  json_str(&j, "persist_io", !res->have_persist ? "-" : pp->direct ? "O_DIRECT" : "buffered");

  json_num(&j, "ec_encode_gbps", res->have_ec ? res->ec.ec_encode_gbps : nan_);
  json_num(&j, "ec_decode_gbps", res->have_ec ? res->ec.ec_decode_gbps : nan_);
  json_num(&j, "isal_raw_encode_gbps", res->have_ec ? res->ec.isal_raw_encode_gbps : nan_);
  json_num(&j, "ec82_encode_gbps", res->have_ec ? res->ec.ec82_encode_gbps : nan_);
  json_num(&j, "ec82_decode_gbps", res->have_ec ? res->ec.ec82_decode_gbps : nan_);
  json_num(&j, "ec82_isal_raw_encode_gbps", res->have_ec ? res->ec.ec82_isal_raw_encode_gbps : nan_);
  json_str(&j, "ec_rate_bytes", "data bytes (parity not counted)");
  json_u64(&j, "ec_chunk_bytes", res->ec.chunk_bytes);
  json_num(&j, "ec_encode_vs_isal_raw_median", res->have_ec ? res->ec.ec_encode_ratio : nan_);
  json_num(&j, "ec_decode_vs_encode_median", res->have_ec ? res->ec.ec_decode_ratio : nan_);
  json_num(&j, "ec82_encode_vs_isal_raw_median", res->have_ec ? res->ec.ec82_encode_ratio : nan_);
  json_num(&j, "ec82_decode_vs_encode_median", res->have_ec ? res->ec.ec82_decode_ratio : nan_);
  json_u64(&j, "ec_allocations", (uint64_t)res->ec.allocations);
  json_u64(&j, "ec_reps", (uint64_t)res->ec.reps);
  json_num(&j, "ec_decode_vs_encode_min", res->have_ec ? res->ec.ec_decode_ratio_min : nan_);
  json_num(&j, "ec_decode_vs_encode_max", res->have_ec ? res->ec.ec_decode_ratio_max : nan_);
  json_num(&j, "ec82_decode_vs_encode_min", res->have_ec ? res->ec.ec82_decode_ratio_min : nan_);
  json_num(&j, "ec82_decode_vs_encode_max", res->have_ec ? res->ec.ec82_decode_ratio_max : nan_);

  json_num(&j, "tcp_raw_gbps", res->have_net ? res->net.tcp_raw_gbps : nan_);
  json_num(&j, "tcp_raw_hot_gbps", res->have_net ? res->net.tcp_raw_hot_gbps : nan_);
  json_num(&j, "bulk_gbps", res->have_bulk ? res->bulk.bulk_gbps : nan_);
  json_num(&j, "bulk_ratio_median", res->have_bulk ? res->bulk_ratio : nan_);
  json_num(&j, "bulk_ratio_min", res->have_bulk ? res->bulk_ratio_lo : nan_);
  json_num(&j, "bulk_ratio_max", res->have_bulk ? res->bulk_ratio_hi : nan_);
  json_num(&j, "elapsed_s", res->elapsed_s);

  json_key(&j, "targets");
  fputc('{', stdout);
  bool all_ok = true;
  for (size_t i = 0; i < nt; i++) {
    fprintf(stdout, "%s\n    \"%s\": ", i ? "," : "", t[i].key);
    if (isfinite(t[i].value))
      fprintf(stdout, "%.6g", t[i].value);
    else
      fputs("null", stdout);
    fprintf(stdout, ",\n    \"%s_target\": \"%s %g\"", t[i].key, t[i].at_least ? ">=" : "<=",
            t[i].bound);
    fprintf(stdout, ",\n    \"%s_ok\": %s", t[i].key, target_ok(&t[i]) ? "true" : "false");
    all_ok = all_ok && target_ok(&t[i]);
  }
  fputs("\n  }", stdout);
  json_bool(&j, "targets_all_ok", all_ok);
  fputs("\n}\n", stdout);
}

/* ---- the table ---- */

static void row(const char *label, const char *measured, const char *limit, double ratio,
                const char *target, const char *result)
{
  char r[32];
  if (isfinite(ratio))
    snprintf(r, sizeof(r), ratio >= 100 ? "%.0fx" : "%.2f", ratio);
  else
    snprintf(r, sizeof(r), "-");
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", label, measured, limit, r, target, result);
}

static const char *fmt(char *buf, size_t len, const char *f, double v)
{
  if (isfinite(v))
    snprintf(buf, len, f, v);
  else
    snprintf(buf, len, "-");
  return buf;
}

static void target_row(const struct target *t, const char *label, const char *measured,
                       const char *limit)
{
  char tg[32];
  bool is_ms = strstr(t->note, ", ms") != NULL; /* a time, not a ratio */
  snprintf(tg, sizeof(tg), "%s %g%s", t->at_least ? ">=" : "<=", t->bound, is_ms ? " ms" : "");
  row(label, measured, limit, is_ms ? NAN : t->value, tg,
      !isfinite(t->value) ? "not measured" : target_ok(t) ? "ok" : "MISS");
}

static void print_table(const struct bench_opts *o, const struct results *res,
                        const char *error)
{
  const struct bench_copy_result *c = &res->copy;
  struct target t[16];
  char b1[32], b2[32], sz[32];
  size_t nt = targets_fill(res, t);

  printf("ptbench: %s of state in %d region(s), %d copy thread(s), %s backend\n",
         bench_fmt_bytes(sz, sizeof(sz), o->bytes), c->regions, o->copy_threads,
         kern_backend_name());
  printf("cpu: %s, %ld cores\n", res->cpu, res->cores);
  printf("rates: GB/s = 1e9 B/s, median of %d interleaved repetitions (plain copies, "
         "engine, libpt) after one warm-up; restore: median of %d\n", c->reps, c->restore_reps);
  printf("copy limit: the fastest plain copy into the same pre-faulted shm slot (glibc "
         "memcpy in one call and in 1 MiB pieces, streaming stores; on the caller's thread and on %d thread(s) of its own); "
         "snapshots run on %d copy thread(s), restore on those and the caller's\n",
         c->limit_threads, o->copy_threads);
  printf("EC: one thread, 4 MiB chunks, data bytes; %d fresh allocations x %d repetitions, "
         "median over allocations; EC ratios paired within an allocation\n\n",
         res->ec.allocations, res->ec.reps);
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", "figure", "measured", "limit", "ratio",
         "target", "result");

  char mc[96];
  snprintf(mc, sizeof(mc), "%s GB/s copy limit",
           fmt(b2, sizeof(b2), "%.2f", res->have_copy ? c->copy_limit_gbps : NAN));
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->copy_limit_gbps : NAN);
  row("copy limit (fastest below)", b1, res->have_copy ? bench_limit_text(c->limit_which) : "-",
      NAN, "", "");
  for (int w = 0; w < BENCH_LIMIT_COUNT; w++) {
    char lab[64], how[64];
    bool threads = w >= BENCH_LIMIT_MEMCPY_THREADS;
    snprintf(lab, sizeof(lab), "  %s", bench_limit_name(w));
    snprintf(how, sizeof(how), "(%d thread%s)", threads ? c->limit_threads : 1,
             threads && c->limit_threads != 1 ? "s" : "");
    fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->limit_gbps[w] : NAN);
    row(lab, b1, how, NAN, "", "");
  }
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->snapshot_gbps : NAN);
  target_row(&t[0], "snapshot, no checksums", b1, mc);
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->snapshot_crc_gbps : NAN);
  target_row(&t[1], "snapshot + CRC32C (libpt)", b1, mc);
  fmt(b1, sizeof(b1), "%.3f ms", res->have_copy ? c->blocking_ms_p50 : NAN);
  target_row(&t[2], "pt_snapshot() blocks, p50", b1, "-");
  fmt(b1, sizeof(b1), "%.3f ms", res->have_copy ? c->blocking_ms_p99 : NAN);
  row("pt_snapshot() blocks, p99", b1, "-", NAN, "", "");
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->restore_gbps : NAN);
  target_row(&t[3], "restore, checksums verified", b1, mc);
  fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->restore_fresh_client_ms : NAN);
  row("restore by a fresh client", b1, "(hello, map, copy, verify)", NAN, "", "");
  char ss[96];
  snprintf(ss, sizeof(ss), "%s snapshot_ms (steady)",
           fmt(b2, sizeof(b2), "%.1f ms", res->have_copy ? c->snapshot_ms : NAN));
  fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->first_snapshot_ms : NAN);
  target_row(&t[9], "first snapshot, fresh client", b1, ss);
  fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->second_snapshot_ms : NAN);
  row("  its second (other slot)", b1, "", NAN, "", "");
  char fl[96];
  snprintf(fl, sizeof(fl), "%s p50 snapshot block",
           fmt(b2, sizeof(b2), "%.3f ms", res->have_copy ? c->blocking_ms_p50 : NAN));
  fmt(b1, sizeof(b1), "%.1f ms", res->have_file ? res->file.blocking_ms : NAN);
  char lab[64];
  snprintf(lab, sizeof(lab), "file ckpt + fsync (%s)", res->file.fs_type[0] ? res->file.fs_type : "-");
  row(lab, b1, fl, res->blocking_vs_file, "", res->have_file ? "(baseline today)" : "");
  fmt(b1, sizeof(b1), "%.2f ms/step", res->have_train ? res->train.step_ms_pt : NAN);
  snprintf(fl, sizeof(fl), "%s no pt",
           fmt(b2, sizeof(b2), "%.2f ms/step", res->have_train ? res->train.step_ms_nopt : NAN));
  target_row(&t[4], "pt-train, snapshot every step", b1, fl);
  if (res->have_train)
    snprintf(b1, sizeof(b1), "%.2f+%.2f ms", res->train.fence_ms, res->train.snapshot_call_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  row("  fence + pt_snapshot per step", b1, "", NAN, "", "");
  const struct bench_recover_result *rv = &res->recover;
  fmt(b1, sizeof(b1), "%.1f ms", res->have_recover ? rv->recovery_ms : NAN);
  char rl[96];
  snprintf(rl, sizeof(rl), "%s state, batch 1", bench_fmt_bytes(b2, sizeof(b2),
           (uint64_t)rv->state_mb << 20));
  target_row(&t[10], "recovery: kill -9 to next step", b1, rl);
  fmt(b1, sizeof(b1), "%.1f ms", res->have_recover ? rv->commit_ms : NAN);
  row("  to that step's commit", b1, "", NAN, "", "");
  if (res->have_recover)
    snprintf(b1, sizeof(b1), "%.0f+%.1f ms", rv->backoff_ms, rv->step_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  row("  backoff (excluded) + 1 step", b1, "", NAN, "", "");
  if (res->have_recover)
    snprintf(b1, sizeof(b1), "%.0f+%.0f ms", rv->node_ms, rv->trainer_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  row("  node + new trainer", b1, "(restore point; start..step)", NAN, "", "");

  const char *ec_lab[4] = { "EC 4+2 encode (data bytes)", "EC 4+2 decode (data bytes)",
                            "EC 8+2 encode (data bytes)", "EC 8+2 decode (data bytes)" };
  const struct bench_ec_result *e = &res->ec;
  double ec_val[4] = { e->ec_encode_gbps, e->ec_decode_gbps, e->ec82_encode_gbps,
                       e->ec82_decode_gbps };
  double ec_lim[4] = { e->isal_raw_encode_gbps, e->ec_encode_gbps,
                       e->ec82_isal_raw_encode_gbps, e->ec82_encode_gbps };
  const char *ec_what[4] = { "raw ISA-L", "encode", "raw ISA-L", "encode" };
  for (int i = 0; i < 4; i++) {
    fmt(b1, sizeof(b1), "%.2f GB/s", res->have_ec ? ec_val[i] : NAN);
    snprintf(fl, sizeof(fl), "%s GB/s %s",
             fmt(b2, sizeof(b2), "%.2f", res->have_ec ? ec_lim[i] : NAN), ec_what[i]);
    target_row(&t[5 + i], ec_lab[i], b1, fl);
    if (i % 2 == 1) { /* after each decode row: its spread over the allocations */
      double lo = i == 1 ? e->ec_decode_ratio_min : e->ec82_decode_ratio_min;
      double hi = i == 1 ? e->ec_decode_ratio_max : e->ec82_decode_ratio_max;
      if (res->have_ec)
        snprintf(b1, sizeof(b1), "%.2f-%.2f", lo, hi);
      else
        snprintf(b1, sizeof(b1), "-");
      snprintf(fl, sizeof(fl), "over %d allocations", e->allocations);
      row("  decode/encode per allocation", b1, fl, NAN, "", "");
    }
  }
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_net ? res->net.tcp_raw_gbps : NAN);
  row("TCP raw (loopback, into shm)", b1, "(network limit)", NAN, "", "");
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_net ? res->net.tcp_raw_hot_gbps : NAN);
  row("  into a cache-hot buffer", b1, "(for reference)", NAN, "", "");
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_bulk ? res->bulk.bulk_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s raw TCP",
           fmt(b2, sizeof(b2), "%.2f", res->have_net ? res->net.tcp_raw_gbps : NAN));
  target_row(target_find(t, nt, "bulk_vs_tcp_raw"), "bulk frames, rpc, auth TCP", b1, fl);
  if (res->have_bulk)
    snprintf(b1, sizeof(b1), "%.2f-%.2f", res->bulk_ratio_lo, res->bulk_ratio_hi);
  else
    snprintf(b1, sizeof(b1), "-");
  snprintf(fl, sizeof(fl), "over %d paired rounds", res->net_rounds);
  row("  bulk/raw per round", b1, fl, NAN, "", "");

  const struct bench_persist_result *pp = &res->persist;
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_persist ? pp->persist_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s O_DIRECT write",
           fmt(b2, sizeof(b2), "%.2f", res->have_persist ? pp->persist_raw_gbps : NAN));
  target_row(target_find(t, nt, "persist_vs_raw"), "persist a step (one rank)", b1, fl);
  fmt(b1, sizeof(b1), "%.2f GB/s", res->have_persist ? pp->restore_disk_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s O_DIRECT read",
           fmt(b2, sizeof(b2), "%.2f", res->have_persist ? pp->read_raw_gbps : NAN));
  target_row(target_find(t, nt, "restore_disk_vs_read_raw"), "restore from disk, verified",
             b1, fl);
  fmt(b1, sizeof(b1), "%.2f ms/step", res->have_persist ? pp->step_ms_persist : NAN);
  snprintf(fl, sizeof(fl), "%s no flush",
           fmt(b2, sizeof(b2), "%.2f ms/step", res->have_persist ? pp->step_ms_pt : NAN));
  target_row(target_find(t, nt, "persist_step_overhead"), "pt-train beside a flush", b1, fl);

  int missed = 0, unmeasured = 0;

  for (size_t i = 0; i < nt; i++) {
    missed += isfinite(t[i].value) && !target_ok(&t[i]);
    unmeasured += !isfinite(t[i].value);
  }
  char what[64];
  if (error != NULL)
    snprintf(what, sizeof(what), "run INCOMPLETE");
  else if (unmeasured > 0)
    snprintf(what, sizeof(what), "%d target(s) not measured (--only)", unmeasured);
  else
    snprintf(what, sizeof(what), "all figures measured");
  printf("\n%d target(s) missed; %s in %.1f s\n", missed, what, res->elapsed_s);
  if (error != NULL)
    printf("error: %s\n", error);
}

/* ---- --cluster ---- */

#define CLUSTER_COMMIT_P50_MS 5.0      /* 3 real nodes */
#define CLUSTER_CTL1000_P50_MS 50.0    /* 1,000 simulated nodes */
#define CLUSTER_CTL1000_CPU_PCT 10.0   /* with 1 s heartbeats */
#define CLUSTER_PROTECT_OVER_TCP 0.7   /* protect_gbps / protect_tcp_gbps */
#define CLUSTER_STEP_OVERHEAD 1.10     /* pt-train's step, protected / no pt */
#define CLUSTER_REBUILD_OVER_INGEST 1.5 /* rebuild_s / rebuild_ingest_s */
#define CLUSTER_REBUILD_BYTES 1.2      /* received / rebuilt */

struct cluster_results {
  char cpu[128];
  long cores;
  struct bench_cluster_result sim;
  struct bench_cluster_real real;
  struct bench_protect prot;
  bool have_sim, have_real; /* the part ran to its end (measured or said why not) */
  bool have_prot;
  char prot_why[BENCH_ERRLEN];
  int step_ms;
  double elapsed_s;
};

static const struct bench_cluster_size *cluster_size(const struct cluster_results *cr,
                                                     uint32_t nodes)
{
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++)
    if (cr->sim.sim[i].nodes == nodes)
      return &cr->sim.sim[i];
  return NULL;
}

static size_t cluster_targets(const struct cluster_results *cr, struct target *t)
{
  const struct bench_cluster_size *k = cluster_size(cr, 1000);
  bool km = cr->have_sim && k != NULL && k->measured;
  size_t n = 0;
  t[n++] = (struct target){ "commit_p50_ms", "commit across 3 nodes, p50",
                            cr->have_real && cr->real.measured ? cr->real.p50_ms : NAN, false,
                            CLUSTER_COMMIT_P50_MS, "commit_p50_ms, ms" };
  t[n++] = (struct target){ "ctl_1000_commit_p50_ms", "commit across 1000 simulated nodes, p50",
                            km ? k->p50_ms : NAN, false, CLUSTER_CTL1000_P50_MS,
                            "ctl_1000_commit_p50_ms, ms" };
  t[n++] = (struct target){ "ctl_1000_cpu_pct", "controller CPU at 1000 nodes",
                            km ? k->cpu_pct : NAN, false, CLUSTER_CTL1000_CPU_PCT,
                            "ctl_1000_cpu_pct, % of one core" };
  bool pm = cr->have_prot && cr->prot.measured;
  t[n++] = (struct target){ "protect_over_tcp", "protection across 3 nodes, 2+1",
                            pm ? cr->prot.protect_gbps / cr->prot.tcp_gbps : NAN, true,
                            CLUSTER_PROTECT_OVER_TCP, "protect_gbps / protect_tcp_gbps" };
  t[n++] = (struct target){ "cluster_step_overhead_ratio", "pt-train's step, protected / no pt",
                            pm ? cr->prot.step_ms / cr->prot.nopt_step_ms : NAN, false,
                            CLUSTER_STEP_OVERHEAD, "step ms with protection / without pt" };
  bool rb = cr->have_prot && cr->prot.rebuild_measured;
  t[n++] = (struct target){ "rebuild_over_ingest", "rebuild of a lost node",
                            rb ? cr->prot.rebuild_s / cr->prot.rebuild_ingest_s : NAN, false,
                            CLUSTER_REBUILD_OVER_INGEST, "rebuild_s / rebuild_ingest_s" };
  t[n++] = (struct target){ "rebuild_bytes_ratio", "bytes the replacement received / rebuilt",
                            rb ? (double)cr->prot.rebuild_received /
                                     (double)cr->prot.rebuild_bytes
                               : NAN,
                            false, CLUSTER_REBUILD_BYTES, "received / rebuilt bytes" };
  return n;
}

static void cluster_json(const struct cluster_results *cr, const char *error)
{
  struct json j = { stdout, true };
  struct target t[8];
  size_t nt = cluster_targets(cr, t);
  const struct bench_cluster_real *rr = &cr->real;
  const struct bench_protect *pr = &cr->prot;
  bool pm = cr->have_prot && pr->measured;

  fputc('{', stdout);
  json_bool(&j, "complete", error == NULL);
  if (error != NULL)
    json_str(&j, "error", error);
  json_str(&j, "mode", "cluster");
  json_str(&j, "cpu", cr->cpu);
  json_u64(&j, "cores", (uint64_t)cr->cores);
  json_str(&j, "stat", "nearest-rank percentiles over the steps measured");
  json_str(&j, "units", "ms = milliseconds; cpu_pct = percent of one core");
  /* false only when the controller refused JOB_START as a request it does
   * not know: then no figure below is measured, and *_why says so. */
  json_bool(&j, "jobs_supported", !cr->sim.jobs_unsupported && !rr->jobs_unsupported);
  /* false when the nodes never answered JOB_ASSIGN (ptd node without
   * cluster job parts): commit_* are then not measured. */
  json_bool(&j, "nodes_run_jobs", !rr->jobs_unsupported && !rr->nodes_unsupported);
  json_u64(&j, "heartbeat_ms", 1000);
  json_u64(&j, "ctl_step_period_ms", (uint64_t)cr->step_ms);

  json_num(&j, "commit_p50_ms", cr->have_real && rr->measured ? rr->p50_ms : NAN);
  json_num(&j, "commit_p99_ms", cr->have_real && rr->measured ? rr->p99_ms : NAN);
  json_u64(&j, "commit_samples", (uint64_t)(cr->have_real ? rr->samples : 0));
  json_u64(&j, "commit_nodes", (uint64_t)rr->nodes);
  json_u64(&j, "commit_ranks_per_node", (uint64_t)rr->ranks_per_node);
  json_u64(&j, "commit_state_mb", (uint64_t)rr->state_mb);
  json_str(&j, "ctl_floor_measures", "ctl_N_floor_cpu_pct: a plain epoll process with no pt "
           "logic accepting the same N loopback connections, reading the same frames (sizes "
           "ctl_N_frame_bytes_*) and writing one answer to every connection once all reported, "
           "per step; on loopback a send also runs the receiver's TCP receive path in the "
           "sender's context");
  json_str(&j, "commit_measures", "last node's STEP_SEALED to the last JOB_COMMIT forwarded "
           "to a node, on a relay in front of each node's controller link");
  if (cr->have_real && !rr->measured)
    json_str(&j, "commit_why", rr->why);
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    const struct bench_cluster_size *z = &cr->sim.sim[i];
    bool m = cr->have_sim && z->measured;
    char k[64];
    snprintf(k, sizeof(k), "ctl_%u_commit_p50_ms", z->nodes);
    json_num(&j, k, m ? z->p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_commit_p99_ms", z->nodes);
    json_num(&j, k, m ? z->p99_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_cpu_pct", z->nodes);
    json_num(&j, k, m ? z->cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_floor_cpu_pct", z->nodes);
    json_num(&j, k, m ? z->floor_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_cpu_over_floor", z->nodes);
    json_num(&j, k, m ? z->cpu_pct / z->floor_cpu_pct : NAN);
    if (m && !isfinite(z->floor_cpu_pct)) {
      snprintf(k, sizeof(k), "ctl_%u_floor_why", z->nodes);
      json_str(&j, k, z->floor_why);
    }
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_up", z->nodes);
    json_u64(&j, k, m ? (uint64_t)z->up_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_heartbeat", z->nodes);
    json_u64(&j, k, m ? (uint64_t)z->hb_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_down", z->nodes);
    json_u64(&j, k, m ? (uint64_t)z->down_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_idle_cpu_pct", z->nodes);
    json_num(&j, k, m ? z->idle_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_sim_cpu_pct", z->nodes);
    json_num(&j, k, m ? z->sim_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_sealed_to_pins_p50_ms", z->nodes);
    json_num(&j, k, m ? z->pins_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_votes_to_commit_p50_ms", z->nodes);
    json_num(&j, k, m ? z->journal_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_commit_spread_p50_ms", z->nodes);
    json_num(&j, k, m ? z->spread_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_samples", z->nodes);
    json_u64(&j, k, (uint64_t)(m ? z->samples : 0));
    snprintf(k, sizeof(k), "ctl_%u_register_s", z->nodes);
    json_num(&j, k, m ? z->register_s : NAN);
    snprintf(k, sizeof(k), "ctl_%u_failed_rounds", z->nodes);
    json_u64(&j, k, m ? z->failed_rounds : 0);
    if (cr->have_sim && !z->measured) {
      snprintf(k, sizeof(k), "ctl_%u_why", z->nodes);
      json_str(&j, k, z->why);
    }
  }
  json_num(&j, "protect_gbps", pm ? pr->protect_gbps : NAN);
  json_num(&j, "protect_tcp_gbps", pm ? pr->tcp_gbps : NAN);
  json_num(&j, "protect_train_gbps", pm ? pr->train_gbps : NAN);
  json_u64(&j, "protect_state_mb", (uint64_t)pr->state_mb);
  json_u64(&j, "protect_commits", (uint64_t)(pm ? pr->commits : 0));
  json_u64(&j, "protect_steps", (uint64_t)(pm ? pr->steps : 0));
  json_num(&j, "protect_window_s", pm ? pr->window_s : NAN);
  /* true when every trained step was protected: the trainers set the pace
   * and protect_gbps is a floor of protection's rate, not its capacity */
  json_bool(&j, "protect_trainer_bound", pm && pr->commits + 1 >= pr->steps);
  json_num(&j, "cluster_step_ms", pm ? pr->step_ms : NAN);
  json_num(&j, "cluster_step_nopt_ms", pm ? pr->nopt_step_ms : NAN);
  json_num(&j, "cluster_step_overhead_ratio", pm ? pr->step_ms / pr->nopt_step_ms : NAN);
  json_str(&j, "protect_measures", "3 nodes x 1 rank of pt-train, code 2+1, a snapshot every "
           "step: committed (= PROTECTED on every node) steps x state bytes over the window, "
           "per node; protect_tcp_gbps: 3 processes on a loopback TCP mesh, each writing and "
           "reading state/2 bytes to and from each other (the 2+1 pattern), best of 2; "
           "protect_train_gbps: the trainers' own step rate x state bytes");
  if (!pm)
    json_str(&j, "protect_why", cr->prot_why[0] ? cr->prot_why : "not run");
  bool rb = cr->have_prot && pr->rebuild_measured;
  json_num(&j, "rebuild_s", rb ? pr->rebuild_s : NAN);
  json_num(&j, "rebuild_ingest_s", rb ? pr->rebuild_ingest_s : NAN);
  json_num(&j, "rebuild_disk_s", rb ? pr->rebuild_disk_s : NAN);
  json_num(&j, "rebuild_bytes_ratio",
           rb ? (double)pr->rebuild_received / (double)pr->rebuild_bytes : NAN);
  json_u64(&j, "rebuild_bytes", rb ? pr->rebuild_bytes : 0);
  json_u64(&j, "rebuild_received_bytes", rb ? pr->rebuild_received : 0);
  json_num(&j, "rebuild_recover_s", rb ? pr->recover_s : NAN);
  json_str(&j, "rebuild_measures", "one node of the protection job lost whole (fault 'node') "
           "and its ptd started again empty: rebuild_s the SMP's rebuild of the committed "
           "step (first fetch to verified slot); rebuild_ingest_s the same bytes over one "
           "loopback TCP connection, best of 2; rebuild_disk_s the same bytes read back "
           "with O_DIRECT from --file-dir; rebuild_recover_s the loss to the rebuild's end");
  if (!rb)
    json_str(&j, "rebuild_why", !cr->have_prot ? "not run"
                                : pr->rebuild_why[0] ? pr->rebuild_why : "not run");
  if (rb && !isfinite(pr->rebuild_disk_s))
    json_str(&j, "rebuild_disk_why", pr->rebuild_disk_why);
  json_num(&j, "elapsed_s", cr->elapsed_s);

  json_key(&j, "targets");
  fputc('{', stdout);
  bool all_ok = true;
  for (size_t i = 0; i < nt; i++) {
    fprintf(stdout, "%s\n    \"%s\": ", i ? "," : "", t[i].key);
    if (isfinite(t[i].value))
      fprintf(stdout, "%.6g", t[i].value);
    else
      fputs("null", stdout);
    fprintf(stdout, ",\n    \"%s_target\": \"%s %g\"", t[i].key, t[i].at_least ? ">=" : "<=",
            t[i].bound);
    fprintf(stdout, ",\n    \"%s_ok\": %s", t[i].key, target_ok(&t[i]) ? "true" : "false");
    all_ok = all_ok && target_ok(&t[i]);
  }
  fputs("\n  }", stdout);
  json_bool(&j, "targets_all_ok", all_ok);
  fputs("\n}\n", stdout);
}

/* A row whose figure may be missing for a reason. */
static void cluster_row(const char *label, double v, const char *unit, const char *limit,
                        const struct target *t, bool measured, const char *why, double ratio)
{
  char m[32], tg[32] = "", res[BENCH_ERRLEN + 32] = "";
  if (measured && isfinite(v))
    snprintf(m, sizeof(m), "%.2f %s", v, unit);
  else
    snprintf(m, sizeof(m), "-");
  /* A target on the ratio column (a figure beside its limit) says so. */
  bool on_ratio = t != NULL && isfinite(ratio) && t->value == ratio;
  if (t != NULL)
    snprintf(tg, sizeof(tg), "%s %g%s%s", t->at_least ? ">=" : "<=", t->bound,
             on_ratio ? "x" : " ", on_ratio ? "" : unit);
  if (!measured)
    snprintf(res, sizeof(res), "not measured: %s", why[0] ? why : "the run stopped before it");
  else if (t != NULL)
    snprintf(res, sizeof(res), "%s", target_ok(t) ? "ok" : "MISS");
  row(label, m, limit, ratio, tg, res);
}

static void cluster_table(const struct cluster_results *cr, const char *error)
{
  struct target t[8];
  size_t nt = cluster_targets(cr, t);
  const struct bench_cluster_real *rr = &cr->real;
  const struct bench_protect *pr = &cr->prot;
  char lab[64], lim[64];

  printf("ptbench --cluster: ptd controller on 127.0.0.1, 1 s heartbeats, a fresh controller "
         "per cluster\n");
  printf("cpu: %s, %ld cores\n", cr->cpu, cr->cores);
  printf("3 nodes: real ptd nodes, %d rank(s) each of pt-train --state-mb %d (a snapshot every "
         "step, %d ms sleep per step); latency from the last node's STEP_SEALED to the last "
         "JOB_COMMIT reaching a node's link, seen on a relay in front of each node\n",
         rr->ranks_per_node, rr->state_mb, rr->step_delay_ms);
  printf("simulated: N authenticated node connections from ptbench, 1 rank each, a step every "
         "%d ms; latency from the last STEP_SEALED sent to the last JOB_COMMIT received; CPU: "
         "the controller's utime+stime over the steps (heartbeats included), %% of one core\n\n",
         cr->step_ms);
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", "figure", "measured", "limit", "ratio", "target",
         "result");
  bool rm = cr->have_real && rr->measured;
  const char *rwhy = cr->have_real ? rr->why : "";
  snprintf(lim, sizeof(lim), "%d steps", rm ? rr->samples : 0);
  cluster_row("commit, 3 nodes, p50", rr->p50_ms, "ms", lim, target_find(t, nt, "commit_p50_ms"),
              rm, rwhy, NAN);
  cluster_row("commit, 3 nodes, p99", rr->p99_ms, "ms", "", NULL, rm, rwhy, NAN);
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    const struct bench_cluster_size *z = &cr->sim.sim[i];
    bool m = cr->have_sim && z->measured;
    const char *why = cr->have_sim ? z->why : "";
    bool big = z->nodes == 1000;
    snprintf(lab, sizeof(lab), "controller, %u nodes, p50", z->nodes);
    snprintf(lim, sizeof(lim), "%d steps", m ? z->samples : 0);
    cluster_row(lab, z->p50_ms, "ms", lim, big ? target_find(t, nt, "ctl_1000_commit_p50_ms") : NULL,
                m, why, NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, p99", z->nodes);
    cluster_row(lab, z->p99_ms, "ms", "", NULL, m, why, NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, controller CPU", z->nodes);
    bool fm = m && isfinite(z->floor_cpu_pct);
    if (fm)
      snprintf(lim, sizeof(lim), "%.2f %% kernel floor", z->floor_cpu_pct);
    else
      snprintf(lim, sizeof(lim), "of one core");
    cluster_row(lab, z->cpu_pct, "%", lim, big ? target_find(t, nt, "ctl_1000_cpu_pct") : NULL,
                m, why, fm ? z->cpu_pct / z->floor_cpu_pct : NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, heartbeats alone", z->nodes);
    cluster_row(lab, z->idle_cpu_pct, "%", "controller, no job", NULL, m, why, NAN);
    if (m && !fm) {
      snprintf(lab, sizeof(lab), "  %u nodes, kernel floor", z->nodes);
      cluster_row(lab, NAN, "%", "", NULL, false, z->floor_why, NAN);
    }
  }
  bool pm = cr->have_prot && pr->measured;
  snprintf(lim, sizeof(lim), "%.2f GB/s raw TCP", pm ? pr->tcp_gbps : NAN);
  cluster_row("protection, 3 nodes, 2+1", pr->protect_gbps, "GB/s", lim,
              target_find(t, nt, "protect_over_tcp"), pm, cr->prot_why,
              pm ? pr->protect_gbps / pr->tcp_gbps : NAN);
  if (pm && pr->commits + 1 >= pr->steps)
    printf("%-30s every trained step was protected: the trainers set the pace, and the "
           "figure is a floor of what protection moves\n", "");
  snprintf(lim, sizeof(lim), "%d of %d steps", pm ? pr->commits : 0, pm ? pr->steps : 0);
  cluster_row("  trainers' own pace", pr->train_gbps, "GB/s", lim, NULL, pm, cr->prot_why,
              NAN);
  snprintf(lim, sizeof(lim), "%.2f ms without pt", pm ? pr->nopt_step_ms : NAN);
  cluster_row("  pt-train step, protected", pr->step_ms, "ms", lim,
              target_find(t, nt, "cluster_step_overhead_ratio"), pm, cr->prot_why,
              pm ? pr->step_ms / pr->nopt_step_ms : NAN);
  bool rb = cr->have_prot && pr->rebuild_measured;
  const char *rbwhy = pr->rebuild_why[0] ? pr->rebuild_why : cr->prot_why;
  snprintf(lim, sizeof(lim), "%.3f s ingest (loopback)", rb ? pr->rebuild_ingest_s : NAN);
  cluster_row("rebuild of a lost node", rb ? pr->rebuild_s : NAN, "s", lim,
              target_find(t, nt, "rebuild_over_ingest"), rb, rbwhy,
              rb ? pr->rebuild_s / pr->rebuild_ingest_s : NAN);
  snprintf(lim, sizeof(lim), "%" PRIu64 " B rebuilt", rb ? pr->rebuild_bytes : 0);
  cluster_row("  bytes received", rb ? (double)pr->rebuild_received / 1e6 : NAN, "MB", lim,
              target_find(t, nt, "rebuild_bytes_ratio"), rb, rbwhy,
              rb ? (double)pr->rebuild_received / (double)pr->rebuild_bytes : NAN);
  cluster_row("  disk checkpoint read", rb ? pr->rebuild_disk_s : NAN, "s", "O_DIRECT, same bytes",
              NULL, rb && isfinite(pr->rebuild_disk_s), rb ? pr->rebuild_disk_why : rbwhy, NAN);
  const struct bench_cluster_size *k = cluster_size(cr, 1000);
  printf("\nprotection: 3 nodes x 1 rank of pt-train --state-mb %d at code 2+1, a snapshot "
         "every step, over %.0f s:\n  committed (PROTECTED on every node) steps x state "
         "bytes, per node; the limit: 3 processes\n  writing and reading state/2 bytes to "
         "and from each other over loopback TCP, best of 2\n", pr->state_mb, pr->window_s);
  printf("\nkernel floor: the same N loopback TCP connections and frames (%zu B report, %zu B "
         "heartbeat in;\n  %zu B commit out, headers included) through a plain epoll process "
         "with no pt logic: one read\n  per readable connection, one write per answer, the "
         "answers once every connection reported;\n  ratio = controller / floor. On loopback "
         "the sender's send() also runs the receiver's TCP\n  receive path in its own context: "
         "each side's figure holds the other side's receive of what\n  it sent.\n",
         k != NULL ? k->up_bytes : 0, k != NULL ? k->hb_bytes : 0,
         k != NULL ? k->down_bytes : 0);
  if (cr->have_sim && k != NULL && k->measured && isfinite(k->floor_cpu_pct) &&
      k->floor_cpu_pct > CLUSTER_CTL1000_CPU_PCT)
    printf("the floor alone at 1000 nodes is %.2f %% > %g %%: ctl_1000_cpu_pct cannot meet its "
           "target at a step every %d ms on this machine\n", k->floor_cpu_pct,
           CLUSTER_CTL1000_CPU_PCT, cr->step_ms);
  int missed = 0;
  for (size_t i = 0; i < nt; i++)
    missed += isfinite(t[i].value) && !target_ok(&t[i]);
  printf("\n%d target(s) missed; %s in %.1f s\n", missed,
         error ? "run INCOMPLETE" : "every part ran", cr->elapsed_s);
  if (error != NULL)
    printf("error: %s\n", error);
}

static int cluster_main(struct bench_opts *o, bool json)
{
  static struct cluster_results cr;
  static char err[BENCH_ERRLEN], err2[BENCH_ERRLEN];
  const char *error = NULL;
  double t_start = bench_now();

  memset(&cr, 0, sizeof(cr));
  bench_cpu_model(cr.cpu, sizeof(cr.cpu));
  cr.cores = sysconf(_SC_NPROCESSORS_ONLN);
  cr.real.p50_ms = cr.real.p99_ms = NAN;
  cr.step_ms = o->cluster_step_ms > 0 ? o->cluster_step_ms : BENCH_CLUSTER_STEP_MS;

  if (o->verbose)
    fprintf(stderr, "ptbench: the controller with simulated nodes\n");
  int rc = bench_cluster_sim_run(o, &cr.sim, err, sizeof(err));
  if (rc < 0) {
    error = err;
    fprintf(stderr, "ptbench: %s\n", err);
  } else {
    cr.have_sim = true;
  }
  if (o->verbose)
    fprintf(stderr, "ptbench: 3 real nodes running pt-train\n");
  rc = bench_cluster_real_run(o, &cr.real, err2, sizeof(err2));
  if (rc < 0) {
    fprintf(stderr, "ptbench: %s\n", err2);
    if (error == NULL)
      error = err2;
  } else {
    cr.have_real = true;
  }
  if (o->verbose)
    fprintf(stderr, "ptbench: protection across 3 real nodes at 2+1\n");
  rc = bench_protect_run(o, &cr.prot, cr.prot_why, sizeof(cr.prot_why));
  if (rc < 0) {
    fprintf(stderr, "ptbench: %s\n", cr.prot_why);
    if (error == NULL)
      error = cr.prot_why;
  } else {
    cr.have_prot = true;
  }
  bench_cleanup_run();
  cr.elapsed_s = bench_now() - t_start;
  if (json)
    cluster_json(&cr, error);
  else
    cluster_table(&cr, error);
  return error != NULL ? 1 : 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
  struct bench_opts o = { .bytes = 0, .copy_threads = 1, .file_dir = "/var/tmp",
                          .job = "bench" };
  bool json = false, skip_train = false, cluster = false;
  int reps = 0, opt;
  unsigned parts = PART_ALL;
  char ptd[PATH_MAX] = "", train[PATH_MAX] = "";
  static char err[BENCH_ERRLEN];
  const char *error = NULL;
  struct results res;

  memset(&res, 0, sizeof(res));
  while ((opt = getopt_long(argc, argv, "vh", options, NULL)) != -1) {
    switch (opt) {
    case OPT_BYTES:
      if (conf_parse_bytes(optarg, &o.bytes) != 0 || o.bytes < 4096) {
        fprintf(stderr, "ptbench: invalid value '%s' for --bytes: expected a size of at "
                "least 4K, like 64M or 1G\n", optarg);
        return 2;
      }
      break;
    case OPT_QUICK: o.quick = true; break;
    case OPT_JSON: json = true; break;
    case OPT_THREADS:
      if (parse_int(optarg, "copy-threads", 1, 64, &o.copy_threads) != 0)
        return 2;
      break;
    case OPT_REPS:
      if (parse_int(optarg, "reps", 1, 10000, &reps) != 0)
        return 2;
      break;
    case OPT_FILE_DIR: o.file_dir = optarg; break;
    case OPT_PTD: snprintf(ptd, sizeof(ptd), "%s", optarg); break;
    case OPT_TRAIN: snprintf(train, sizeof(train), "%s", optarg); break;
    case OPT_SKIP_TRAIN: skip_train = true; break;
    case OPT_ONLY:
      if ((parts = parse_parts(optarg)) == 0) {
        fprintf(stderr, "ptbench: invalid value '%s' for --only: expected parts "
                "among net, ec, copy, file, train, recovery, persist, like train,recovery\n",
                optarg);
        return 2;
      }
      break;
    case OPT_CLUSTER: cluster = true; break;
    case OPT_CLUSTER_STEP:
      if (parse_int(optarg, "cluster-step-ms", 1, 60000, &o.cluster_step_ms) != 0)
        return 2;
      break;
    case 'v': o.verbose = true; break;
    case 'h': fputs(usage, stdout); return 0;
    default: fputs(usage, stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ptbench: unexpected argument '%s'\n%s", argv[optind], usage);
    return 2;
  }
  if (o.bytes == 0)
    o.bytes = o.quick ? QUICK_BYTES : DEFAULT_BYTES;
  if (skip_train) /* (the persist part's step overhead runs pt-train) */
    parts &= ~(unsigned)(PART_TRAIN | PART_RECOVERY | PART_PERSIST);
  skip_train = (parts & (PART_TRAIN | PART_RECOVERY | PART_PERSIST)) == 0;
  o.reps = reps ? reps : o.quick ? 30 : 20;
  o.restore_reps = o.quick ? 10 : 5;
  o.file_reps = 3;
  if ((ptd[0] == '\0' && beside_self(ptd, sizeof(ptd), "ptd") != 0) ||
      (train[0] == '\0' && beside_self(train, sizeof(train), "pt-train") != 0)) {
    fprintf(stderr, "ptbench: cannot find my own directory; use --ptd and --pt-train\n");
    return 2;
  }
  o.ptd = ptd;
  o.pt_train = train;
  if (access(o.ptd, X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot run ptd at '%s': %s (use --ptd)\n", o.ptd,
            strerror(errno));
    return 1;
  }
  if (access(o.file_dir, W_OK | X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot write the file checkpoint in '%s': %s (use --file-dir)\n",
            o.file_dir, strerror(errno));
    return 1;
  }
  if (!skip_train && access(o.pt_train, X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot run pt-train at '%s': %s (use --pt-train or "
            "--skip-train)\n", o.pt_train, strerror(errno));
    return 1;
  }

  /* This run's private names: a temp directory, a shm prefix, a job. */
  bench_cleanup_init();
  char tmp[] = "/tmp/ptbench.XXXXXX";
  if (mkdtemp(tmp) == NULL) {
    fprintf(stderr, "ptbench: cannot create a directory in /tmp: %s\n", strerror(errno));
    return 1;
  }
  bench_cleanup_dir(tmp);
  o.tmp_dir = tmp;
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "ptb%ld-", (long)getpid());
  o.shm_prefix = prefix;
  bench_cleanup_shm_prefix(prefix);

  if (cluster)
    return cluster_main(&o, json);

  double t_start = bench_now();
  bench_cpu_model(res.cpu, sizeof(res.cpu));
  res.cores = sysconf(_SC_NPROCESSORS_ONLN);
  res.blocking_vs_file = NAN;
  void *state = NULL;
  int rc;

  /* The network figures in rounds: plain sockets, then bulk frames, one
   * after the other; each round's ratio compares two transfers made a few
   * seconds apart, so that the load of a shared machine, which moves both
   * figures by 2x between runs, weighs on both sides of each ratio. */
  if (parts & PART_NET) {
    enum { ROUNDS_MAX = 7 };
    int rounds = o.quick ? 3 : ROUNDS_MAX;
    double raw[ROUNDS_MAX], hot[ROUNDS_MAX], bulk[ROUNDS_MAX], ratio[ROUNDS_MAX];
    struct bench_net_result nr;
    struct bench_bulk_result br;

    for (int i = 0; i < rounds; i++) {
      if (o.verbose)
        fprintf(stderr, "ptbench: loopback TCP round %d/%d: plain sockets "
                        "(tcp_raw_gbps), then bulk frames (bulk_gbps)\n",
                i + 1, rounds);
      rc = bench_net_run(&o, &nr, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      /* The limit is the faster of two transfers (two read sizes): bulk
       * frames get two transfers as well, the faster counting, or the
       * noise of one machine would favour the side with more tries. */
      struct bench_bulk_result b2;
      rc = bench_bulk_run(&o, &br, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      rc = bench_bulk_run(&o, &b2, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      if (b2.bulk_gbps > br.bulk_gbps)
        br = b2;
      raw[i] = nr.tcp_raw_gbps;
      hot[i] = nr.tcp_raw_hot_gbps;
      bulk[i] = br.bulk_gbps;
      ratio[i] = br.bulk_gbps / nr.tcp_raw_gbps;
      if (o.verbose)
        fprintf(stderr, "  raw %.2f GB/s, bulk %.2f GB/s: %.2f\n", raw[i],
                bulk[i], ratio[i]);
    }
    res.net = nr;
    res.bulk = br;
    res.net.tcp_raw_gbps = bench_median(raw, (size_t)rounds);
    res.net.tcp_raw_hot_gbps = bench_median(hot, (size_t)rounds);
    res.bulk.bulk_gbps = bench_median(bulk, (size_t)rounds);
    res.net_rounds = rounds;
    res.bulk_ratio_lo = res.bulk_ratio_hi = ratio[0];
    for (int i = 1; i < rounds; i++) {
      if (ratio[i] < res.bulk_ratio_lo)
        res.bulk_ratio_lo = ratio[i];
      if (ratio[i] > res.bulk_ratio_hi)
        res.bulk_ratio_hi = ratio[i];
    }
    res.bulk_ratio = bench_median(ratio, (size_t)rounds);
    res.have_net = res.have_bulk = true;
  }

  if (parts & PART_EC) {
    if (o.verbose)
      fprintf(stderr, "ptbench: erasure coding (4+2, 8+2)\n");
    rc = bench_ec_run(&res.ec, o.quick, o.verbose);
    if (rc < 0) {
      snprintf(err, sizeof(err), "erasure-coding benchmark: %s",
               res.ec.error[0] ? res.ec.error : pt_strerror(rc));
      goto out_fail;
    }
    res.have_ec = true;
  }

  if (parts & PART_COPY) {
    if (o.verbose)
      fprintf(stderr, "ptbench: copies (memcpy, engine, libpt, restore)\n");
    rc = bench_copy_run(&o, &res.copy, &state, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_copy = true;
  }

  if (parts & PART_FILE) {
    if (o.verbose)
      fprintf(stderr, "ptbench: file checkpoint in %s\n", o.file_dir);
    rc = bench_file_run(&o, state, o.bytes, &res.file, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_file = true;
    res.blocking_vs_file = res.file.blocking_ms / res.copy.blocking_ms_p50;
  }
  bench_state_free(state, o.bytes);
  state = NULL;

  if (parts & PART_TRAIN) {
    if (o.verbose)
      fprintf(stderr, "ptbench: pt-train with and without snapshots\n");
    rc = bench_train_run(&o, &res.train, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_train = true;
  }
  if (parts & PART_PERSIST) {
    if (o.verbose)
      fprintf(stderr, "ptbench: the persistent tier in %s\n", o.file_dir);
    rc = bench_persist_run(&o, &res.persist, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_persist = true;
  }
  if (parts & PART_RECOVERY) {
    if (o.verbose)
      fprintf(stderr, "ptbench: recovery from kill -9 of pt-train\n");
    rc = bench_recover_run(&o, &res.recover, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_recover = true;
  }
  goto out_report;

out_fail:
  error = err;
  fprintf(stderr, "ptbench: %s\n", err);
out_report:
  bench_state_free(state, o.bytes);
  bench_cleanup_run();
  res.elapsed_s = bench_now() - t_start;
  if (json)
    print_json(&o, &res, error);
  else
    print_table(&o, &res, error);
  return error != NULL ? 1 : 0;
}
