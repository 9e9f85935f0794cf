/*
 * test_ctl_peers.c — the host a coded job's group dials a node at
 * (daemon/controller/ctl_peers.c, ctl_peers_host): the advertised address
 * when numeric, else the host of the node's connection as rpc_addr_parse
 * reads rpc_conn_peer_name ("a.b.c.d:p", "[v6]:p"), else nothing.
 */
#include <check.h>
#include <string.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

static const char *host(const char *advertise, const char *peer)
{
  static char out[CTL_ADVERTISE_MAX + 1];

  memset(out, 'x', sizeof(out) - 1);
  out[sizeof(out) - 1] = '\0';
  ctl_peers_host(advertise, peer, out, sizeof(out));
  return out;
}

START_TEST(advertised_numeric)
{
  ck_assert_str_eq(host("10.0.0.7", "192.168.1.2:4000"), "10.0.0.7");
  ck_assert_str_eq(host("fe80::1", "192.168.1.2:4000"), "fe80::1");
  ck_assert_str_eq(host("::1", NULL), "::1");
}
END_TEST

START_TEST(from_the_connection)
{
  ck_assert_str_eq(host("node-a.example", "192.168.1.2:4000"),
                   "192.168.1.2");
  ck_assert_str_eq(host("node-a", "[fd00::2:3]:65535"), "fd00::2:3");
  ck_assert_str_eq(host("", "[::ffff:10.1.2.3]:1"), "::ffff:10.1.2.3");
  /* an advertised address with a port is not a numeric host */
  ck_assert_str_eq(host("10.0.0.7:7000", "127.0.0.1:9"), "127.0.0.1");
}
END_TEST

START_TEST(none_known)
{
  ck_assert_str_eq(host("node-a", NULL), "");
  ck_assert_str_eq(host("node-a", "an unknown address"), "");
  ck_assert_str_eq(host("node-a", "pid 42"), "");
  ck_assert_str_eq(host("node-a", "[::1]"), "");
  ck_assert_str_eq(host("node-a", "127.0.0.1"), "");
  ck_assert_str_eq(host("node-a", "host.example:7000"), "");

  char small[4];
  ctl_peers_host("node-a", "192.168.1.2:4000", small, sizeof(small));
  ck_assert_str_eq(small, ""); /* does not fit: nothing, not a piece */
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_peers");
  TCase *tc = tcase_create("host");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, advertised_numeric);
  tcase_add_test(tc, from_the_connection);
  tcase_add_test(tc, none_known);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
