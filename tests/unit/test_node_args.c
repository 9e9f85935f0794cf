/*
 * test_node_args.c — the command line of `ptd node` (daemon/node/node_args.c):
 * defaults, every option in both spellings, the trainer command after
 * "--", byte sizes, and refusals with a sentence naming the option.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "common/conf.h"
#include "daemon/node/node.h"
#include "tests/unit/unit.h"

static int parse(struct node_config *c, char *err, size_t len, ...)
{
  static char *argv[64];
  va_list ap;
  int argc = 0;

  va_start(ap, len);
  argv[argc++] = "node";
  for (char *a; (a = va_arg(ap, char *)) != NULL;)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  err[0] = '\0';
  return node_args_parse(c, argc, argv, err, len);
}

START_TEST(defaults)
{
  struct node_config c;
  char err[256];

  unsetenv("PT_STATE_DIR");
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "2", "--",
                         "/bin/true", NULL), PT_OK);
  ck_assert_uint_eq(c.ranks, 2);
  ck_assert_str_eq(c.job, "job");
  ck_assert_str_eq(c.state_dir, "/run/pt");
  ck_assert_uint_eq(c.slots, 2);
  ck_assert_uint_eq(c.max_restarts, 10);
  ck_assert_uint_eq(c.backoff_ms, 200);
  ck_assert_uint_eq(c.master_port, 29500);
  ck_assert_uint_eq(c.memory_budget, 0);
  ck_assert_str_eq(c.shm_prefix, "");
  ck_assert(!c.keep);
  ck_assert_int_eq(c.log_level, LOG_LVL_INFO);
  ck_assert_int_eq(c.ncmd, 1);
  ck_assert_str_eq(c.cmd[0], "/bin/true");
  ck_assert_ptr_null(c.cmd[1]);

  setenv("PT_STATE_DIR", "/tmp/pt-env-dir", 1);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--", "x",
                         NULL), PT_OK);
  ck_assert_str_eq(c.state_dir, "/tmp/pt-env-dir");
  /* The option wins over the environment. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--state-dir", "/tmp/o",
                         "--ranks", "1", "--", "x", NULL), PT_OK);
  ck_assert_str_eq(c.state_dir, "/tmp/o");
  unsetenv("PT_STATE_DIR");
}
END_TEST

START_TEST(every_option)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(
      parse(&c, err, sizeof(err), "--ranks=4", "--job", "j-1.x",
            "--state-dir=/tmp/sd", "--slots", "3", "--memory-budget", "8G",
            "--state-bytes", "2G", "--shm-prefix", "n1-", "--max-restarts=0", "--backoff-ms", "50",
            "--master-port", "1234", "--keep", "--log-level", "7", "--",
            "python3", "train.py", "--ranks", "9", "--", NULL),
      PT_OK);
  ck_assert_uint_eq(c.ranks, 4);
  ck_assert_str_eq(c.job, "j-1.x");
  ck_assert_str_eq(c.state_dir, "/tmp/sd");
  ck_assert_uint_eq(c.slots, 3);
  ck_assert_uint_eq(c.memory_budget, 8ull << 30);
  ck_assert_uint_eq(c.state_bytes, 2ull << 30);
  ck_assert_str_eq(c.shm_prefix, "n1-");
  ck_assert_uint_eq(c.max_restarts, 0);
  ck_assert_uint_eq(c.backoff_ms, 50);
  ck_assert_uint_eq(c.master_port, 1234);
  ck_assert(c.keep);
  ck_assert_int_eq(c.log_level, 7);
  /* Everything after the first "--" belongs to the trainer. */
  ck_assert_int_eq(c.ncmd, 5);
  ck_assert_str_eq(c.cmd[0], "python3");
  ck_assert_str_eq(c.cmd[2], "--ranks");
  ck_assert_str_eq(c.cmd[4], "--");
}
END_TEST

/* --huge-pages is a flag, off by default, and never eats the next word. */
START_TEST(huge_pages_flag)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--", "x",
                         NULL), PT_OK);
  ck_assert(!c.huge_pages);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--huge-pages", "--ranks", "1",
                         "--", "x", NULL), PT_OK);
  ck_assert(c.huge_pages);
  ck_assert_uint_eq(c.ranks, 1);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--huge-pages=yes", "--ranks",
                         "1", "--", "x", NULL), -EINVAL);
}
END_TEST

/* The supervision options: restart window, SMP liveness probe, progress
 * watchdog, recovery in place; all in seconds. */
START_TEST(supervision_options)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--", "x",
                         NULL), PT_OK);
  ck_assert_uint_eq(c.restart_window_ms, 600000);
  ck_assert_uint_eq(c.smp_timeout_ms, 5000);
  ck_assert_uint_eq(c.progress_timeout_ms, 0);
  ck_assert_uint_eq(c.recover_timeout_ms, 30000);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--recover-timeout", "0", "--", "x", NULL), PT_OK);
  ck_assert_uint_eq(c.recover_timeout_ms, 0);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--recover-timeout", "x", "--", "x", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--recover-timeout"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--restart-window", "60", "--smp-timeout=2",
                         "--progress-timeout", "30", "--", "x", NULL), PT_OK);
  ck_assert_uint_eq(c.restart_window_ms, 60000);
  ck_assert_uint_eq(c.smp_timeout_ms, 2000);
  ck_assert_uint_eq(c.progress_timeout_ms, 30000);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--restart-window", "0", "--smp-timeout", "0", "--",
                         "x", NULL), PT_OK);
  ck_assert_uint_eq(c.restart_window_ms, 0);
  ck_assert_uint_eq(c.smp_timeout_ms, 0);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--smp-timeout", "0.25", "--progress-timeout=1.5",
                         "--", "x", NULL), PT_OK);
  ck_assert_uint_eq(c.smp_timeout_ms, 250);
  ck_assert_uint_eq(c.progress_timeout_ms, 1500);
  const char *bad[] = {"5s", "1.", ".5", "0.0001", "-1", "604800.001", ""};
  for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
    ck_assert_msg(parse(&c, err, sizeof(err), "--ranks", "1",
                        "--smp-timeout", bad[k], "--", "x", NULL) == -EINVAL,
                  "'%s' accepted", bad[k]);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--progress-timeout", "5s", "--", "x", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--progress-timeout"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1",
                         "--restart-window", "99999999", "--", "x", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--restart-window"));
}
END_TEST

START_TEST(help)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--help", NULL),
                   NODE_ARGS_HELP);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "2", "-h", NULL),
                   NODE_ARGS_HELP);
  /* After "--" it is the trainer's. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "2", "--", "t",
                         "--help", NULL), PT_OK);
}
END_TEST

/* How the job instance is chosen: --resume or --fresh, never both. */
START_TEST(resume_fresh)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--", "t",
                         NULL), PT_OK);
  ck_assert(!c.resume && !c.fresh);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--resume",
                         "--", "t", NULL), PT_OK);
  ck_assert(c.resume && !c.fresh);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--fresh", "--ranks", "1",
                         "--", "t", NULL), PT_OK);
  ck_assert(!c.resume && c.fresh);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--resume",
                         "--fresh", "--", "t", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--resume"));
  ck_assert_ptr_nonnull(strstr(err, "--fresh"));
}
END_TEST

START_TEST(bytes)
{
  uint64_t b = 0;

  ck_assert_int_eq(conf_parse_bytes("123", &b), PT_OK);
  ck_assert_uint_eq(b, 123);
  ck_assert_int_eq(conf_parse_bytes("64K", &b), PT_OK);
  ck_assert_uint_eq(b, 65536);
  ck_assert_int_eq(conf_parse_bytes("2m", &b), PT_OK);
  ck_assert_uint_eq(b, 2u << 20);
  ck_assert_int_eq(conf_parse_bytes("3GiB", &b), PT_OK);
  ck_assert_uint_eq(b, 3ull << 30);
  ck_assert_int_eq(conf_parse_bytes("1T", &b), PT_OK);
  ck_assert_uint_eq(b, 1ull << 40);
  const char *bad[] = {"", "G", "-1", " 5", "5X", "5GG", "1.5G",
                       "99999999999999999999", "20000000T", NULL};
  for (int i = 0; bad[i] != NULL; i++)
    ck_assert_msg(conf_parse_bytes(bad[i], &b) == -EINVAL, "'%s' accepted",
                  bad[i]);
}
END_TEST

START_TEST(plain_paths)
{
  const char *ok[] = {"/", "/pt", "/shared/pt.1/..x/a..b", "/a/.b/c.", NULL};
  const char *bad[] = {"", "pt", "./pt", "/a/../b", "/a/./b", "/a/..",
                       "/a/.", "/..", NULL};
  for (int i = 0; ok[i] != NULL; i++)
    ck_assert_msg(conf_path_plain(ok[i], 64), "'%s' refused", ok[i]);
  for (int i = 0; bad[i] != NULL; i++)
    ck_assert_msg(!conf_path_plain(bad[i], 64), "'%s' accepted", bad[i]);
  ck_assert(!conf_path_plain(NULL, 64));
  ck_assert(conf_path_plain("/abcdefg", 9));  /* 8 bytes, under 9 */
  ck_assert(!conf_path_plain("/abcdefgh", 9)); /* 9 bytes */
}
END_TEST

START_TEST(refusals)
{
  struct {
    const char *args[8];
    const char *says;
  } cases[] = {
      {{"--", "x"}, "--ranks is required"},
      {{"--ranks", "2"}, "no trainer command"},
      {{"--ranks", "2", "--"}, "no trainer command"},
      {{"--ranks", "0", "--", "x"}, "--ranks"},
      {{"--ranks", "2x", "--", "x"}, "--ranks"},
      {{"--ranks", "5000", "--", "x"}, "--ranks"},
      {{"--ranks"}, "needs a value"},
      {{"--ranks", "1", "--slots", "1", "--", "x"}, "--slots"},
      {{"--ranks", "1", "--slots", "9", "--", "x"}, "--slots"},
      {{"--ranks", "1", "--job", "a/b", "--", "x"}, "--job"},
      {{"--ranks", "1", "--job", "", "--", "x"}, "--job"},
      {{"--ranks", "1", "--job", ".hidden", "--", "x"}, "--job"},
      {{"--ranks", "1", "--shm-prefix", "a/b", "--", "x"}, "--shm-prefix"},
      {{"--ranks", "1", "--memory-budget", "lots", "--", "x"},
       "--memory-budget"},
      {{"--ranks", "1", "--memory-budget", "0", "--", "x"}, "--memory-budget"},
      {{"--ranks", "1", "--state-bytes", "0", "--", "x"}, "--state-bytes"},
      {{"--ranks", "1", "--state-bytes", "2X", "--", "x"}, "--state-bytes"},
      {{"--ranks", "1", "--master-port", "70000", "--", "x"}, "--master-port"},
      {{"--ranks", "1", "--log-level", "9", "--", "x"}, "--log-level"},
      {{"--ranks", "1", "--bogus", "--", "x"}, "unknown option '--bogus'"},
      {{"--ranks", "1", "stray", "--", "x"}, "unexpected argument 'stray'"},
      {{"--ranks", "1", "--", ""}, "empty"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *argv[10];
    int argc = 0;
    struct node_config c;
    char err[256] = "";

    argv[argc++] = "node";
    for (int k = 0; k < 8 && cases[i].args[k] != NULL; k++)
      argv[argc++] = (char *)cases[i].args[k];
    argv[argc] = NULL;
    int rc = node_args_parse(&c, argc, argv, err, sizeof(err));
    ck_assert_msg(rc == -EINVAL, "case %zu accepted (rc %d)", i, rc);
    ck_assert_msg(strstr(err, cases[i].says) != NULL,
                  "case %zu: '%s' does not say '%s'", i, err, cases[i].says);
  }
}
END_TEST

START_TEST(state_dir_fits_sockets)
{
  struct node_config c;
  char err[256], dir[200];

  /* "<dir>/smp.<rank>.sock" must fit in sun_path (108 bytes). */
  memset(dir, 'd', sizeof(dir));
  dir[0] = '/';
  size_t fits = NODE_PATH_MAX - 1 - strlen("/smp.9.sock");
  dir[fits] = '\0';
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--state-dir", dir, "--ranks",
                         "10", "--", "x", NULL), PT_OK);
  /* One more rank digit no longer fits. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--state-dir", dir, "--ranks",
                         "11", "--", "x", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "too long"));
  dir[fits] = 'd';
  dir[fits + 1] = '\0';
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--state-dir", dir, "--ranks",
                         "1", "--", "x", NULL), -EINVAL);
}
END_TEST

START_TEST(cluster_mode)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller",
                         "10.0.0.1:7070", "--node-id", "n-1.a_b", "--key",
                         "/k", "--advertise", "10.0.0.2", "--failure-domain",
                         "rack-3", "--capacity", "6", "--state-dir", "/tmp/s",
                         NULL), PT_OK);
  ck_assert(c.cluster);
  ck_assert_str_eq(c.controller_host, "10.0.0.1");
  ck_assert_int_eq(c.controller_port, 7070);
  ck_assert_str_eq(c.node_id, "n-1.a_b");
  ck_assert_str_eq(c.key_path, "/k");
  ck_assert_str_eq(c.advertise, "10.0.0.2");
  ck_assert_str_eq(c.failure_domain, "rack-3");
  ck_assert_uint_eq(c.capacity, 6);
  ck_assert_uint_eq(c.ranks, 0);
  ck_assert_ptr_null(c.cmd);
  ck_assert(!c.allow_faults); /* fault injection is refused by default */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller",
                         "10.0.0.1:7070", "--node-id", "a", "--key", "/k",
                         "--allow-faults", NULL), PT_OK);
  ck_assert(c.allow_faults);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller",
                         "10.0.0.1:7070", "--node-id", "a", "--key", "/k",
                         "--allow-faults=yes", NULL), -EINVAL);

  /* Defaults: capacity from the CPUs, advertise the host's name, no
   * failure domain; IPv6 bracketed; the = spelling. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller=[::1]:1",
                         "--node-id=a", "--key=/k", NULL), PT_OK);
  ck_assert_str_eq(c.controller_host, "::1");
  ck_assert_int_eq(c.controller_port, 1);
  ck_assert_uint_eq(c.capacity, node_args_default_capacity());
  ck_assert_uint_ge(c.capacity, 1);
  char host[256];
  ck_assert_int_eq(gethostname(host, sizeof(host)), 0);
  ck_assert_str_eq(c.advertise, host);
  ck_assert_str_eq(c.failure_domain, "");
  ck_assert(!c.replace);

  /* --replace: cluster mode only. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller=[::1]:1",
                         "--node-id=a", "--key=/k", "--replace", NULL), PT_OK);
  ck_assert(c.replace);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--replace", "--ranks", "1",
                         "--", "x", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--replace needs --controller"));

  /* Standalone parsing is untouched by the new fields. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--", "x",
                         NULL), PT_OK);
  ck_assert(!c.cluster);
}
END_TEST

START_TEST(persist_options)
{
  struct node_config c;
  char err[256];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "2", "--", "x",
                         NULL), PT_OK);
  ck_assert_str_eq(c.persist_dir, "");
  ck_assert_uint_eq(c.persist_every, 100);
  ck_assert_uint_eq(c.persist_keep, 2);
  ck_assert_uint_eq(c.persist_rate, 256ull << 20);
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "2", "--persist-dir",
                         "/data/pt", "--persist-every", "7", "--persist-keep",
                         "3", "--persist-rate=1G", "--resume-from", "/old/pt",
                         "--", "x", NULL), PT_OK);
  ck_assert_str_eq(c.persist_dir, "/data/pt");
  ck_assert_uint_eq(c.persist_every, 7);
  ck_assert_uint_eq(c.persist_keep, 3);
  ck_assert_uint_eq(c.persist_rate, 1ull << 30);
  ck_assert_str_eq(c.resume_from, "/old/pt");
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--ranks", "1", "--resume-from",
                         "/old/pt", "--", "x", NULL), PT_OK);
  ck_assert_str_eq(c.persist_dir, "");
  /* Refusals, each naming what is wrong. */
  static const struct {
    const char *a, *b, *c, *d, *want;
  } bad[] = {
      {"--persist-every", "5", NULL, NULL, "need --persist-dir"},
      {"--persist-dir", "relative", NULL, NULL, "absolute"},
      {"--persist-dir", "/srv/../etc", NULL, NULL, "without . or .. parts"},
      {"--resume-from", "/old/./pt", NULL, NULL, "without . or .. parts"},
      {"--persist-dir", "/d", "--persist-every", "0", "expected 1..100000000"},
      {"--persist-dir", "/d", "--persist-keep", "0", "expected 1..1000"},
      {"--persist-dir", "/d", "--persist-rate", "fast", "bytes per second"},
      {"--resume-from", "/d", "--resume", NULL, "--resume-from"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = bad[i].d != NULL
                 ? parse(&c, err, sizeof(err), "--ranks", "1", bad[i].a,
                         bad[i].b, bad[i].c, bad[i].d, "--", "x", NULL)
             : bad[i].c != NULL
                 ? parse(&c, err, sizeof(err), "--ranks", "1", bad[i].a,
                         bad[i].b, bad[i].c, "--", "x", NULL)
                 : parse(&c, err, sizeof(err), "--ranks", "1", bad[i].a,
                         bad[i].b, "--", "x", NULL);
    ck_assert_msg(rc == -EINVAL, "case %zu accepted", i);
    ck_assert_msg(strstr(err, bad[i].want) != NULL, "case %zu: %s", i, err);
  }
  /* Cluster mode: the job's tier, from ptctl start, and said so. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "127.0.0.1:7000",
                         "--node-id", "a", "--key", "/k", "--persist-dir",
                         "/d", NULL), -EINVAL);
  ck_assert_msg(strstr(err, "ptctl start --persist-dir") != NULL, "%s", err);
}
END_TEST

START_TEST(cluster_refusals)
{
  struct node_config c;
  char err[256];
  char longid[RPC_NODE_ID_MAX + 2];

  /* --ranks or a trainer command: one sentence naming both. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", "--key", "/k", "--ranks", "2",
                         NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--ranks"));
  ck_assert_ptr_nonnull(strstr(err, "trainer command"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", "--key", "/k", "--", "x", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--ranks"));
  ck_assert_ptr_nonnull(strstr(err, "trainer command"));
  /* Required. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--key", "/k", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--node-id"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--key"));
  /* Cluster options without --controller. */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--node-id", "a", "--ranks",
                         "1", "--", "x", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--controller"));
  /* Bad values. */
  const char *bad_ctl[] = {"1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536",
                           "host.example:7070", "::1:7070", "[::1]",
                           ":7070", "1.2.3.4:x"};
  for (size_t k = 0; k < sizeof(bad_ctl) / sizeof(bad_ctl[0]); k++) {
    ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", bad_ctl[k],
                           "--node-id", "a", "--key", "/k", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--controller"));
  }
  const char *bad_id[] = {"", "a b", "a/b", "a:b", "\xc3\xa9"};
  for (size_t k = 0; k < sizeof(bad_id) / sizeof(bad_id[0]); k++) {
    ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                           "--node-id", bad_id[k], "--key", "/k", NULL),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--node-id"));
  }
  memset(longid, 'x', sizeof(longid) - 1);
  longid[sizeof(longid) - 1] = '\0';
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", longid, "--key", "/k", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--node-id"));
  longid[RPC_NODE_ID_MAX] = '\0'; /* exactly the maximum fits */
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", longid, "--key", "/k", NULL), PT_OK);
  const char *bad_cap[] = {"0", "1025", "-1", "x"};
  for (size_t k = 0; k < sizeof(bad_cap) / sizeof(bad_cap[0]); k++) {
    ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                           "--node-id", "a", "--key", "/k", "--capacity",
                           bad_cap[k], NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--capacity"));
  }
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", "--key", "/k", "--advertise",
                         "a b", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--advertise"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", "--key", "/k", "--failure-domain",
                         "", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--failure-domain"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--controller", "1.2.3.4:5",
                         "--node-id", "a", "--key", NULL), -EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_args");
  TCase *tc = tcase_create("args");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, defaults);
  tcase_add_test(tc, every_option);
  tcase_add_test(tc, supervision_options);
  tcase_add_test(tc, help);
  tcase_add_test(tc, resume_fresh);
  tcase_add_test(tc, huge_pages_flag);
  tcase_add_test(tc, bytes);
  tcase_add_test(tc, plain_paths);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, state_dir_fits_sockets);
  tcase_add_test(tc, cluster_mode);
  tcase_add_test(tc, cluster_refusals);
  tcase_add_test(tc, persist_options);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
