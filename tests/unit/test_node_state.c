/*
 * test_node_state.c — <state-dir>/node.state (daemon/node/node_state.c): what is
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
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/node/node.h"
#include "tests/unit/unit.h"

static char *args_in[] = {"/usr/bin/python3", "train file.py", "--lr=1e-3",
                          "a%b", "line\nbreak", "tab\there", "\xc3\xa9t\xc3\xa9",
                          "", NULL};

static void sample(struct node_saved *s, struct node_saved_rank *ranks)
{
  memset(s, 0, sizeof(*s));
  snprintf(s->job, sizeof(s->job), "llama-7b.v2");
  for (int i = 0; i < 16; i++)
    s->instance[i] = (uint8_t)(0x11 * i);
  s->ended = true;
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
  ck_assert_mem_eq(a->instance, b->instance, sizeof(a->instance));
  ck_assert_int_eq(a->ended, b->ended);
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
  ck_assert_ptr_nonnull(
      strstr(text, "\ninstance 00112233445566778899aabbccddeeff\n"));
  ck_assert_ptr_nonnull(strstr(text, "\nstatus ended\n"));
  ck_assert_int_eq(node_state_parse(text, len, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_state_saved_release(&out);

  in.has_committed = false;
  in.committed = 0;
  free(text);
  ck_assert_int_eq(node_state_format(&in, &text, &len), PT_OK);
  ck_assert_ptr_nonnull(strstr(text, "\ncommitted none\n"));
  ck_assert_int_eq(node_state_parse(text, len, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_state_saved_release(&out);
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
  node_state_saved_release(&out);
  /* A second write replaces the first. */
  in.restarts = 5;
  ck_assert_int_eq(node_state_write(path, &in), PT_OK);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(out.restarts, 5);
  node_state_saved_release(&out);
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
      {"ptd-node-state 2\n", "ptd-node-state 1\n"},
      {"instance 00112233445566778899aabbccddeeff\n", ""},
      {"instance 00112233445566778899aabbccddeeff\n",
       "instance 00112233445566778899aabbccddeef\n"},
      {"instance 00112233445566778899aabbccddeeff\n",
       "instance 00112233445566778899aabbccddeeffa\n"},
      {"instance 00112233445566778899aabbccddeeff\n",
       "instance 00112233445566778899aabbccddeegg\n"},
      {"status ended\n", "status over\n"},
      {"status ended\n", ""},
      {"ptd-node-state 2\n", ""},
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
  const char *t = "ptd-node-state 2\n"
                  "# a comment\n"
                  "job j\ninstance 0123456789abcdef0123456789ABCDEF\n"
                  "status running\nranks 1\nnode_pid 1\ncommitted none\n"
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
  node_state_saved_release(&out);
}
END_TEST

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static void read_file(const char *path, char *buf, size_t cap)
{
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
}

/* A symlink planted as node.state.tmp must not make the node write through
 * it (root would overwrite any file). */
START_TEST(symlink_tmp_not_followed)
{
  struct node_saved in, out;
  struct node_saved_rank ranks[3];
  char dir[] = "/tmp/pt-test-node-state.XXXXXX", path[128], tmp[160],
       victim[160], buf[64], err[200];
  struct stat st;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/node.state", dir);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  snprintf(victim, sizeof(victim), "%s/victim", dir);
  write_file(victim, "precious\n");
  ck_assert_int_eq(symlink(victim, tmp), 0);
  sample(&in, ranks);
  ck_assert_int_eq(node_state_write(path, &in), PT_OK);
  read_file(victim, buf, sizeof(buf));
  ck_assert_str_eq(buf, "precious\n");
  ck_assert_int_eq(lstat(path, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_OK);
  assert_equal(&in, &out);
  node_state_saved_release(&out);
  unlink(path);
  unlink(tmp);
  unlink(victim);
  rmdir(dir);
}
END_TEST

/* node.state as a symlink (to a well-formed file elsewhere) is not read. */
START_TEST(symlink_state_not_read)
{
  struct node_saved in, out;
  struct node_saved_rank ranks[3];
  char dir[] = "/tmp/pt-test-node-state.XXXXXX", path[128], other[160],
       err[200] = "";

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/node.state", dir);
  snprintf(other, sizeof(other), "%s/elsewhere", dir);
  sample(&in, ranks);
  ck_assert_int_eq(node_state_write(other, &in), PT_OK);
  ck_assert_int_eq(symlink(other, path), 0);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
  /* Group- or world-writable: refused as well. */
  unlink(path);
  ck_assert_int_eq(node_state_write(path, &in), PT_OK);
  ck_assert_int_eq(chmod(path, 0622), 0);
  ck_assert_int_eq(node_state_read(path, &out, err, sizeof(err)), PT_EFORMAT);
  unlink(path);
  unlink(other);
  rmdir(dir);
}
END_TEST

START_TEST(state_dir_checked)
{
  char dir[] = "/tmp/pt-test-node-state.XXXXXX", link[160], file[160],
       err[256];

  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(node_state_dir_check(dir, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(chmod(dir, 0770), 0);
  ck_assert_int_eq(node_state_dir_check(dir, err, sizeof(err)), -EPERM);
  ck_assert_ptr_nonnull(strstr(err, "writable by group or others"));
  ck_assert_int_eq(chmod(dir, 0703), 0);
  ck_assert_int_eq(node_state_dir_check(dir, err, sizeof(err)), -EPERM);
  ck_assert_int_eq(chmod(dir, 0755), 0);
  ck_assert_int_eq(node_state_dir_check(dir, err, sizeof(err)), PT_OK);
  snprintf(link, sizeof(link), "%s.link", dir);
  ck_assert_int_eq(symlink(dir, link), 0);
  ck_assert_int_eq(node_state_dir_check(link, err, sizeof(err)), -EPERM);
  ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
  snprintf(file, sizeof(file), "%s/file", dir);
  write_file(file, "x");
  ck_assert_int_eq(node_state_dir_check(file, err, sizeof(err)), -ENOTDIR);
  /* Another owner: only root can make one; /proc/1 is root's. */
  if (geteuid() != 0)
    ck_assert_int_eq(node_state_dir_check("/", err, sizeof(err)), -EPERM);
  unlink(file);
  unlink(link);
  rmdir(dir);
}
END_TEST

/* The parent of the state directory is checked too: one others may write
 * in without the sticky bit, or owned by another non-root user, lets them
 * swap the state directory (mv dir dir.old; mkdir dir): refused. A sticky
 * world-writable parent (/tmp) is fine. */
START_TEST(state_dir_parent_checked)
{
  char base[] = "/tmp/pt-test-node-state.XXXXXX", sd[160], slash[170],
       err[512], cwd[4096];

  ck_assert_ptr_nonnull(mkdtemp(base));
  snprintf(sd, sizeof(sd), "%s/sd", base);
  snprintf(slash, sizeof(slash), "%s//", sd);
  ck_assert_int_eq(mkdir(sd, 0700), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), PT_OK);
  /* /tmp: world-writable and sticky */
  ck_assert_int_eq(node_state_dir_check(base, err, sizeof(err)), PT_OK);

  ck_assert_int_eq(chmod(base, 0777), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), -EPERM);
  ck_assert_msg(strstr(err, "not sticky") != NULL && strstr(err, base),
                "%s", err);
  ck_assert_int_eq(node_state_dir_check(slash, err, sizeof(err)), -EPERM);
  /* Relative: the parent is the working directory. */
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
  ck_assert_int_eq(chdir(base), 0);
  ck_assert_int_eq(node_state_dir_check("sd", err, sizeof(err)), -EPERM);
  ck_assert_int_eq(chdir(cwd), 0);
  ck_assert_int_eq(chmod(base, 0770), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), -EPERM);
  ck_assert_int_eq(chmod(base, 0702), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), -EPERM);
  ck_assert_int_eq(chmod(base, 01777), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(chmod(base, 01770), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(chmod(base, 0755), 0);
  ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(node_state_dir_check(slash, err, sizeof(err)), PT_OK);

  /* Owned by another user who is not root: only root can make one. */
  if (geteuid() == 0) {
    ck_assert_int_eq(chown(base, 65534, 65534), 0);
    ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), -EPERM);
    ck_assert_msg(strstr(err, "owned by uid 65534") != NULL, "%s", err);
    ck_assert_int_eq(chown(base, 0, 0), 0);
    ck_assert_int_eq(node_state_dir_check(sd, err, sizeof(err)), PT_OK);
  } else {
    /* Root's parent is fine for anyone: "/" holds /tmp. */
    ck_assert_int_eq(node_state_dir_check(base, err, sizeof(err)), PT_OK);
  }
  rmdir(sd);
  rmdir(base);
}
END_TEST

/* Re-executes this binary as a stand-in child (see main). */
static int child(bool leader, char *const argv[], char *const envp[])
{
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (leader)
      setsid();
    execve("/proc/self/exe", argv, envp);
    _exit(127);
  }
  /* Until the exec shows in /proc (deadline 5 s). */
  struct timespec ts = {0, 5 * 1000 * 1000};
  for (int i = 0; i < 1000; i++) {
    char buf[256];
    size_t len = 0;
    if (node_proc_cmdline(pid, buf, sizeof(buf), &len) == PT_OK &&
        len > 2 && memmem(buf, len, "stand-in", 9) != NULL)
      return pid;
    nanosleep(&ts, NULL);
  }
  ck_abort_msg("child %d did not exec", pid);
  return -1;
}

static void reap(int pid)
{
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* A pid is adopted only when provably this instance's child of that rank:
 * a forged node.state naming any other process gets nothing. */
START_TEST(foreign_pid_not_ours)
{
  struct node n;
  struct node_rank r;
  const char *hex = "00112233445566778899aabbccddeeff";
  const char *other = "ffeeddccbbaa99887766554433221100";

  memset(&n, 0, sizeof(n));
  memset(&r, 0, sizeof(r));
  snprintf(n.instance_hex, sizeof(n.instance_hex), "%s", hex);
  r.node = &n;
  r.rank = 1;
  snprintf(r.sock_path, sizeof(r.sock_path), "/tmp/x/smp.1.sock");

  char *targv[] = {"t", "stand-in", NULL};
  char *tenv[] = {"PATH=/bin", "PT_INSTANCE=00112233445566778899aabbccddeeff",
                  "PT_RANK=1", "PT_SMP_SOCKET=/tmp/x/smp.1.sock", NULL};
  /* The same instance and rank, run from another state dir (a copied
   * node.state), or without a socket: not ours. */
  char *tenv_dir[] = {"PT_INSTANCE=00112233445566778899aabbccddeeff",
                      "PT_RANK=1", "PT_SMP_SOCKET=/tmp/y/smp.1.sock", NULL};
  char *tenv_nosock[] = {"PT_INSTANCE=00112233445566778899aabbccddeeff",
                         "PT_RANK=1", NULL};
  char *tenv_other[] = {"PT_INSTANCE=ffeeddccbbaa99887766554433221100",
                        "PT_RANK=1", NULL};
  char *tenv_rank[] = {"PT_INSTANCE=00112233445566778899aabbccddeeff",
                       "PT_RANK=0", NULL};
  char *sargv[] = {"ptd", "smp", "--job", "j", "--socket", "/tmp/x/smp.1.sock",
                   "--instance", "00112233445566778899aabbccddeeff",
                   "stand-in", NULL};
  char *noenv[] = {NULL};

  /* This process: not a session leader, no PT_INSTANCE. */
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, getpid()));
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_SMP, getpid()));
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, 1));

  /* node_proc_identify looks through every rank of n. */
  struct node_rank ranks[2];
  enum node_role role;
  uint32_t rank;
  memset(ranks, 0, sizeof(ranks));
  for (uint32_t i = 0; i < 2; i++) {
    ranks[i].node = &n;
    ranks[i].rank = i;
    snprintf(ranks[i].sock_path, sizeof(ranks[i].sock_path),
             "/tmp/x/smp.%u.sock", i);
  }
  n.ranks = ranks;
  n.cfg.ranks = 2;
  ck_assert(!node_proc_identify(&n, getpid(), &role, &rank));

  int p = child(true, targv, tenv);
  ck_assert(node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  ck_assert(node_proc_identify(&n, p, &role, &rank));
  ck_assert_int_eq(role, NODE_ROLE_TRAINER);
  ck_assert_uint_eq(rank, 1);
  n.cfg.ranks = 1; /* PT_RANK=1 is no rank of a 1-rank job */
  ck_assert(!node_proc_identify(&n, p, &role, &rank));
  n.cfg.ranks = 2;
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_SMP, p));
  snprintf(n.instance_hex, sizeof(n.instance_hex), "%s", other);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  snprintf(n.instance_hex, sizeof(n.instance_hex), "%s", hex);
  reap(p);

  p = child(false, targv, tenv); /* not a session leader */
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  reap(p);
  p = child(true, targv, tenv_other);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  ck_assert(!node_proc_identify(&n, p, &role, &rank));
  reap(p);
  p = child(true, targv, tenv_rank);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  reap(p);
  p = child(true, targv, tenv_dir);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  ck_assert(!node_proc_identify(&n, p, &role, &rank));
  reap(p);
  p = child(true, targv, tenv_nosock);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  ck_assert(!node_proc_identify(&n, p, &role, &rank));
  reap(p);

  p = child(false, sargv, noenv);
  ck_assert(node_proc_is_ours(&n, &r, NODE_ROLE_SMP, p));
  ck_assert(node_proc_identify(&n, p, &role, &rank));
  ck_assert_int_eq(role, NODE_ROLE_SMP);
  ck_assert_uint_eq(rank, 1);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_TRAINER, p));
  snprintf(n.instance_hex, sizeof(n.instance_hex), "%s", other);
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_SMP, p));
  snprintf(n.instance_hex, sizeof(n.instance_hex), "%s", hex);
  snprintf(r.sock_path, sizeof(r.sock_path), "/tmp/x/smp.0.sock");
  ck_assert(!node_proc_is_ours(&n, &r, NODE_ROLE_SMP, p));
  reap(p);
}
END_TEST

int main(int argc, char **argv)
{
  /* A stand-in child of foreign_pid_not_ours: waits to be killed. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "stand-in") == 0) {
      sleep(30);
      return 0;
    }
  Suite *s = suite_create("node_state");
  TCase *tc = tcase_create("state");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, round_trip_text);
  tcase_add_test(tc, round_trip_file);
  tcase_add_test(tc, garbage_refused);
  tcase_add_test(tc, comments_allowed);
  tcase_add_test(tc, symlink_tmp_not_followed);
  tcase_add_test(tc, symlink_state_not_read);
  tcase_add_test(tc, state_dir_checked);
  tcase_add_test(tc, state_dir_parent_checked);
  tcase_add_test(tc, foreign_pid_not_ours);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
