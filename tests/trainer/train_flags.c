/*
 * train_flags.c — pt-train's command line: defaults, parsing, validation, and
 * the model width that --state-mb asks for.
 *
 * Every value is checked completely (no trailing garbage, in range); a bad
 * flag is reported once on stderr, naming the flag and the value.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

static const char usage[] =
    "usage: pt-train [options]\n"
    "\n"
    "Trains an MLP (ReLU hidden layers, softmax cross-entropy, AdamW) on\n"
    "synthetic data labelled by a fixed teacher network, snapshotting its state\n"
    "through libpt. Bit-for-bit deterministic: the same flags and rank give the\n"
    "same digest, with or without faults and restores.\n"
    "\n"
    "Data parallel: with WORLD_SIZE > 1 (or PT_WORLD_SIZE) the ranks average\n"
    "their gradients and losses every step over TCP, in a fixed order, so all\n"
    "hold the same parameters; rank 0 listens on MASTER_ADDR:MASTER_PORT\n"
    "(default 127.0.0.1:29500) and the others connect. Every rank must run at\n"
    "once, --no-pt runs too.\n"
    "\n"
    "  --steps N            train until step N (default 200)\n"
    "  --hidden H           width of each hidden layer (default 256)\n"
    "  --layers L           hidden layers, >= 1 (default 2)\n"
    "  --batch B            samples per step (default 32)\n"
    "  --inputs D           input features (default 64)\n"
    "  --classes C          classes, >= 2 (default 10)\n"
    "  --seed S             seed of the teacher, the initial model and the data\n"
    "                       (default 1); the data generator also mixes in the rank\n"
    "  --state-mb M         size the hidden layers so the registered state is about\n"
    "                       M MiB (overrides --hidden)\n"
    "  --lr X               AdamW learning rate (default 0.001)\n"
    "  --beta1 X, --beta2 X AdamW betas (default 0.9, 0.999)\n"
    "  --eps X              AdamW epsilon (default 1e-8)\n"
    "  --weight-decay X     decoupled weight decay on weight matrices (default 0.01)\n"
    "  --snapshot-every K   pt_snapshot() every K steps (default 1)\n"
    "  --no-pt              run without libpt: nothing is snapshotted or restored\n"
    "  --recover-in-place   when another rank dies, restore in place and meet\n"
    "                       its restarted process again (ptd node restarts only\n"
    "                       the dead rank) instead of being restarted\n"
    "  --rank R             this rank (default $PT_RANK, then $RANK, then 0)\n"
    "  --master-port P      rank 0's port (default $MASTER_PORT, then 29500)\n"
    "  --comm-timeout-s S   deadline for the ranks to join and for every exchange\n"
    "                       with another rank (default 60)\n"
    "  --log-every N        print 'step N loss X' every N steps (default 10; also\n"
    "                       at step 1 and at the last step)\n"
    "  --step-delay-ms D    sleep D ms after every step (for fault tests)\n"
    "  --hang-at-step N     before step N, stop progressing (alive, sleeping\n"
    "                       until killed); only in the first start, when\n"
    "                       $PT_RESTART is unset or 0 (for fault tests)\n"
    "  --digest-file F      also write the final digest to F ('%r' in F is the\n"
    "                       rank)\n"
    "  --timing             print 'timing step_ms_avg=X ...' (steady state)\n"
    "  -v, --verbose        show libpt's informational messages (twice: debug)\n"
    "  -h, --help           this text\n"
    "\n"
    "Output: 'restored step R' after a restore, 'step N loss X' lines (the loss\n"
    "averaged over the ranks), then 'param_digest <16 hex digits>' (CRC-64 of\n"
    "the parameters alone: the same on every rank of a job), 'digest <16 hex\n"
    "digits>' (CRC-64 of every registered region in order) and 'summary\n"
    "steps=... snapshots=... skipped=... failed=... restored_from=...'.\n"
    "Exit status: 0 done, 1 failure (a rank died, hung or is at another step),\n"
    "2 bad flags, 78 permanent configuration error (region table or memory\n"
    "budget refused by the snapshot process, a snapshot object of another job\n"
    "instance, world size or user, snapshots out of order, ranks run other\n"
    "configurations).\n";

enum {
  OPT_STEPS = 256,
  OPT_HIDDEN,
  OPT_LAYERS,
  OPT_BATCH,
  OPT_INPUTS,
  OPT_CLASSES,
  OPT_SEED,
  OPT_STATE_MB,
  OPT_LR,
  OPT_BETA1,
  OPT_BETA2,
  OPT_EPS,
  OPT_WD,
  OPT_SNAP_EVERY,
  OPT_NO_PT,
  OPT_RANK,
  OPT_LOG_EVERY,
  OPT_DELAY,
  OPT_DIGEST_FILE,
  OPT_TIMING,
  OPT_MASTER_PORT,
  OPT_COMM_TIMEOUT,
  OPT_HANG_AT,
  OPT_RECOVER,
};

static const struct option options[] = {
    {"steps", required_argument, NULL, OPT_STEPS},
    {"hidden", required_argument, NULL, OPT_HIDDEN},
    {"layers", required_argument, NULL, OPT_LAYERS},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"inputs", required_argument, NULL, OPT_INPUTS},
    {"classes", required_argument, NULL, OPT_CLASSES},
    {"seed", required_argument, NULL, OPT_SEED},
    {"state-mb", required_argument, NULL, OPT_STATE_MB},
    {"lr", required_argument, NULL, OPT_LR},
    {"beta1", required_argument, NULL, OPT_BETA1},
    {"beta2", required_argument, NULL, OPT_BETA2},
    {"eps", required_argument, NULL, OPT_EPS},
    {"weight-decay", required_argument, NULL, OPT_WD},
    {"snapshot-every", required_argument, NULL, OPT_SNAP_EVERY},
    {"no-pt", no_argument, NULL, OPT_NO_PT},
    {"recover-in-place", no_argument, NULL, OPT_RECOVER},
    {"rank", required_argument, NULL, OPT_RANK},
    {"log-every", required_argument, NULL, OPT_LOG_EVERY},
    {"step-delay-ms", required_argument, NULL, OPT_DELAY},
    {"digest-file", required_argument, NULL, OPT_DIGEST_FILE},
    {"timing", no_argument, NULL, OPT_TIMING},
    {"master-port", required_argument, NULL, OPT_MASTER_PORT},
    {"comm-timeout-s", required_argument, NULL, OPT_COMM_TIMEOUT},
    {"hang-at-step", required_argument, NULL, OPT_HANG_AT},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The name of the long option with value `val`, for messages. */
static const char *option_name(int val)
{
  for (const struct option *o = options; o->name != NULL; o++)
    if (o->val == val)
      return o->name;
  return "?";
}

static int bad_value(int opt, const char *arg, const char *why)
{
  fprintf(stderr, "pt-train: invalid value '%s' for --%s: %s\n", arg,
          option_name(opt), why);
  return -EINVAL;
}

/* Parses an unsigned decimal integer in [lo, hi] with nothing after it. */
static int parse_u64(int opt, const char *arg, uint64_t lo, uint64_t hi,
                     uint64_t *out)
{
  char *end;
  char why[96];

  if (arg[0] < '0' || arg[0] > '9')
    return bad_value(opt, arg, "expected a non-negative integer");
  errno = 0;
  unsigned long long v = strtoull(arg, &end, 10);
  if (errno != 0 || *end != '\0')
    return bad_value(opt, arg, "expected a non-negative integer");
  if (v < lo || v > hi) {
    snprintf(why, sizeof(why), "must be between %llu and %llu",
             (unsigned long long)lo, (unsigned long long)hi);
    return bad_value(opt, arg, why);
  }
  *out = v;
  return 0;
}

static int parse_u32(int opt, const char *arg, uint32_t lo, uint32_t hi,
                     uint32_t *out)
{
  uint64_t v;
  int rc = parse_u64(opt, arg, lo, hi, &v);
  if (rc == 0)
    *out = (uint32_t)v;
  return rc;
}

/* Parses a finite real number; min_open: value must be > lo, else >= lo;
 * below_one: value must be < 1. */
static int parse_float(int opt, const char *arg, double lo, bool min_open,
                       bool below_one, float *out)
{
  char *end;
  errno = 0;
  double v = strtod(arg, &end);
  if (errno != 0 || end == arg || *end != '\0' || !isfinite(v))
    return bad_value(opt, arg, "expected a finite number");
  if (min_open ? !(v > lo) : !(v >= lo))
    return bad_value(opt, arg, min_open ? "must be positive" : "must not be negative");
  if (below_one && !(v < 1.0))
    return bad_value(opt, arg, "must be less than 1");
  *out = (float)v;
  return 0;
}

uint64_t train_state_bytes(uint32_t inputs, uint32_t hidden, uint32_t layers,
                           uint32_t classes)
{
  uint64_t h = hidden;
  uint64_t params = (uint64_t)inputs * h + h +
                    (uint64_t)(layers - 1) * (h * h + h) + h * classes + classes;
  return 3 * sizeof(float) * params + sizeof(struct train_identity) +
         sizeof(struct train_rng) + 2 * sizeof(uint64_t);
}

/* The hidden width whose state is nearest to mb MiB; 0 if even width 1 is
 * larger than asked. */
static uint32_t hidden_for_state(uint64_t mb, uint32_t inputs, uint32_t layers,
                                 uint32_t classes)
{
  uint64_t target = mb << 20;
  uint32_t lo = 1, hi = 1u << 22;
  if (train_state_bytes(inputs, 1, layers, classes) > target)
    return 0;
  while (lo < hi) { /* largest width whose state fits in target */
    uint32_t mid = lo + (hi - lo + 1) / 2;
    if (train_state_bytes(inputs, mid, layers, classes) <= target)
      lo = mid;
    else
      hi = mid - 1;
  }
  uint64_t below = target - train_state_bytes(inputs, lo, layers, classes);
  uint64_t above = train_state_bytes(inputs, lo + 1, layers, classes) - target;
  return above < below ? lo + 1 : lo;
}

int train_flags_parse(struct train_flags *f, int argc, char **argv)
{
  int rc = 0, opt;
  uint64_t rank;

  *f = (struct train_flags){
      .steps = 200,
      .hidden = 256,
      .layers = 2,
      .batch = 32,
      .inputs = 64,
      .classes = 10,
      .seed = 1,
      .snapshot_every = 1,
      .log_every = 10,
      .rank = -1,
      .comm_timeout_s = 60,
      .lr = 1e-3f,
      .beta1 = 0.9f,
      .beta2 = 0.999f,
      .eps = 1e-8f,
      .weight_decay = 0.01f,
  };

  opterr = 0; /* our own messages */
  optind = 1;
  while (rc == 0 && (opt = getopt_long(argc, argv, ":vh", options, NULL)) != -1) {
    switch (opt) {
    case OPT_STEPS:
      rc = parse_u64(opt, optarg, 0, UINT64_MAX / 2, &f->steps);
      break;
    case OPT_HIDDEN:
      rc = parse_u32(opt, optarg, 1, 1u << 20, &f->hidden);
      break;
    case OPT_LAYERS:
      rc = parse_u32(opt, optarg, 1, 64, &f->layers);
      break;
    case OPT_BATCH:
      rc = parse_u32(opt, optarg, 1, 1u << 16, &f->batch);
      break;
    case OPT_INPUTS:
      rc = parse_u32(opt, optarg, 1, 1u << 16, &f->inputs);
      break;
    case OPT_CLASSES:
      rc = parse_u32(opt, optarg, 2, 1u << 16, &f->classes);
      break;
    case OPT_SEED:
      rc = parse_u64(opt, optarg, 0, UINT64_MAX, &f->seed);
      break;
    case OPT_STATE_MB:
      rc = parse_u64(opt, optarg, 1, 1u << 20, &f->state_mb);
      break;
    case OPT_LR:
      rc = parse_float(opt, optarg, 0.0, true, false, &f->lr);
      break;
    case OPT_BETA1:
      rc = parse_float(opt, optarg, 0.0, false, true, &f->beta1);
      break;
    case OPT_BETA2:
      rc = parse_float(opt, optarg, 0.0, false, true, &f->beta2);
      break;
    case OPT_EPS:
      rc = parse_float(opt, optarg, 0.0, true, false, &f->eps);
      break;
    case OPT_WD:
      rc = parse_float(opt, optarg, 0.0, false, false, &f->weight_decay);
      break;
    case OPT_SNAP_EVERY:
      rc = parse_u64(opt, optarg, 1, UINT64_MAX / 2, &f->snapshot_every);
      break;
    case OPT_NO_PT:
      f->no_pt = true;
      break;
    case OPT_RECOVER:
      f->recover_in_place = true;
      break;
    case OPT_RANK:
      rc = parse_u64(opt, optarg, 0, 1u << 20, &rank);
      f->rank = (int)rank;
      break;
    case OPT_LOG_EVERY:
      rc = parse_u64(opt, optarg, 1, UINT64_MAX / 2, &f->log_every);
      break;
    case OPT_DELAY:
      rc = parse_u32(opt, optarg, 0, 3600 * 1000, &f->step_delay_ms);
      break;
    case OPT_DIGEST_FILE:
      if (optarg[0] == '\0') {
        rc = bad_value(opt, optarg, "expected a file name");
        break;
      }
      f->digest_file = optarg;
      break;
    case OPT_TIMING:
      f->timing = true;
      break;
    case OPT_MASTER_PORT:
      rc = parse_u32(opt, optarg, 1, 65535, &f->master_port);
      break;
    case OPT_COMM_TIMEOUT:
      rc = parse_u32(opt, optarg, 1, 86400, &f->comm_timeout_s);
      break;
    case OPT_HANG_AT:
      rc = parse_u64(opt, optarg, 1, UINT64_MAX / 2, &f->hang_at_step);
      break;
    case 'v':
      f->verbose++;
      break;
    case 'h':
      fputs(usage, stdout);
      return 1;
    case ':':
      fprintf(stderr, "pt-train: option '%s' needs a value\n", argv[optind - 1]);
      rc = -EINVAL;
      break;
    default:
      fprintf(stderr, "pt-train: unknown option '%s'\n", argv[optind - 1]);
      rc = -EINVAL;
      break;
    }
  }
  if (rc == 0 && optind < argc) {
    fprintf(stderr, "pt-train: unexpected argument '%s'\n", argv[optind]);
    rc = -EINVAL;
  }
  if (rc == 0 && f->state_mb != 0) {
    f->hidden = hidden_for_state(f->state_mb, f->inputs, f->layers, f->classes);
    if (f->hidden == 0) {
      fprintf(stderr,
              "pt-train: --state-mb %llu is too small for %u inputs and %u "
              "classes\n",
              (unsigned long long)f->state_mb, f->inputs, f->classes);
      rc = -EINVAL;
    }
  }
  if (rc != 0)
    fprintf(stderr, "pt-train: try 'pt-train --help'\n");
  return rc;
}
