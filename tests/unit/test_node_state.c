/*
 * test_node_state.c — <state-dir>/node.state (daemon/node_state.c): what is
 * written reads back equal, including command arguments with spaces,
 * newlines, '%' and non-ASCII bytes; the file is replaced atomically; and
 * damaged, truncated, reordered or foreign text is refused with
 * PT_EFORMAT and a reason, never half-parsed.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/node.h"
#include "tests/unit/unit.h"

static char *args_in[] = {"/usr/bin/python3", "train file.py", "--lr=1e-3",
                          "a%b", "line\nbreak", "tab\there", "\xc3\xa9t\xc3\xa9",
                          "", NULL};

static void sample(struct node_saved *s, struct node_saved_rank *ranks)
{
  memset(s, 0, sizeof(*s));
  snprintf(s->job, sizeof(s->job), "llama-7b.v2");
  s->ranks = 3;
  s->node_pid = 4242;
  s->has_committed = true;
  s->committed = 123456789012ull;
  s->committed_unix_ms = 1760000000123ull;
  s->restarts = 4;
  s->commits = 99;
  s->restores = 3;
  s->cmd = args_in;
  s->ncmd = 8;
  for (uint32_t r = 0; r < 3; r++) {
    ranks[r].smp = (struct node_saved_proc){.pid = 100 + (int)r,
                                            .start_ticks = 5000 + r,
                                            .restarts = r};
    ranks[r].trainer = (struct node_saved_proc){
        .pid = r == 1 ? 0 : 200 + (int)r, .start_ticks = r == 1 ? 0 : 7000 + r,
        .restarts = 10 + r};
  }
  s->rank = ranks;
}

static void assert_equal(const struct node_saved *a, const struct node_saved *b)
{
  ck_assert_str_eq(a->job, b->job);
  ck_assert_uint_eq(a->ranks, b->ranks);
  ck_assert_int_eq(a->node_pid, b->node_pid);
  ck_assert_int_eq(a->has_committed, b->has_committed);
  ck_assert_uint_eq(a->committed, b->committed);
  ck_assert_uint_eq(a->committed_unix_ms, b->committed_unix_ms);
  ck_assert_uint_eq(a->restarts, b->restarts);
  ck_assert_uint_eq(a->commits, b->commits);
  ck_assert_uint_eq(a->restores, b->restores);
  ck_assert_uint_eq(a->ncmd, b->ncmd);
  for (uint32_t i = 0; i < a->ncmd; i++)
    ck_assert_str_eq(a->cmd[i], b->cmd[i]);
  for (uint32_t r = 0; r < a->ranks; r++) {
    ck_assert_int_eq(a->rank[r].smp.pid, b->rank[r].smp.pid);
    ck_assert_uint_eq(a->rank[r].smp.start_ticks, b->rank[r].smp.start_ticks);
    ck_assert_uint_eq(a->rank[r].smp.restarts, b->rank[r].smp.restarts);
    ck_assert_int_eq(a->rank[r].trainer.pid, b->rank[r].trainer.pid);
    ck_assert_uint_eq(a->rank[r].trainer.start_ticks,
                      b->rank[r].trainer.start_ticks);
    ck_assert_uint_eq(a->rank[r].trainer.restarts,
                      b->rank[r].trainer.restarts);
  }
}

START_TEST(round_trip_text)
{
  struct node_saved in, out;
  struct node_saved_rank ranks[3];
  char *text = NULL, err[200] = "";
  size_t len = 0;

  sample(&in, ranks);
  ck_assert_int_eq(node_state_format(&in, &text, &len), PT_OK);
  ck_assert_uint_eq(strlen(text), len);
  /* One argument per line: the newline inside an argument is escaped. */
  ck_assert_ptr_nonnull(strstr(text, "\ncmd line%0Abreak\n"));
  ck_assert_ptr_nonnull(strstr(text, "\ncmd a%25b\n"));
  ck_assert_int_eq(node_state_parse(text, len, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_saved_release(&out);

  in.has_committed = false;
  in.committed = 0;
  free(text);
  ck_assert_int_eq(node_state_format(&in, &text, &len), PT_OK);
  ck_assert_ptr_nonnull(strstr(text, "\ncommitted none\n"));
  ck_assert_int_eq(node_state_parse(text, len, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_saved_release(&out);
  free(text);
}
END_TEST

START_TEST(round_trip_file)
{
  struct node_saved in, out;
  struct node_saved_rank ranks[3];
  char dir[] = "/tmp/pt-test-node-state.XXXXXX", path[128], tmp[160], err[200];
  struct stat st;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/node.state", dir);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), -ENOENT);
  sample(&in, ranks);
  ck_assert_int_eq(node_state_write(path, &in), PT_OK);
  ck_assert_int_eq(stat(tmp, &st), -1); /* renamed away */
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 0777, 0600);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_saved_release(&out);
  /* A second write replaces the first. */
  in.restarts = 5;
  ck_assert_int_eq(node_state_write(path, &in), PT_OK);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(out.restarts, 5);
  node_saved_release(&out);
  /* A directory where the file should be is refused, not read. */
  unlink(path);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  ck_assert_int_ne(node_state_read(path, &out, err, sizeof(err)), PT_OK);
  rmdir(path);
  rmdir(dir);
}
END_TEST

/* Every way of damaging a good file must be refused with a reason. */
START_TEST(garbage_refused)
{
  struct node_saved in, out;
  struct node_saved_rank ranks[3];
  char *text = NULL;
  size_t len = 0;

  sample(&in, ranks);
  ck_assert_int_eq(node_state_format(&in, &text, &len), PT_OK);

  struct {
    const char *find, *repl;
  } edits[] = {
      {"ptd-node-state 1\n", "ptd-node-state 2\n"},
      {"ptd-node-state 1\n", ""},
      {"ranks 3\n", "ranks 0\n"},
      {"ranks 3\n", "ranks 3x\n"},
      {"ranks 3\n", "ranks -3\n"},
      {"ranks 3\n", "ranks 99999999999999999999999\n"},
      {"ranks 3\n", ""},
      {"node_pid 4242\n", "node_pid 04242\n"},
      {"restarts 4\n", "restarts four\n"},
      {"committed 123456789012\n", "committed soon\n"},
      {"job llama-7b.v2\n", "job \n"},
      {"job llama-7b.v2\n", "job ../../etc\n"},
      {"cmd a%25b\n", "cmd a%2\n"},
      {"cmd a%25b\n", "cmd a%zzb\n"},
      {"cmd a%25b\n", "cmd a%00b\n"},
      {"cmd a%25b\n", "cmd a b\n"},
      {"smp 1 101 5001 1\n", "smp 2 101 5001 1\n"},
      {"smp 1 101 5001 1\n", "smp 1 -101 5001 1\n"},
      {"smp 1 101 5001 1\n", "smp 1 101 5001\n"},
      {"smp 1 101 5001 1\n", "smp 1 101 5001 1 extra\n"},
      {"smp 1 101 5001 1\n", ""},
      {"trainer 2 202 7002 12\n", ""},
      {"trainer 0 200 7000 10\n", "smp 0 200 7000 10\n"},
      {"end\n", ""},
      {"end\n", "end\nmore\n"},
      {"end\n", "end"},
      {"end\n", "end\r\n"},
      {"restores 3\n", "restores 3\nbogus 1\n"},
  };
  for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
    char *pos = strstr(text, edits[i].find);
    ck_assert_msg(pos != NULL, "edit %zu: '%s' not in the text", i,
                  edits[i].find);
    size_t pre = (size_t)(pos - text), flen = strlen(edits[i].find);
    size_t rlen = strlen(edits[i].repl);
    char *bad = malloc(len - flen + rlen + 1);
    memcpy(bad, text, pre);
    memcpy(bad + pre, edits[i].repl, rlen);
    memcpy(bad + pre + rlen, pos + flen, len - pre - flen + 1);
    char err[200] = "";
    int rc = node_state_parse(bad, strlen(bad), &out, err, sizeof(err));
    ck_assert_msg(rc == PT_EFORMAT, "edit %zu ('%s' -> '%s') gave %d", i,
                  edits[i].find, edits[i].repl, rc);
    ck_assert_msg(err[0] != '\0', "edit %zu: no reason given", i);
    ck_assert_ptr_null(out.cmd); /* released on failure */
    free(bad);
  }

  /* Every truncation of the text is refused. */
  for (size_t cut = 0; cut < len; cut++) {
    char err[200];
    ck_assert_int_eq(node_state_parse(text, cut, &out, err, sizeof(err)),
                     PT_EFORMAT);
  }
  /* A NUL byte anywhere is refused. */
  char *nul = strdup(text);
  nul[len / 2] = '\0';
  char err[200];
  ck_assert_int_eq(node_state_parse(nul, len, &out, err, sizeof(err)),
                   PT_EFORMAT);
  free(nul);
  /* Random bytes. */
  srand(99);
  for (int iter = 0; iter < 200; iter++) {
    char buf[512];
    size_t n = (size_t)(rand() % (int)sizeof(buf));
    for (size_t k = 0; k < n; k++)
      buf[k] = (char)(rand() % 256);
    ck_assert_int_eq(node_state_parse(buf, n, &out, err, sizeof(err)),
                     PT_EFORMAT);
  }
  free(text);
}
END_TEST

START_TEST(comments_allowed)
{
  const char *t = "ptd-node-state 1\n"
                  "# a comment\n"
                  "job j\nranks 1\nnode_pid 1\ncommitted none\n"
                  "committed_unix_ms 0\nrestarts 0\ncommits 0\nrestores 0\n"
                  "# between\n"
                  "cmd /bin/true\n"
                  "smp 0 0 0 0\ntrainer 0 0 0 0\nend\n";
  struct node_saved out;
  char err[200];

  ck_assert_int_eq(node_state_parse(t, strlen(t), &out, err, sizeof(err)),
                   PT_OK);
  ck_assert_str_eq(out.job, "j");
  ck_assert_uint_eq(out.ncmd, 1);
  ck_assert_str_eq(out.cmd[0], "/bin/true");
  ck_assert(!out.has_committed);
  node_saved_release(&out);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_state");
  TCase *tc = tcase_create("state");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, round_trip_text);
  tcase_add_test(tc, round_trip_file);
  tcase_add_test(tc, garbage_refused);
  tcase_add_test(tc, comments_allowed);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
