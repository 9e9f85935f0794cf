/*
 * test_ptctl_fault.c — the pure parts of `ptctl fault` (ptctl_fault_plan.c):
 * class names and lists, the seeded picker (the same seed gives the same
 * campaign; the first picks cover every class once; later picks are
 * uniform and in range), and the summary's median and maximum. And the
 * command line's refusals that need no controller.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "pt.h"
#include "tests/unit/unit.h"

START_TEST(class_names)
{
  ck_assert_int_eq(ptctl_fault_class_parse("trainer"), PTCTL_FAULT_TRAINER);
  ck_assert_int_eq(ptctl_fault_class_parse("corrupt"), PTCTL_FAULT_CORRUPT);
  ck_assert_int_eq(ptctl_fault_class_parse("parity"), PTCTL_FAULT_PARITY);
  ck_assert_int_eq(ptctl_fault_class_parse("Trainer"), -ENOENT);
  ck_assert_int_eq(ptctl_fault_class_parse(""), -ENOENT);
  ck_assert_ptr_null(ptctl_fault_class_get(-1));
  ck_assert_ptr_null(ptctl_fault_class_get(PTCTL_FAULT_NCLASS));
  /* Every class is named and says what it does. */
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++) {
    const struct ptctl_fault_class *k = ptctl_fault_class_get(c);
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(ptctl_fault_class_parse(k->name), c);
    ck_assert(k->what != NULL && strlen(k->what) > 20);
  }
  ck_assert(ptctl_fault_class_get(PTCTL_FAULT_PARITY)->restarts);
  ck_assert(ptctl_fault_class_get(PTCTL_FAULT_TRAINER)->restarts);
  ck_assert(!ptctl_fault_class_get(PTCTL_FAULT_PTD)->restarts);
  ck_assert(!ptctl_fault_class_get(PTCTL_FAULT_CONTROLLER)->restarts);
  ck_assert(ptctl_fault_class_get(PTCTL_FAULT_NODE)->restarts);
  ck_assert_int_eq(ptctl_fault_class_parse("group+1"), PTCTL_FAULT_BEYOND);
  ck_assert(ptctl_fault_class_get(PTCTL_FAULT_BEYOND)->restarts);
}
END_TEST

START_TEST(class_lists)
{
  bool set[PTCTL_FAULT_NCLASS];
  char err[256];

  ck_assert_int_eq(ptctl_fault_classes_parse(NULL, set, err, sizeof(err)),
                   PT_OK);
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++)
    ck_assert(set[c]);
  ck_assert_int_eq(ptctl_fault_classes_parse("smp,stop", set, err,
                                             sizeof(err)),
                   PT_OK);
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++)
    ck_assert_int_eq(set[c], c == PTCTL_FAULT_SMP || c == PTCTL_FAULT_STOP);
  ck_assert_int_eq(ptctl_fault_classes_parse("smp,bogus", set, err,
                                             sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "'bogus'"));
  ck_assert_int_eq(ptctl_fault_classes_parse("smp,,stop", set, err,
                                             sizeof(err)),
                   -EINVAL);
  ck_assert_int_eq(ptctl_fault_classes_parse("", set, err, sizeof(err)),
                   -EINVAL);
  ck_assert_int_eq(ptctl_fault_classes_parse("trainer,", set, err,
                                             sizeof(err)),
                   -EINVAL);
}
END_TEST

static void picks(uint64_t seed, const bool *set, int *out, uint32_t n,
                  uint32_t *targets)
{
  struct ptctl_fault_picker p;

  ptctl_fault_pick_init(&p, seed, set);
  for (uint32_t i = 0; i < n; i++) {
    out[i] = ptctl_fault_pick_class(&p);
    targets[i] = ptctl_fault_pick_below(&p, 3);
  }
}

START_TEST(picker_is_seeded)
{
  bool set[PTCTL_FAULT_NCLASS];
  int a[200], b[200], c[200];
  uint32_t ta[200], tb[200], tc[200];
  char err[64];

  ck_assert_int_eq(ptctl_fault_classes_parse(NULL, set, err, sizeof(err)),
                   PT_OK);
  set[PTCTL_FAULT_CONTROLLER] = false; /* a class outside the set */
  picks(42, set, a, 200, ta);
  picks(42, set, b, 200, tb);
  picks(43, set, c, 200, tc);
  ck_assert_mem_eq(a, b, sizeof(a));
  ck_assert_mem_eq(ta, tb, sizeof(ta));
  ck_assert(memcmp(a, c, sizeof(a)) != 0 || memcmp(ta, tc, sizeof(ta)) != 0);
  /* The first picks are each class of the set once; never one outside
   * it; later picks reach every class of it. */
  int navail = 0;
  bool avail[PTCTL_FAULT_NCLASS];
  for (int k = 0; k < PTCTL_FAULT_NCLASS; k++)
    navail += (avail[k] = set[k]);
  ck_assert_int_eq(navail, PTCTL_FAULT_NCLASS - 1);
  int seen[PTCTL_FAULT_NCLASS] = {0};
  for (int i = 0; i < navail; i++) {
    ck_assert(a[i] >= 0 && a[i] < PTCTL_FAULT_NCLASS && avail[a[i]]);
    seen[a[i]]++;
  }
  for (int k = 0; k < PTCTL_FAULT_NCLASS; k++)
    ck_assert_int_eq(seen[k], avail[k] ? 1 : 0);
  memset(seen, 0, sizeof(seen));
  for (int i = navail; i < 200; i++) {
    ck_assert(a[i] >= 0 && a[i] < PTCTL_FAULT_NCLASS && avail[a[i]]);
    ck_assert_uint_lt(ta[i], 3);
    seen[a[i]]++;
  }
  for (int k = 0; k < PTCTL_FAULT_NCLASS; k++)
    if (avail[k])
      ck_assert_int_gt(seen[k], 8); /* 189 draws of 11: about 17 each */
  /* A fixed seed gives a fixed order on every machine (splitmix64):
   * what an operator's report of "seed 42" replays. */
  static const int order42[11] = {
      PTCTL_FAULT_PTD,        PTCTL_FAULT_STOP,    PTCTL_FAULT_BEYOND,
      PTCTL_FAULT_PROTECTING, PTCTL_FAULT_NODE,    PTCTL_FAULT_REBUILDING,
      PTCTL_FAULT_GROUP,      PTCTL_FAULT_CORRUPT, PTCTL_FAULT_TRAINER,
      PTCTL_FAULT_SMP,        PTCTL_FAULT_PARITY};
  ck_assert_mem_eq(a, order42, sizeof(order42));
}
END_TEST

START_TEST(picker_subset_and_empty)
{
  bool set[PTCTL_FAULT_NCLASS] = {0};
  struct ptctl_fault_picker p;

  set[PTCTL_FAULT_STOP] = true;
  ptctl_fault_pick_init(&p, 1, set);
  ck_assert_uint_eq(p.n, 1);
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(ptctl_fault_pick_class(&p), PTCTL_FAULT_STOP);
  memset(set, 0, sizeof(set));
  ptctl_fault_pick_init(&p, 1, set);
  ck_assert_int_eq(ptctl_fault_pick_class(&p), -ENOENT);
  ck_assert_uint_eq(ptctl_fault_pick_below(&p, 0), 0);
  ck_assert_uint_eq(ptctl_fault_pick_below(&p, 1), 0);
}
END_TEST

START_TEST(figures)
{
  double v1[] = {3.0, 1.0, 2.0};
  double v2[] = {4.0, 1.0, 3.0, 2.0};
  double v3[] = {0.5};
  double p50, max;

  ptctl_fault_figures(v1, 3, &p50, &max);
  ck_assert(p50 == 2.0 && max == 3.0);
  ptctl_fault_figures(v2, 4, &p50, &max);
  ck_assert(p50 == 2.5 && max == 4.0);
  ptctl_fault_figures(v3, 1, &p50, &max);
  ck_assert(p50 == 0.5 && max == 0.5);
  ptctl_fault_figures(NULL, 0, &p50, &max);
  ck_assert(p50 == 0.0 && max == 0.0);
}
END_TEST

/* The command line, where no controller is needed to refuse. */
static int run_ptctl(const char *const *args)
{
  char *argv[32];
  int argc = 0;

  argv[argc++] = "ptctl";
  for (; args[argc - 1] != NULL; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  return ptctl_main(argc, argv);
}

START_TEST(command_line)
{
  static const char *const no_job[] = {"--controller", "127.0.0.1:1", "--key",
                                       "/nonexistent", "fault", "inject",
                                       NULL};
  static const char *const bad_class[] = {
      "--controller", "127.0.0.1:1", "--key", "/nonexistent", "fault",
      "inject", "j", "bogus", NULL};
  static const char *const later[] = {
      "--controller", "127.0.0.1:1", "--key", "/nonexistent", "fault",
      "inject", "j", "group", NULL};
  static const char *const no_seed[] = {
      "--controller", "127.0.0.1:1", "--key", "/nonexistent", "fault",
      "campaign", "j", "--count", "3", NULL};
  static const char *const bad_classes[] = {
      "--controller", "127.0.0.1:1", "--key", "/nonexistent", "fault",
      "campaign", "j", "--seed", "1", "--count", "3", "--classes", "x",
      NULL};
  static const char *const classes[] = {"fault", "classes", NULL};
  static const char *const sub[] = {"--controller", "127.0.0.1:1", "--key",
                                    "/nonexistent", "fault", "bogus", NULL};

  ck_assert_int_eq(run_ptctl(no_job), PTCTL_EXIT_USAGE);
  ck_assert_int_eq(run_ptctl(bad_class), PTCTL_EXIT_USAGE);
  /* A class of a campaign only: usage, nothing sent. */
  ck_assert_int_eq(run_ptctl(later), PTCTL_EXIT_USAGE);
  ck_assert_int_eq(run_ptctl(no_seed), PTCTL_EXIT_USAGE);
  ck_assert_int_eq(run_ptctl(bad_classes), PTCTL_EXIT_USAGE);
  ck_assert_int_eq(run_ptctl(sub), PTCTL_EXIT_USAGE);
  /* No controller needed to list the classes. */
  ck_assert_int_eq(run_ptctl(classes), PTCTL_EXIT_OK);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ptctl_fault");
  TCase *tc = tcase_create("ptctl_fault");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, class_names);
  tcase_add_test(tc, class_lists);
  tcase_add_test(tc, picker_is_seeded);
  tcase_add_test(tc, picker_subset_and_empty);
  tcase_add_test(tc, figures);
  tcase_add_test(tc, command_line);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
