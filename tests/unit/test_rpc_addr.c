/*
 * test_rpc_addr.c — rpc_addr_parse, the one "HOST:PORT" parser of every
 * cluster command line: what it takes, and that every malformed address is
 * refused with a sentence that says what is wrong; and rpc_addr_is_numeric,
 * the one test of a bare host.
 */
#include <errno.h>
#include <string.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "unit.h"

START_TEST(takes_numeric_addresses)
{
  char host[64], why[160];
  int port = -1;

  ck_assert_int_eq(rpc_addr_parse("10.0.0.1:7000", 1, host, sizeof(host), &port,
                                  why, sizeof(why)), PT_OK);
  ck_assert_str_eq(host, "10.0.0.1");
  ck_assert_int_eq(port, 7000);
  ck_assert_int_eq(rpc_addr_parse("[::1]:65535", 1, host, sizeof(host), &port,
                                  why, sizeof(why)), PT_OK);
  ck_assert_str_eq(host, "::1");
  ck_assert_int_eq(port, 65535);
  ck_assert_int_eq(rpc_addr_parse("[fe80::1:2]:1", 1, host, sizeof(host),
                                  &port, why, sizeof(why)), PT_OK);
  ck_assert_str_eq(host, "fe80::1:2");
  /* Port 0 (any free port) only where the caller allows it: a listener. */
  ck_assert_int_eq(rpc_addr_parse("0.0.0.0:0", 0, host, sizeof(host), &port,
                                  why, sizeof(why)), PT_OK);
  ck_assert_int_eq(port, 0);
}
END_TEST

START_TEST(refuses_the_rest_with_a_reason)
{
  static const struct {
    const char *in;
    int min_port;
    const char *why;
  } bad[] = {
      {"10.0.0.1", 1, "expected HOST:PORT"},
      {"::1:7000", 1, "expected HOST:PORT"},   /* IPv6 must be bracketed */
      {"[::1]7000", 1, "expected [IPV6]:PORT"},
      {"[::1", 1, "expected [IPV6]:PORT"},
      {":7000", 1, "the address is missing"},
      {"[]:7000", 1, "the address is missing"},
      {"localhost:7000", 1, "not a numeric IPv4 address"},
      {"[1.2.3.4]:7000", 1, "not a numeric IPv6 address"},
      {"10.0.0.256:7000", 1, "not a numeric IPv4 address"},
      {"10.0.0.1:0", 1, "the port must be 1..65535"},
      {"10.0.0.1:65536", 0, "the port must be 0..65535"},
      {"10.0.0.1:", 1, "the port must be"},
      {"10.0.0.1:-1", 0, "the port must be"},
      {"10.0.0.1:80x", 1, "the port must be"},
      {"10.0.0.1: 80", 1, "the port must be"},
      {"10.0.0.1:99999999999999999999", 1, "the port must be"},
      {"1111111111111111111111111111111111111111111111111111.1:80", 1,
       "too long"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char host[64] = "unchanged", why[160] = "";
    int port = 42;
    int rc = rpc_addr_parse(bad[i].in, bad[i].min_port, host, sizeof(host),
                            &port, why, sizeof(why));
    ck_assert_msg(rc == -EINVAL, "'%s' was taken", bad[i].in);
    ck_assert_msg(strstr(why, bad[i].why) != NULL, "'%s': said '%s'",
                  bad[i].in, why);
    ck_assert_int_eq(port, 42);
  }
}
END_TEST

START_TEST(numeric_hosts)
{
  static const char *const yes[] = {
      "10.0.0.1", "0.0.0.0", "255.255.255.255", "127.0.0.1", "::1", "::",
      "fe80::1:2", "fd00:0:0:0:0:0:0:7", "::ffff:10.1.2.3",
  };
  static const char *const no[] = {
      "",            "localhost",       "node-a.example", "10.0.0",
      "10.0.0.256",  "10.0.0.1 ",       " 10.0.0.1",      "10.0.0.1:7000",
      "[::1]",       "[::1]:7000",      "::1:7000:x",     "fe80::1%eth0",
      "1.2.3.4.5",   "0x7f.0.0.1",
  };
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
    ck_assert_msg(rpc_addr_is_numeric(yes[i]), "'%s' refused", yes[i]);
  for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
    ck_assert_msg(!rpc_addr_is_numeric(no[i]), "'%s' taken", no[i]);
  ck_assert(!rpc_addr_is_numeric(NULL));
}
END_TEST

static Suite *rpc_addr_suite(void)
{
  Suite *s = suite_create("rpc_addr");
  TCase *tc = tcase_create("parse");

  tcase_add_test(tc, takes_numeric_addresses);
  tcase_add_test(tc, refuses_the_rest_with_a_reason);
  tcase_add_test(tc, numeric_hosts);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(rpc_addr_suite());
}
