/*
 * test_common.c — common/: CRC32C over any length and joined from pieces
 * (checked against ISA-L called directly), the monotonic clock, and the
 * state-file writer and reader: an atomic replace that never writes through
 * a planted link, and a reader that takes only this user's regular file that
 * nobody else may write; the value of a hex digit (common/hex.h).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/hex.h"
#include "common/monotime.h"
#include "common/state_file.h"
#include "tests/unit/unit.h"

static char g_dir[64];

static void path_of(char *out, size_t len, const char *name)
{
  snprintf(out, len, "%s/%s", g_dir, name);
}

/* The standard check value: CRC-32C("123456789") is 0xE3069283 with the
 * usual final inversion, which crc32_iscsi leaves to the caller. */
START_TEST(crc_known_value)
{
  ck_assert_uint_eq(crc32c("123456789", 9), ~0xE3069283u);
  ck_assert_uint_eq(crc32c("", 0), CRC32C_SEED);
}
END_TEST

/* Joined from pieces at every split, as ISA-L computes the whole. */
START_TEST(crc_combine_matches_whole)
{
  enum { N = 3000 };
  static unsigned char b[N];
  for (int i = 0; i < N; i++)
    b[i] = (unsigned char)(i * 131 + 7);
  uint32_t whole = crc32_iscsi(b, N, CRC32C_SEED);
  ck_assert_uint_eq(crc32c(b, N), whole);
  for (size_t cut = 0; cut <= N; cut += 97) {
    uint32_t a = crc32c_update(CRC32C_SEED, b, cut);
    ck_assert_uint_eq(crc32c_update(a, b + cut, N - cut), whole);
    uint32_t tail = crc32c_update(0, b + cut, N - cut);
    ck_assert_uint_eq(crc32c_combine(a, tail, N - cut), whole);
    ck_assert_uint_eq(crc32c_shift(a, crc32c_shift_op(N - cut)) ^ tail, whole);
  }
}
END_TEST

START_TEST(clock_moves_forward)
{
  uint64_t a = monotime_ns(), ms = monotime_ms();
  usleep(20000);
  uint64_t b = monotime_ns();
  ck_assert_uint_ge(b - a, 20000000u);
  ck_assert_uint_ge(monotime_ms(), ms + 20);
}
END_TEST

static void read_text(const char *path, char *out, size_t cap)
{
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = '\0';
  fclose(f);
}

/* Replaced whole, mode 0600, no temporary left behind; a link planted at
 * the temporary name is removed, never written through. */
START_TEST(write_replaces_atomically)
{
  char p[128], tmp[140], victim[128], got[64];
  struct stat st;

  path_of(p, sizeof(p), "state");
  ck_assert_int_eq(state_file_write(p, "one\n", 4), 0);
  read_text(p, got, sizeof(got));
  ck_assert_str_eq(got, "one\n");
  ck_assert_int_eq(stat(p, &st), 0);
  ck_assert_uint_eq(st.st_mode & 0777, 0600);
  snprintf(tmp, sizeof(tmp), "%s.tmp", p);
  ck_assert_int_eq(access(tmp, F_OK), -1);

  path_of(victim, sizeof(victim), "victim");
  int fd = open(victim, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, "keep", 4), 4);
  close(fd);
  ck_assert_int_eq(symlink(victim, tmp), 0);
  ck_assert_int_eq(state_file_write(p, "two\n", 4), 0);
  read_text(p, got, sizeof(got));
  ck_assert_str_eq(got, "two\n");
  read_text(victim, got, sizeof(got));
  ck_assert_str_eq(got, "keep");
  ck_assert_int_eq(lstat(tmp, &st), -1);
}
END_TEST

START_TEST(read_checks_the_file)
{
  char p[128], link[128], err[256], *text;
  size_t len;

  path_of(p, sizeof(p), "rd");
  ck_assert_int_eq(state_file_write(p, "hello", 5), 0);
  ck_assert_int_eq(state_file_read(p, 64, &text, &len, err, sizeof(err)), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert_str_eq(text, "hello"); /* NUL-terminated */
  free(text);
  /* larger than the cap */
  ck_assert_int_eq(state_file_read(p, 4, &text, &len, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "at most 4 bytes"));
  ck_assert_ptr_null(text);
  /* writable by others */
  ck_assert_int_eq(chmod(p, 0622), 0);
  ck_assert_int_eq(state_file_read(p, 64, &text, &len, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "mode 622"));
  ck_assert_int_eq(chmod(p, 0600), 0);
  /* through a link */
  path_of(link, sizeof(link), "rd.link");
  ck_assert_int_eq(symlink(p, link), 0);
  ck_assert_int_eq(state_file_read(link, 64, &text, &len, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
  /* not a regular file */
  ck_assert_int_eq(state_file_read(g_dir, 64, &text, &len, err, sizeof(err)),
                   PT_EFORMAT);
  /* missing */
  path_of(p, sizeof(p), "none");
  ck_assert_int_eq(state_file_read(p, 64, &text, &len, err, sizeof(err)),
                   -ENOENT);
}
END_TEST

START_TEST(hex_digits)
{
  for (int c = 0; c < 256; c++) {
    int want = c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
    ck_assert_int_eq(hex_value((char)c), want);
  }
  ck_assert_int_eq(hex_value('f'), 15);
  ck_assert_int_eq(hex_value('A'), 10);
  ck_assert_int_eq(hex_value('g'), -1);
  ck_assert_int_eq(hex_value('\0'), -1);
}
END_TEST

static Suite *common_suite(void)
{
  Suite *s = suite_create("common");
  TCase *tc = tcase_create("common");

  tcase_add_test(tc, crc_known_value);
  tcase_add_test(tc, crc_combine_matches_whole);
  tcase_add_test(tc, clock_moves_forward);
  tcase_add_test(tc, write_replaces_atomically);
  tcase_add_test(tc, read_checks_the_file);
  tcase_add_test(tc, hex_digits);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  snprintf(g_dir, sizeof(g_dir), "/tmp/pt-common.XXXXXX");
  if (mkdtemp(g_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  int rc = unit_run(common_suite());
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", g_dir);
  return rc;
}
