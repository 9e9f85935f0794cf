/*
 * test_common_journal.c — common/journal.c: records appended are replayed
 * in order after a reopen; a torn last record (cut short, a bad CRC with
 * nothing after it, a zero-filled tail) is dropped and the file cut back;
 * damage with records after it (a length that damage made run past the
 * end over whole records too), a foreign header or another version is
 * refused naming the offset; compaction replaces the journal with the
 * records given; the file is this user's 0600 file, never a link, and held
 * by one process at a time.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "tests/unit/unit.h"

static char g_dir[64];

struct seen {
  int n;
  uint32_t types[64];
  char data[64][32];
};

static int collect(void *arg, uint32_t type, const void *data, size_t len)
{
  struct seen *s = arg;
  ck_assert_int_lt(s->n, 64);
  ck_assert_uint_lt(len, 32);
  s->types[s->n] = type;
  memcpy(s->data[s->n], data, len);
  s->data[s->n][len] = '\0';
  s->n++;
  return 0;
}

static void jpath(char *out, size_t len, const char *name)
{
  snprintf(out, len, "%s/%s", g_dir, name);
}

static off_t fsize(const char *p)
{
  struct stat st;
  ck_assert_int_eq(stat(p, &st), 0);
  return st.st_size;
}

/* A journal of three records "r1", "rec2", "record3" (types 1, 2, 3). */
static void make3(const char *p)
{
  struct journal *j;
  char err[256];

  unlink(p);
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(journal_append(j, 1, "r1", 2), 0);
  ck_assert_int_eq(journal_append(j, 2, "rec2", 4), 0);
  ck_assert_int_eq(journal_append(j, 3, "record3", 7), 0);
  ck_assert_uint_eq(journal_records(j), 3);
  ck_assert_uint_eq(journal_bytes(j), (uint64_t)fsize(p));
  journal_close(j);
}

static void poke(const char *p, off_t off, uint8_t v)
{
  int fd = open(p, O_WRONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, &v, 1, off), 1);
  close(fd);
}

START_TEST(append_and_replay)
{
  char p[128], err[256];
  struct journal *j;
  struct seen s = { 0 };
  uint64_t dropped = 99;
  struct stat st;

  jpath(p, sizeof(p), "j1");
  make3(p);
  ck_assert_int_eq(stat(p, &st), 0);
  ck_assert_uint_eq(st.st_mode & 0777, 0600);
  ck_assert_int_eq(journal_open(&j, p, collect, &s, &dropped, err,
                                sizeof(err)), 0);
  ck_assert_uint_eq(dropped, 0);
  ck_assert_int_eq(s.n, 3);
  ck_assert_uint_eq(s.types[0], 1);
  ck_assert_str_eq(s.data[0], "r1");
  ck_assert_str_eq(s.data[2], "record3");
  /* appends go on after a replay */
  ck_assert_int_eq(journal_append(j, 4, "four", 4), 0);
  ck_assert_int_eq(journal_append(j, 0, "x", 1), -EINVAL);
  ck_assert_int_eq(journal_append(j, 5, NULL, JOURNAL_MAX_RECORD + 1), -E2BIG);
  journal_close(j);
  memset(&s, 0, sizeof(s));
  ck_assert_int_eq(journal_open(&j, p, collect, &s, NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(s.n, 4);
  ck_assert_str_eq(s.data[3], "four");
  journal_close(j);
}
END_TEST

/* A crash in the middle of an append: the record never took effect. */
START_TEST(torn_tail_dropped)
{
  char p[128], err[256];
  struct journal *j;
  struct seen s;
  uint64_t dropped;

  jpath(p, sizeof(p), "j2");
  off_t full;
  for (int how = 0; how < 4; how++) {
    make3(p);
    full = fsize(p);
    if (how == 0) /* cut in the payload */
      ck_assert_int_eq(truncate(p, full - 3), 0);
    else if (how == 1) /* cut in the record header */
      ck_assert_int_eq(truncate(p, full - 7 - 12 + 5), 0);
    else if (how == 2) /* whole, but its bytes not all written */
      poke(p, full - 1, 'X');
    else { /* a zero-filled tail after the last record */
      int fd = open(p, O_WRONLY | O_APPEND);
      static const uint8_t z[100];
      ck_assert_int_eq(write(fd, z, sizeof(z)), (ssize_t)sizeof(z));
      close(fd);
    }
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(journal_open(&j, p, collect, &s, &dropped, err,
                                  sizeof(err)), 0);
    ck_assert_int_eq(s.n, how == 3 ? 3 : 2);
    ck_assert_uint_gt(dropped, 0);
    ck_assert_uint_eq(journal_bytes(j), (uint64_t)fsize(p)); /* cut back */
    ck_assert_int_eq(journal_append(j, 9, "after", 5), 0);
    journal_close(j);
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(journal_open(&j, p, collect, &s, &dropped, err,
                                  sizeof(err)), 0);
    ck_assert_uint_eq(dropped, 0);
    ck_assert_int_eq(s.n, how == 3 ? 4 : 3);
    ck_assert_str_eq(s.data[s.n - 1], "after");
    journal_close(j);
  }
}
END_TEST

/* Damage that a crash does not make: refused, naming the offset, and the
 * file left as it was. */
START_TEST(damage_refused)
{
  char p[128], err[256];
  struct journal *j;
  struct seen s = { 0 };

  jpath(p, sizeof(p), "j3");
  make3(p);
  off_t before = fsize(p);
  poke(p, JOURNAL_HDR_BYTES + JOURNAL_REC_HDR_BYTES, 'Z'); /* record 1 */
  ck_assert_int_eq(journal_open(&j, p, collect, &s, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "record 1 at offset 16 is damaged") != NULL, "%s",
                err);
  ck_assert_ptr_nonnull(strstr(err, "CRC32C"));
  ck_assert_int_eq(fsize(p), before);

  make3(p);
  poke(p, JOURNAL_HDR_BYTES + 3, 0x7f); /* record 1's length: 2 GiB */
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "length is over the limit"));

  /* A length that damage makes run past the end of the file, with whole
   * records after its header: not a torn append (that is always the last
   * record, and nothing whole follows its header), so refused, and
   * records 1 to 3 not cut away. Both in the first record and in the
   * middle one. */
  for (int rec = 0; rec < 2; rec++) {
    make3(p);
    before = fsize(p);
    off_t at = JOURNAL_HDR_BYTES + (rec == 0 ? 0 : JOURNAL_REC_HDR_BYTES + 2);
    poke(p, at + 1, 0x10); /* its length: 4 KiB more */
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(journal_open(&j, p, collect, &s, NULL, err, sizeof(err)),
                     PT_EFORMAT);
    ck_assert_msg(strstr(err, rec == 0 ? "record 1 at offset 16 is damaged"
                                       : "record 2 at offset 30 is damaged")
                      != NULL, "%s", err);
    ck_assert_int_eq(fsize(p), before);
  }
  /* ... or exactly to the end, over record 3: a bad CRC there is no tear */
  make3(p);
  before = fsize(p);
  poke(p, 30, (uint8_t)(before - 30 - JOURNAL_REC_HDR_BYTES));
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_msg(strstr(err, "record 2 at offset 30 is damaged (its CRC32C "
                            "does not match, and a whole record follows at "
                            "offset 46") != NULL, "%s", err);
  ck_assert_int_eq(fsize(p), before);

  make3(p);
  poke(p, 0, 'X');
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "is not a pt journal"));

  make3(p);
  poke(p, 8, 7);
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "version 7"));
}
END_TEST

/* A replay callback's error stops the open and is returned. */
static int refuse_type2(void *arg, uint32_t type, const void *d, size_t n)
{
  (void)arg; (void)d; (void)n;
  return type == 2 ? -EILSEQ : 0;
}

START_TEST(replay_error_returned)
{
  char p[128], err[256];
  struct journal *j;

  jpath(p, sizeof(p), "j4");
  make3(p);
  ck_assert_int_eq(journal_open(&j, p, refuse_type2, NULL, NULL, err,
                                sizeof(err)), -EILSEQ);
}
END_TEST

START_TEST(compaction)
{
  char p[128], err[256];
  struct journal *j;
  struct seen s = { 0 };

  jpath(p, sizeof(p), "j5");
  unlink(p);
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)), 0);
  for (int i = 0; i < 1000; i++)
    ck_assert_int_eq(journal_append(j, 2, "commit", 6), 0);
  off_t big = fsize(p);
  struct journal_rec now[2] = { { 1, "job", 3 }, { 2, "last", 4 } };
  ck_assert_int_eq(journal_compact(j, now, 2), 0);
  ck_assert_int_lt(fsize(p), big / 100);
  ck_assert_uint_eq(journal_records(j), 2);
  ck_assert_int_eq(journal_append(j, 3, "next", 4), 0);
  char tmp[140];
  snprintf(tmp, sizeof(tmp), "%s.tmp", p);
  ck_assert_int_eq(access(tmp, F_OK), -1);
  /* still held: the new file is locked too */
  struct journal *j2;
  ck_assert_int_eq(journal_open(&j2, p, NULL, NULL, NULL, err, sizeof(err)),
                   -EBUSY);
  journal_close(j);
  ck_assert_int_eq(journal_open(&j, p, collect, &s, NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(s.n, 3);
  ck_assert_str_eq(s.data[0], "job");
  ck_assert_str_eq(s.data[1], "last");
  ck_assert_str_eq(s.data[2], "next");
  journal_close(j);
}
END_TEST

START_TEST(file_checks)
{
  char p[128], link[128], err[256];
  struct journal *j, *j2;

  jpath(p, sizeof(p), "j6");
  make3(p);
  ck_assert_int_eq(chmod(p, 0644), 0);
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "mode 644"));
  ck_assert_int_eq(chmod(p, 0600), 0);
  jpath(link, sizeof(link), "j6.link");
  ck_assert_int_eq(symlink(p, link), 0);
  ck_assert_int_eq(journal_open(&j, link, NULL, NULL, NULL, err, sizeof(err)),
                   PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
  ck_assert_int_eq(journal_open(&j, g_dir, NULL, NULL, NULL, err, sizeof(err)),
                   -EISDIR);
  ck_assert_int_eq(journal_open(&j, p, NULL, NULL, NULL, err, sizeof(err)), 0);
  ck_assert_int_eq(journal_open(&j2, p, NULL, NULL, NULL, err, sizeof(err)),
                   -EBUSY);
  ck_assert_ptr_nonnull(strstr(err, "held by another process"));
  journal_close(j);
}
END_TEST

static Suite *journal_suite(void)
{
  Suite *s = suite_create("journal");
  TCase *tc = tcase_create("journal");

  tcase_add_test(tc, append_and_replay);
  tcase_add_test(tc, torn_tail_dropped);
  tcase_add_test(tc, damage_refused);
  tcase_add_test(tc, replay_error_returned);
  tcase_add_test(tc, compaction);
  tcase_add_test(tc, file_checks);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  snprintf(g_dir, sizeof(g_dir), "/tmp/pt-journal.XXXXXX");
  if (mkdtemp(g_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  int rc = unit_run(journal_suite());
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", g_dir);
  return rc;
}
