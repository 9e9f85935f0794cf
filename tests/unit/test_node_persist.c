/*
 * test_node_persist.c — the MANIFEST of a step on disk
 * (daemon/node/node_persist.h): what the node writes parses back to the
 * same fields; a truncated, altered, reordered, padded or incomplete one,
 * or one with a line of junk, is refused, never half-read.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/crc32c.h"
#include "daemon/node/node_persist.h"
#include "tests/unit/unit.h"

static const char HEX[] = "0123456789abcdef0123456789abcdef";

static int good(char *buf, size_t cap)
{
  uint64_t bytes[3] = {4096 * 3, 4096 * 5, 4096 * 7};
  return node_persist_manifest_format(buf, cap, "jobx", HEX, 420, 3,
                                      1700000000123ull, 987654321ull, bytes);
}

START_TEST(test_roundtrip)
{
  char buf[NODE_MANIFEST_MAX], err[200] = "";
  static struct node_manifest m;
  int len = good(buf, sizeof(buf));
  ck_assert_int_gt(len, 0);
  ck_assert_msg(node_persist_manifest_parse(buf, (size_t)len, &m, err,
                                            sizeof(err)) == PT_OK, "%s", err);
  ck_assert_str_eq(m.job, "jobx");
  ck_assert_str_eq(m.instance_hex, HEX);
  ck_assert_uint_eq(m.step, 420);
  ck_assert_uint_eq(m.world, 3);
  ck_assert_uint_eq(m.unix_ms, 1700000000123ull);
  ck_assert_uint_eq(m.mark, 987654321ull);
  ck_assert_uint_eq(m.bytes[2], 4096 * 7);
  /* Too small a buffer: said, never a cut manifest. */
  ck_assert_int_eq(good(buf, 40), -E2BIG);
}
END_TEST

/* Replaces the first occurrence of from by to and fixes the checksum line
 * (a forger can): the body itself must be refused. */
static int edited(char *buf, size_t cap, const char *from, const char *to,
                  bool fix_crc)
{
  char tmp[NODE_MANIFEST_MAX];
  int len = good(tmp, sizeof(tmp));
  char *at = strstr(tmp, from);
  ck_assert_ptr_nonnull(at);
  size_t body = (size_t)len - 16; /* "crc32c XXXXXXXX\n" */
  int k = snprintf(buf, cap, "%.*s%s%.*s", (int)(at - tmp), tmp, to,
                   (int)(body - (size_t)(at - tmp) - strlen(from)),
                   at + strlen(from));
  ck_assert_int_gt(k, 0);
  if (!fix_crc)
    return k + snprintf(buf + k, cap - (size_t)k, "%s", tmp + body);
  return k + snprintf(buf + k, cap - (size_t)k, "crc32c %08x\n",
                      (unsigned)crc32c(buf, (size_t)k));
}

START_TEST(test_hostile)
{
  char buf[NODE_MANIFEST_MAX], err[200];
  static struct node_manifest m;
  int len = good(buf, sizeof(buf));
  /* Every truncation. */
  for (int cut = 0; cut < len; cut++)
    ck_assert_int_eq(node_persist_manifest_parse(buf, (size_t)cut, &m, err,
                                                 sizeof(err)), PT_EFORMAT);
  /* A flipped byte anywhere. */
  for (int i = 0; i < len; i++) {
    buf[i] ^= 0x01;
    ck_assert_int_eq(node_persist_manifest_parse(buf, (size_t)len, &m, err,
                                                 sizeof(err)), PT_EFORMAT);
    buf[i] ^= 0x01;
  }
  /* Bodies with a right checksum that are still wrong. */
  static const struct {
    const char *from, *to;
  } bad[] = {
      {"rank 1 ", "rank 2 "},                 /* out of order */
      {"rank 2 28672\n", ""},                 /* a rank missing */
      {"world 3\n", "world 0\n"},             /* no world */
      {"world 3\n", "world 99999\n"},         /* too many */
      {"step 420\n", ""},                     /* a field missing */
      {"mark 987654321\n", ""},               /* the mark missing */
      {"job jobx\n", "job jobx\nhello\n"},    /* junk */
      {"pt-manifest 1\n", "pt-manifest 2\n"}, /* another version */
      {"instance ", "instance 12"},           /* 34 digits */
      {"step 420\n", "step 420\nstep 421\n"},  /* twice */
      {"step 420\n", "step -1\n"},            /* negative */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int n = edited(buf, sizeof(buf), bad[i].from, bad[i].to, true);
    err[0] = '\0';
    ck_assert_msg(node_persist_manifest_parse(buf, (size_t)n, &m, err,
                                              sizeof(err)) == PT_EFORMAT,
                  "case %zu accepted", i);
    ck_assert_msg(err[0] != '\0', "case %zu: no sentence", i);
  }
  /* A NUL inside. */
  len = good(buf, sizeof(buf));
  buf[5] = '\0';
  ck_assert_int_eq(node_persist_manifest_parse(buf, (size_t)len, &m, err,
                                               sizeof(err)), PT_EFORMAT);
}
END_TEST

int main(void)
{
  Suite *su = suite_create("node_persist");
  TCase *tc = tcase_create("manifest");
  tcase_add_test(tc, test_roundtrip);
  tcase_add_test(tc, test_hostile);
  suite_add_tcase(su, tc);
  return unit_run(su);
}
