/*
 * ptctl_fault_plan.c — the pure parts of `ptctl fault` (unit-tested): the
 * fault classes, the seeded picker of a campaign, and the figures of its
 * summary. No I/O.
 *
 * The picker is splitmix64 over the seed: the same seed and classes give
 * the same injections, on every machine. Its first len(classes) picks are
 * a permutation of the classes (a seeded shuffle), so a campaign of at
 * least that many injections covers every class; the later picks are
 * uniform.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/ptctl.h"
#include "pt.h"

static const struct ptctl_fault_class CLASSES[PTCTL_FAULT_NCLASS] = {
    [PTCTL_FAULT_TRAINER] = {"trainer", true,
                             "SIGKILL of one rank's trainer"},
    [PTCTL_FAULT_SMP] = {"smp", true,
                         "SIGKILL of one rank's snapshot process (ptd smp)"},
    [PTCTL_FAULT_PTD] = {"ptd", false,
                         "SIGKILL of one node's ptd; its trainers and SMPs "
                         "run on and the restarted ptd re-adopts them"},
    [PTCTL_FAULT_CONTROLLER] = {"controller", false,
                                "SIGKILL of the controller; restarted, it "
                                "replays its journal"},
    [PTCTL_FAULT_STOP] = {"stop", true,
                          "SIGSTOP of one node's ptd past the controller's "
                          "dead deadline, then SIGCONT"},
    [PTCTL_FAULT_CORRUPT] = {"corrupt", true,
                             "one byte flipped in one rank's newest "
                             "committed snapshot, and its trainer killed: "
                             "the restore must not use that step"},
    [PTCTL_FAULT_NODE] = {"node", true,
                          "a whole node lost: its ptd, trainers and SMPs "
                          "SIGKILLed and its shm objects removed; its ptd "
                          "restarted (--restart-node), the job rebuilds "
                          "the node's state from its coding groups"},
    [PTCTL_FAULT_GROUP] = {"group", true,
                           "m nodes of one coding group lost at once (each "
                           "as 'node'), once every group absorbs m losses; "
                           "each restarted as for 'node'"},
    [PTCTL_FAULT_PROTECTING] = {"protecting", true,
                                "a node lost as it seals a step, while that "
                                "step's chunks are on their way to its "
                                "group; restarted as for 'node'"},
    [PTCTL_FAULT_REBUILDING] = {"rebuilding", true,
                                "a node's memory lost (trainers and SMPs "
                                "killed, shm removed), then the whole node "
                                "lost as its SMPs begin rebuilding from their "
                                "groups; restarted as for 'node', it "
                                "rebuilds again"},
    [PTCTL_FAULT_PARITY] = {"parity", true,
                            "one byte of a member's parity row of the "
                            "restore step flipped, then the group's member "
                            "whose rebuild reads that row lost (as 'node'): "
                            "the rebuild must find the damage by checksum "
                            "and rebuild without it (m >= 2) or restore "
                            "from the persist dir (a job with --persist-dir "
                            "only at m = 1); restarted as for 'node'"},
    [PTCTL_FAULT_BEYOND] = {"group+1", true,
                            "m + 1 nodes of one coding group lost at once "
                            "(each as 'node'), more than the code rebuilds: "
                            "the job restores the newest complete step of "
                            "its persist dir (a job with --persist-dir "
                            "only); each restarted as for 'node'"},
};

const struct ptctl_fault_class *ptctl_fault_class_get(int c)
{
  return c >= 0 && c < PTCTL_FAULT_NCLASS ? &CLASSES[c] : NULL;
}

int ptctl_fault_class_parse(const char *name)
{
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++)
    if (strcmp(CLASSES[c].name, name) == 0)
      return c;
  return -ENOENT;
}

int ptctl_fault_classes_parse(const char *list, bool set[PTCTL_FAULT_NCLASS],
                              char *err, size_t len)
{
  memset(set, 0, PTCTL_FAULT_NCLASS * sizeof(*set));
  if (list == NULL || strcmp(list, "all") == 0) {
    for (int c = 0; c < PTCTL_FAULT_NCLASS; c++)
      set[c] = true;
    return PT_OK;
  }
  const char *p = list;
  bool any = false;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
    char name[32];
    if (n == 0 || n >= sizeof(name)) {
      snprintf(err, len, "--classes '%s': expected names separated by "
                         "commas",
               list);
      return -EINVAL;
    }
    memcpy(name, p, n);
    name[n] = '\0';
    int c = ptctl_fault_class_parse(name);
    if (c < 0) {
      snprintf(err, len, "--classes: no fault class '%s' (see ptctl fault "
                         "classes)",
               name);
      return -EINVAL;
    }
    set[c] = true;
    any = true;
    if (end == NULL)
      break;
    p = end + 1;
  }
  return any ? PT_OK : -EINVAL;
}

static uint64_t next(uint64_t *s)
{
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint32_t ptctl_fault_pick_below(struct ptctl_fault_picker *p, uint32_t n)
{
  if (n <= 1)
    return 0;
  /* Rejection sampling: no modulo bias. */
  uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do
    v = next(&p->state);
  while (v >= lim);
  return (uint32_t)(v % n);
}

void ptctl_fault_pick_init(struct ptctl_fault_picker *p, uint64_t seed,
                           const bool set[PTCTL_FAULT_NCLASS])
{
  memset(p, 0, sizeof(*p));
  p->state = seed;
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++)
    if (set[c])
      p->classes[p->n++] = c;
  /* Fisher-Yates: the first round. */
  for (uint32_t i = p->n; i > 1; i--) {
    uint32_t j = ptctl_fault_pick_below(p, i);
    int t = p->classes[i - 1];
    p->classes[i - 1] = p->classes[j];
    p->classes[j] = t;
  }
}

int ptctl_fault_pick_class(struct ptctl_fault_picker *p)
{
  if (p->n == 0)
    return -ENOENT;
  if (p->picked < p->n)
    return p->classes[p->picked++];
  p->picked++;
  return p->classes[ptctl_fault_pick_below(p, p->n)];
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y ? 1 : 0;
}

void ptctl_fault_figures(double *v, size_t n, double *p50, double *max)
{
  *p50 = 0;
  *max = 0;
  if (n == 0)
    return;
  qsort(v, n, sizeof(*v), cmp_double);
  /* The median; of an even count, the mean of the two middle values. */
  *p50 = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  *max = v[n - 1];
}
