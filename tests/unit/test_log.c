/*
 * test_log.c — common/log.c: log_escape writes client text so that it can
 * neither add lines nor pass for other fields, and log_line writes one line
 * per call whatever bytes reach it; a rate-limited line is written first,
 * then at most once per LOG_LIMIT_MS with the count dropped since.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/unit/unit.h"

START_TEST(escape_bytes)
{
  char b[64];

  ck_assert_str_eq(log_escape(b, sizeof(b), "job-1.a_b"), "job-1.a_b");
  ck_assert_str_eq(log_escape(b, sizeof(b), "x\n<3>forged"),
                   "x\\x0a<3>forged");
  ck_assert_str_eq(log_escape(b, sizeof(b), "a\\x0a"), "a\\\\x0a");
  ck_assert_str_eq(log_escape(b, sizeof(b), "\r\t\x1b[31m\x7f"),
                   "\\x0d\\x09\\x1b[31m\\x7f");
  ck_assert_str_eq(log_escape(b, sizeof(b), "caf\xc3\xa9 \xff"),
                   "caf\\xc3\\xa9 \\xff");
  ck_assert_str_eq(log_escape(b, sizeof(b), ""), "");
  ck_assert_str_eq(log_escape(b, sizeof(b), NULL), "(null)");
  ck_assert_str_eq(LOG_ESC("n\n"), "n\\x0a");
}
END_TEST

/* Text that does not fit is cut at a whole escape and ends in "...". */
START_TEST(escape_truncates)
{
  char b[8];

  ck_assert_str_eq(log_escape(b, sizeof(b), "abcdefg"), "abcdefg");
  ck_assert_str_eq(log_escape(b, sizeof(b), "abcdefgh"), "abcd...");
  ck_assert_str_eq(log_escape(b, sizeof(b), "ab\ncdef"), "ab...");
  ck_assert_str_eq(log_escape(b, sizeof(b), "abc\n"), "abc\\x0a");
  ck_assert_str_eq(log_escape(b, sizeof(b), "abc\\\\\\"), "abc...");
  ck_assert_str_eq(log_escape(b, 4, "abcdef"), "...");
  ck_assert_str_eq(log_escape(b, 2, "abcdef"), ".");
  ck_assert_str_eq(log_escape(b, 1, "abcdef"), "");
  char big[LOG_ESC_MAX * 4];
  memset(big, '\n', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  const char *e = LOG_ESC(big);
  ck_assert_uint_lt(strlen(e), LOG_ESC_MAX);
  ck_assert_str_eq(e + strlen(e) - 3, "...");
}
END_TEST

/* One call, one line: a control byte that was not escaped is a space. */
START_TEST(one_line_per_call)
{
  char path[] = "/tmp/pt-test-log.XXXXXX", buf[4096];
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);

  ck_assert_int_ge(fd, 0);
  dup2(fd, STDERR_FILENO);
  log_set_role("ptd test");
  log_warn("raw '%s'", "x\n<3>forged\r");
  log_warn("escaped '%s'", LOG_ESC("x\n<3>forged"));
  dup2(saved, STDERR_FILENO);
  close(saved);
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  ck_assert_int_gt(n, 0);
  buf[n] = '\0';
  close(fd);
  unlink(path);
  ck_assert_str_eq(buf, "<4>ptd test: raw 'x <3>forged '\n"
                        "<4>ptd test: escaped 'x\\x0a<3>forged'\n");
}
END_TEST

/* The decision: the first passes, then one per LOG_LIMIT_MS, each saying
 * how many were held back since the one before. */
START_TEST(limit_decision)
{
  struct log_limit l = {0};
  uint64_t dropped = 99, t = 5000;

  ck_assert(log_limit_pass(&l, t, &dropped));
  ck_assert_uint_eq(dropped, 0);
  for (int i = 0; i < 500; i++)
    ck_assert(!log_limit_pass(&l, t + (uint64_t)i * 10, &dropped));
  ck_assert(!log_limit_pass(&l, t + LOG_LIMIT_MS - 1, &dropped));
  ck_assert(log_limit_pass(&l, t + LOG_LIMIT_MS, &dropped));
  ck_assert_uint_eq(dropped, 501);
  /* The next window counts from the line just written. */
  ck_assert(!log_limit_pass(&l, t + LOG_LIMIT_MS + 1, &dropped));
  ck_assert(log_limit_pass(&l, t + 3 * LOG_LIMIT_MS, &dropped));
  ck_assert_uint_eq(dropped, 1);
  ck_assert(log_limit_pass(&l, t + 5 * LOG_LIMIT_MS, &dropped));
  ck_assert_uint_eq(dropped, 0);
  /* A clock at 0 (a fresh boot's monotonic clock) still passes first. */
  struct log_limit z = {0};
  ck_assert(log_limit_pass(&z, 0, &dropped));
  ck_assert(!log_limit_pass(&z, 0, &dropped));
}
END_TEST

/* The count a burst left behind comes out once the window has passed,
 * with no line of the kind after it; nothing when nothing was dropped. */
START_TEST(limit_flush)
{
  struct log_limit l = {0};
  uint64_t dropped = 99, secs = 99, t = 7000;

  ck_assert(!log_limit_flush(&l, t, &dropped, &secs)); /* nothing yet */
  ck_assert(log_limit_pass(&l, t, &dropped));
  ck_assert(!log_limit_flush(&l, t + 2 * LOG_LIMIT_MS, &dropped, &secs));
  for (int i = 0; i < 300; i++)
    ck_assert(!log_limit_pass(&l, t + 1 + (uint64_t)i, &dropped));
  ck_assert(!log_limit_flush(&l, t + LOG_LIMIT_MS - 1, &dropped, &secs));
  ck_assert(log_limit_flush(&l, t + LOG_LIMIT_MS + 400, &dropped, &secs));
  ck_assert_uint_eq(dropped, 300);
  ck_assert_uint_eq(secs, 10);
  ck_assert(!log_limit_flush(&l, t + 5 * LOG_LIMIT_MS, &dropped, &secs));
  /* the flush counts as a line written: the window starts again there */
  ck_assert(!log_limit_pass(&l, t + 2 * LOG_LIMIT_MS, &dropped));
  ck_assert(log_limit_pass(&l, t + 2 * LOG_LIMIT_MS + 400, &dropped));
  ck_assert_uint_eq(dropped, 1);
}
END_TEST

/* log_limited: 500 calls in a burst write one line; the next one after the
 * interval says how many were dropped. Lines above the level are not
 * counted. */
START_TEST(limited_lines)
{
  char path[] = "/tmp/pt-test-log.XXXXXX", buf[8192];
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);
  struct log_limit l = {0};

  ck_assert_int_ge(fd, 0);
  dup2(fd, STDERR_FILENO);
  log_set_role("ptd test");
  for (int i = 0; i < 500; i++)
    log_limited(&l, LOG_LVL_WARN, "flood %d", i);
  log_limited(&l, LOG_LVL_DEBUG, "not at this level");
  l.last_ms -= LOG_LIMIT_MS; /* as if the interval had passed */
  log_limited(&l, LOG_LVL_WARN, "flood %d", 500);
  log_limited(&l, LOG_LVL_WARN, "flood %d", 501);
  dup2(saved, STDERR_FILENO);
  close(saved);
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  ck_assert_int_gt(n, 0);
  buf[n] = '\0';
  close(fd);
  unlink(path);
  ck_assert_str_eq(buf, "<4>ptd test: flood 0\n"
                        "<4>ptd test: flood 500 (499 more like it dropped in "
                        "the last 10 s)\n");
  ck_assert_uint_eq(l.dropped, 1);
}
END_TEST

static Suite *log_suite(void)
{
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("log");

  tcase_add_test(tc, escape_bytes);
  tcase_add_test(tc, escape_truncates);
  tcase_add_test(tc, one_line_per_call);
  tcase_add_test(tc, limit_decision);
  tcase_add_test(tc, limit_flush);
  tcase_add_test(tc, limited_lines);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(log_suite());
}
