/*
 * test_ctl_args.c — the command line of `ptd controller`
 * (daemon/controller/ctl_args.c): defaults, every option, ADDR:PORT in both
 * families, refusals naming the option, and the timeouts judged as one
 * ordered set with an error that states the order.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

static int parse(struct ctl_config *c, char *err, size_t len, ...)
{
  static char *argv[64];
  va_list ap;
  int argc = 0;

  va_start(ap, len);
  argv[argc++] = "controller";
  for (char *a; (a = va_arg(ap, char *)) != NULL;)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  err[0] = '\0';
  return ctl_args_parse(c, argc, argv, err, len);
}

#define BASE "--listen", "127.0.0.1:0", "--state-dir", "/tmp/x", "--key", "/tmp/k"

START_TEST(defaults)
{
  struct ctl_config c;
  char err[512];

  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, NULL), PT_OK);
  ck_assert_str_eq(c.listen_host, "127.0.0.1");
  ck_assert_int_eq(c.listen_port, 0);
  ck_assert_str_eq(c.state_dir, "/tmp/x");
  ck_assert_str_eq(c.key_path, "/tmp/k");
  ck_assert_uint_eq(c.t.heartbeat_ms, 1000);
  ck_assert_uint_eq(c.t.dead_after_ms, 10000);
  ck_assert_uint_eq(c.t.grace_ms, 10000);
  ck_assert_int_eq(c.log_level, LOG_LVL_INFO);
  ck_assert_uint_eq(ctl_args_timeouts_unreachable_ms(&c.t), 3000);
  ck_assert(!c.allow_faults); /* it refuses to kill itself by default */
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--allow-faults", NULL),
                   PT_OK);
  ck_assert(c.allow_faults);
}
END_TEST

START_TEST(every_option)
{
  struct ctl_config c;
  char err[512];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--listen", "[::1]:7000",
                         "--state-dir", "/s", "--key", "/k", "--heartbeat-ms",
                         "200", "--dead-after-ms", "1000", "--grace-ms", "500",
                         "--log-level", "7", NULL),
                   PT_OK);
  ck_assert_str_eq(c.listen_host, "::1");
  ck_assert_int_eq(c.listen_port, 7000);
  ck_assert_uint_eq(c.t.heartbeat_ms, 200);
  ck_assert_uint_eq(c.t.dead_after_ms, 1000);
  ck_assert_uint_eq(c.t.grace_ms, 500);
  ck_assert_int_eq(c.log_level, 7);
  ck_assert_uint_eq(ctl_args_timeouts_unreachable_ms(&c.t), 600);
  /* grace follows dead-after when not given */
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--dead-after-ms", "4000",
                         NULL),
                   PT_OK);
  ck_assert_uint_eq(c.t.grace_ms, 4000);
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--help", NULL),
                   CTL_ARGS_HELP);
}
END_TEST

START_TEST(addresses)
{
  char host[64], err[256];
  int port;

  ck_assert_int_eq(ctl_args_addr_parse("0.0.0.0:65535", host, sizeof(host), &port,
                                  err, sizeof(err)),
                   PT_OK);
  ck_assert_str_eq(host, "0.0.0.0");
  ck_assert_int_eq(port, 65535);
  ck_assert_int_eq(ctl_args_addr_parse("[::]:0", host, sizeof(host), &port, err,
                                  sizeof(err)),
                   PT_OK);
  ck_assert_str_eq(host, "::");
  static const char *const bad[] = {
      "127.0.0.1",  "::1:7000",      "[::1]7000", "localhost:7000",
      "1.2.3.4:-1", "1.2.3.4:65536", ":7000",     "[127.0.0.1]:7",
      "1.2.3.4:",   "[]:7000",       "1.2.3.4:7x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    ck_assert_msg(ctl_args_addr_parse(bad[i], host, sizeof(host), &port, err,
                                 sizeof(err)) == -EINVAL,
                  "%s accepted", bad[i]);
    ck_assert_msg(strstr(err, "--listen") != NULL, "%s: %s", bad[i], err);
  }
}
END_TEST

START_TEST(refusals)
{
  struct ctl_config c;
  char err[512];

  ck_assert_int_eq(parse(&c, err, sizeof(err), "--state-dir", "/s", "--key",
                         "/k", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--listen"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--listen", "127.0.0.1:1",
                         "--key", "/k", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--state-dir"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--listen", "127.0.0.1:1",
                         "--state-dir", "/s", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--key"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--bogus", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--bogus"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--heartbeat-ms", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "needs a value"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--heartbeat-ms", "1s",
                         NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--heartbeat-ms"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--log-level", "9",
                         NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--log-level"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "extra", NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "extra"));
  ck_assert_int_eq(parse(&c, err, sizeof(err), "--listen", "host:1",
                         "--state-dir", "/s", "--key", "/k", NULL),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "numeric"));
}
END_TEST

/* Each wrong set names the order and the values given. */
START_TEST(timeout_set)
{
  struct ctl_config c;
  char err[512];
  static const char *const bad[][6] = {
      {"--heartbeat-ms", "5000", "--dead-after-ms", "5000", NULL, NULL},
      {"--heartbeat-ms", "3000", "--dead-after-ms", "5000", NULL, NULL},
      {"--heartbeat-ms", "5", "--dead-after-ms", "5000", NULL, NULL},
      {"--grace-ms", "20000", NULL, NULL, NULL, NULL},
      {"--grace-ms", "0", NULL, NULL, NULL, NULL},
      {"--dead-after-ms", "3600001", NULL, NULL, NULL, NULL},
      {"--heartbeat-ms", "1000", "--dead-after-ms", "1999", NULL, NULL},
      {"--dead-after-ms", "10000", "--node-wait-ms", "10000", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = parse(&c, err, sizeof(err), BASE, bad[i][0], bad[i][1], bad[i][2],
                   bad[i][3], NULL);
    ck_assert_msg(rc == -EINVAL, "set %zu accepted", i);
    if (strcmp(bad[i][1], "3600001") == 0)
      continue; /* refused as a value, before the set */
    ck_assert_msg(strstr(err, "2 x heartbeat-ms <= dead-after-ms") != NULL &&
                      strstr(err, "grace-ms <= dead-after-ms") != NULL,
                  "set %zu: %s", i, err);
    ck_assert_msg(strstr(err, "got heartbeat-ms") != NULL, "%s", err);
  }
  /* the edges of the order are accepted */
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--heartbeat-ms", "10",
                         "--dead-after-ms", "20", "--grace-ms", "20", NULL),
                   PT_OK);
  ck_assert_uint_eq(ctl_args_timeouts_unreachable_ms(&c.t), 20);
  struct ctl_timeouts t = {.heartbeat_ms = 1000, .dead_after_ms = 2000,
                           .grace_ms = 1};
  ck_assert_int_eq(ctl_args_timeouts_check(&t, err, sizeof(err)), PT_OK);
  /* node-wait: after dead-after, named in the order; its default follows
   * a long dead-after */
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--dead-after-ms",
                         "10000", "--node-wait-ms", "9000", NULL),
                   -EINVAL);
  ck_assert_msg(strstr(err, "dead-after-ms < node-wait-ms") != NULL, "%s",
                err);
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, NULL), PT_OK);
  ck_assert_uint_eq(c.t.node_wait_ms, 60000);
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--dead-after-ms",
                         "90000", NULL),
                   PT_OK);
  ck_assert_uint_eq(c.t.node_wait_ms, 180000);
  ck_assert_int_eq(parse(&c, err, sizeof(err), BASE, "--node-wait-ms",
                         "0", NULL),
                   -EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_args");
  TCase *tc = tcase_create("args");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, defaults);
  tcase_add_test(tc, every_option);
  tcase_add_test(tc, addresses);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, timeout_set);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
