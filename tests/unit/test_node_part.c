/*
 * test_node_part.c — `ptd node` in cluster mode running a job part.
 *
 * The pure pieces (node_plan.c): the torchrun environment of a part's
 * ranks, the checks of a JOB_ASSIGN, STEP_SEALED once per step from the
 * ranks' sealed sets, the vote from the ranks' PIN answers, and the epoch
 * fence.
 *
 * Then a fake controller over real TCP (a blocking listener on 127.0.0.1
 * port 0 answering the authenticated handshake) and a real `ptd node
 * --controller` (build/bin/ptd) with tests' pt-train (build/bin/pt-train):
 * the node registers; a JOB_ASSIGN over its capacity is refused (failed,
 * -ENOSPC) and changes nothing; JOB_ASSIGN of 2 ranks -> JOB_PART_STATE starting,
 * running; each trainer's environment (RANK = first_rank + local rank,
 * WORLD_SIZE, GROUP_RANK, MASTER_*); STEP_SEALED arrives; JOB_PIN -> JOB_VOTE
 * 0 -> JOB_COMMIT, and the node's STATUS_REPLY (what `ptctl --state-dir`
 * shows) has the committed step; the node killed with SIGKILL and started
 * again takes its part up (the same trainers, re-adopted), re-registers and
 * reports it running; a JOB_ASSIGN of the same epoch changes nothing; a
 * JOB_PIN of an older epoch is PT_EEPOCH; a JOB_ASSIGN of a newer epoch
 * stops the old trainers before the new ones start (restoring the
 * committed step); a trainer killed ends the part "failed" (no local
 * restart) with the rank and cause named, and the next epoch starts it
 * again; JOB_HALT{remove} stops them and removes the objects; a trainer's
 * exit 78, a trainer command that cannot be run and a budget refused
 * before start are reported failed and permanent (the budget with its
 * numbers), a killed trainer is not; a job of the same name starting
 * above the older one's epochs (first_epoch) over its stopped part is a new
 * job instance with PT_RESTART 0, and a late halt of the older epoch
 * changes nothing; SIGTERM
 * stops a running part's ranks, then the node (exit 3).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/state_file.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/unit.h"

/* ---- the pure pieces ---- */

START_TEST(rank_env_from_assignment)
{
  struct node_config cfg;
  struct node_rank_env e;

  memset(&cfg, 0, sizeof(cfg));
  cfg.ranks = 2;
  cfg.master_port = 29500;
  node_plan_rank_env(&cfg, 1, &e); /* standalone */
  ck_assert_uint_eq(e.rank, 1);
  ck_assert_uint_eq(e.world, 2);
  ck_assert_uint_eq(e.local_rank, 1);
  ck_assert_uint_eq(e.local_world, 2);
  ck_assert_uint_eq(e.group_rank, 0);
  ck_assert_str_eq(e.master_addr, "127.0.0.1");

  cfg.ranks = 4; /* node 2 of 3, 4 ranks each */
  cfg.first_rank = 8;
  cfg.world = 12;
  cfg.group_rank = 2;
  cfg.master_port = 31000;
  snprintf(cfg.master_addr, sizeof(cfg.master_addr), "10.0.0.7");
  node_plan_rank_env(&cfg, 3, &e);
  ck_assert_uint_eq(e.rank, 11);
  ck_assert_uint_eq(e.world, 12);
  ck_assert_uint_eq(e.local_rank, 3);
  ck_assert_uint_eq(e.local_world, 4);
  ck_assert_uint_eq(e.group_rank, 2);
  ck_assert_uint_eq(e.master_port, 31000);
  ck_assert_str_eq(e.master_addr, "10.0.0.7");
  ck_assert_uint_eq(node_plan_world(&cfg), 12);
}
END_TEST

/* part.state keeps a part's failure: whether it is permanent (exit 78,
 * PT_EBUDGET, an unrunnable trainer: not restarted), its status and its
 * words, so a restarted node still reports it so; a record of version 1
 * (no failure) is still read. */
START_TEST(part_record_failure)
{
  char dir[] = "/tmp/pt-test-partrec.XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  Pt__JobAssign a = PT__JOB_ASSIGN__INIT;
  char *argv[] = {"pt-train"};
  s.name = "j";
  s.argv = argv;
  s.n_argv = 1;
  s.nodes = 1;
  s.ranks_per_node = 1;
  a.spec = &s;
  a.epoch = 3;
  a.world_size = 1;
  a.master_addr = "127.0.0.1";
  a.master_port = 29500;
  uint8_t buf[512];
  size_t len = pt__job_assign__pack(&a, buf);

  struct node_part w, r;
  memset(&w, 0, sizeof(w));
  snprintf(w.path, sizeof(w.path), "%s/part.state", dir);
  w.buf = buf;
  w.len = len;
  w.end = PART_FAILED;
  memset(w.instance, 7, sizeof(w.instance));
  w.fail_permanent = true;
  w.fail_status = PT_ECONFIG;
  snprintf(w.fail_msg, sizeof(w.fail_msg),
           "node 'b': trainer rank 1 (local 1 on node b) (pid 9) exited "
           "with status 78");
  ck_assert_int_eq(node_part_record_write(&w), PT_OK);
  char err[200];
  memset(&r, 0, sizeof(r));
  snprintf(r.path, sizeof(r.path), "%s", w.path);
  ck_assert_int_eq(node_part_record_read(&r, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(r.end, PART_FAILED);
  ck_assert_uint_eq(r.epoch, 3);
  ck_assert(r.fail_permanent);
  ck_assert_int_eq(r.fail_status, PT_ECONFIG);
  ck_assert_str_eq(r.fail_msg, w.fail_msg);
  free(r.buf);
  /* running, its ranks stopping for a permanent failure */
  w.end = PART_RUNNING;
  ck_assert_int_eq(node_part_record_write(&w), PT_OK);
  memset(&r, 0, sizeof(r));
  snprintf(r.path, sizeof(r.path), "%s", w.path);
  ck_assert_int_eq(node_part_record_read(&r, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(r.end, PART_RUNNING);
  ck_assert(r.fail_permanent);
  free(r.buf);
  /* a failure not permanent */
  w.end = PART_FAILED;
  w.fail_permanent = false;
  w.fail_status = -EIO;
  ck_assert_int_eq(node_part_record_write(&w), PT_OK);
  memset(&r, 0, sizeof(r));
  snprintf(r.path, sizeof(r.path), "%s", w.path);
  ck_assert_int_eq(node_part_record_read(&r, err, sizeof(err)), PT_OK);
  ck_assert(!r.fail_permanent);
  ck_assert_int_eq(r.fail_status, -EIO);
  free(r.buf);
  /* a flipped byte in the failure's words: refused */
  int fd = open(w.path, O_RDWR);
  ck_assert_int_ge(fd, 0);
  struct stat st;
  ck_assert_int_eq(fstat(fd, &st), 0);
  uint8_t c;
  ck_assert_int_eq(pread(fd, &c, 1, st.st_size - 10), 1);
  c ^= 0x20;
  ck_assert_int_eq(pwrite(fd, &c, 1, st.st_size - 10), 1);
  close(fd);
  memset(&r, 0, sizeof(r));
  snprintf(r.path, sizeof(r.path), "%s", w.path);
  ck_assert_int_eq(node_part_record_read(&r, err, sizeof(err)), PT_EFORMAT);
  /* version 1: the header and the assignment only */
  uint8_t v1[PART_HEAD + 512];
  uint32_t v = 1, end = PART_FAILED, plen = (uint32_t)len, crc;
  memcpy(v1, PART_MAGIC, 8);
  memcpy(v1 + 8, &v, 4);
  memcpy(v1 + 12, &end, 4);
  memset(v1 + 16, 7, SNAP_INSTANCE_BYTES);
  memcpy(v1 + 16 + SNAP_INSTANCE_BYTES, &plen, 4);
  crc = crc32c(v1, 20 + SNAP_INSTANCE_BYTES);
  memcpy(v1 + 20 + SNAP_INSTANCE_BYTES, &crc, 4);
  memcpy(v1 + PART_HEAD, buf, len);
  ck_assert_int_eq(state_file_write(w.path, v1, PART_HEAD + len), PT_OK);
  memset(&r, 0, sizeof(r));
  snprintf(r.path, sizeof(r.path), "%s", w.path);
  ck_assert_int_eq(node_part_record_read(&r, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(r.end, PART_FAILED);
  ck_assert(!r.fail_permanent);
  ck_assert_str_eq(r.fail_msg, "");
  free(r.buf);
  unlink(w.path);
  rmdir(dir);
}
END_TEST

/* Messages name a rank by the job's global rank, and in cluster mode say
 * which local rank of which node it is. */
START_TEST(rank_named)
{
  char b[NODE_RANK_NAME_MAX];

  ck_assert_str_eq(node_plan_rank_name(b, sizeof(b), false, 0, "", 1), "1");
  ck_assert_str_eq(node_plan_rank_name(b, sizeof(b), true, 2, "nb", 1),
                   "3 (local 1 on node nb)");
  struct node n;
  memset(&n, 0, sizeof(n));
  n.cfg.cluster = true;
  n.cfg.first_rank = 8;
  snprintf(n.cfg.node_id, sizeof(n.cfg.node_id), "n-7");
  ck_assert_str_eq(NODE_RANK(&n, 3), "11 (local 3 on node n-7)");
}
END_TEST

START_TEST(assign_checked)
{
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  Pt__JobAssign a = PT__JOB_ASSIGN__INIT;
  char *argv[] = {"pt-train"};
  char err[256];

  s.name = "j";
  s.argv = argv;
  s.n_argv = 1;
  s.nodes = 2;
  s.ranks_per_node = 2;
  a.spec = &s;
  a.epoch = 1;
  a.node_index = 1;
  a.first_rank = 2;
  a.world_size = 4;
  a.master_addr = "127.0.0.1";
  a.master_port = 29500;
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(node_plan_assign_check(&a, 1, err, sizeof(err)), -ENOSPC);
  ck_assert_ptr_nonnull(strstr(err, "capacity"));
  a.first_rank = 3; /* ranks 3..4 of 4 */
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
  a.first_rank = 2;
  s.name = "../x";
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
  s.name = "j";
  s.n_argv = 0;
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
  s.n_argv = 1;
  a.epoch = 0;
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
  a.epoch = 1;
  a.master_port = 0;
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
  a.master_port = 29500;
  s.has_slots = true;
  s.slots = 1;
  ck_assert_int_eq(node_plan_assign_check(&a, 8, err, sizeof(err)), -EINVAL);
}
END_TEST

/* The node group of an assignment: taken when it fits the job's code and
 * names this node; each local rank's SMP is told its own coding group. */
START_TEST(group_from_assignment)
{
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  Pt__JobAssign a = PT__JOB_ASSIGN__INIT;
  Pt__NodeGroup g = PT__NODE_GROUP__INIT;
  Pt__GroupMember m[3] = {PT__GROUP_MEMBER__INIT, PT__GROUP_MEMBER__INIT,
                          PT__GROUP_MEMBER__INIT};
  Pt__GroupMember *mp[3] = {&m[0], &m[1], &m[2]};
  struct code_group cg;
  char err[300];

  s.name = "j";
  s.nodes = 7;
  s.ranks_per_node = 4;
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  a.spec = &s;
  a.node_index = 5;
  /* node group 1 of a 7-node 2+1 job: nodes 1, 3, 5 (this one member 2) */
  g.index = 1;
  g.k = 2;
  g.m = 1;
  g.n_members = 3;
  g.members = mp;
  static const uint32_t idx[] = {1, 3, 5};
  static char *const ids[] = {"n-b", "n=c", "me"};
  static char *const adv[] = {"10.0.0.2", NULL, "10.0.0.6"};
  for (int i = 0; i < 3; i++) {
    m[i].node_index = idx[i];
    m[i].node_id = ids[i];
    m[i].advertise = adv[i];
  }
  /* a coded job without a group, and a group for a job without code */
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "names no coding group"));
  a.group = &g;
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(cg.k, 2);
  ck_assert_uint_eq(cg.group, 1);
  ck_assert_uint_eq(cg.member, 2);
  ck_assert_str_eq(cg.members[1].node_id, "n=c");
  ck_assert_str_eq(cg.members[1].addr, ""); /* not known */
  ck_assert_str_eq(cg.members[0].addr, "10.0.0.2");
  /* per local rank: coding group 1 x 4 + r, the same members */
  struct node_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.ranks = 4;
  cfg.group = cg;
  for (uint32_t r = 0; r < 4; r++) {
    struct code_group sg;
    node_plan_smp_group(&cfg, r, &sg);
    ck_assert_uint_eq(sg.group, 4 + r);
    ck_assert_uint_eq(sg.member, 2);
    ck_assert_uint_eq(sg.n, 3);
    ck_assert_uint_eq(sg.members[0].node_index, 1);
  }
  memset(&cfg.group, 0, sizeof(cfg.group));
  struct code_group none;
  node_plan_smp_group(&cfg, 1, &none);
  ck_assert_uint_eq(none.k, 0);
  /* refusals */
  ck_assert_int_eq(node_plan_group(&a, "other", &cg, err, sizeof(err)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "not this node"));
  a.node_index = 4;
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "is not in its node group"));
  a.node_index = 5;
  g.m = 2;
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  g.m = 1;
  g.k = 3; /* 3+1 with 3 members */
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  g.k = 2;
  m[0].node_index = 7; /* no such node */
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  m[0].node_index = 3; /* twice */
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  m[0].node_index = 1;
  m[0].advertise = "a b";
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  m[0].advertise = "10.0.0.2";
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), PT_OK);
  s.code_k = s.code_m = 0;
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "has no code"));
  a.group = NULL;
  ck_assert_int_eq(node_plan_group(&a, "me", &cg, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(cg.k, 0);
}
END_TEST

START_TEST(sealed_reported_once_per_step)
{
  struct commit_sealed_set a = {0}, b = {0};
  const struct commit_sealed_set *sets[] = {&a, &b};
  uint64_t step = 0;

  commit_plan_sealed_add(&a, 5);
  ck_assert(!node_plan_seal_report(sets, 2, false, 0, false, 0, &step));
  commit_plan_sealed_add(&b, 5);
  ck_assert(node_plan_seal_report(sets, 2, false, 0, false, 0, &step));
  ck_assert_uint_eq(step, 5);
  /* Reported: not again. */
  ck_assert(!node_plan_seal_report(sets, 2, false, 0, true, 5, &step));
  commit_plan_sealed_add(&a, 6);
  commit_plan_sealed_add(&a, 7);
  commit_plan_sealed_add(&b, 7);
  ck_assert(node_plan_seal_report(sets, 2, false, 0, true, 5, &step));
  ck_assert_uint_eq(step, 7); /* the newest everywhere, 6 skipped */
  /* Committed past it: nothing. */
  ck_assert(!node_plan_seal_report(sets, 2, true, 7, false, 0, &step));
  ck_assert(!node_plan_seal_report(sets, 2, true, 9, true, 5, &step));
}
END_TEST

START_TEST(vote_from_pins)
{
  int all[] = {0, 0, 0};
  int wait[] = {0, NODE_PLAN_NO_ANSWER, 0};
  int gone[] = {0, -ENOENT, -ETIMEDOUT};
  int lost[] = {0, -ETIMEDOUT, -ECONNABORTED};
  int refused[] = {NODE_PLAN_NO_ANSWER, -EIO, NODE_PLAN_NO_ANSWER};

  ck_assert_int_eq(node_plan_vote(all, 3), 0);
  ck_assert_int_eq(node_plan_vote(wait, 3), NODE_PLAN_NO_ANSWER);
  ck_assert_int_eq(node_plan_vote(gone, 3), -ENOENT);
  ck_assert_int_eq(node_plan_vote(lost, 3), -ETIMEDOUT);
  /* one refusal decides the vote: the PINs still waiting are not waited for */
  ck_assert_int_eq(node_plan_vote(refused, 3), -EIO);
  /* a PIN answered PT_SKIPPED (positive) is a refusal, never "no answer" */
  int skipped[] = {0, node_plan_pin_status(true, PT_SKIPPED), 0};
  ck_assert_int_lt(skipped[1], 0);
  ck_assert_int_eq(node_plan_vote(skipped, 3), skipped[1]);
  ck_assert_int_eq(node_plan_pin_status(true, 0), 0);
  ck_assert_int_eq(node_plan_pin_status(true, -ENOENT), -ENOENT);
  ck_assert_int_eq(node_plan_pin_status(false, 0), -ETIMEDOUT);
  ck_assert_int_eq(node_plan_pin_status(false, -ECONNRESET), -ECONNRESET);
  ck_assert_int_ne(node_plan_vote(all, 0), 0);
}
END_TEST

START_TEST(epoch_fence)
{
  ck_assert_int_eq(node_plan_fence(NULL, 0, "j", 1), NODE_FENCE_NONE);
  ck_assert_int_eq(node_plan_fence("j", 3, "j", 2), NODE_FENCE_OLDER);
  ck_assert_int_eq(node_plan_fence("j", 3, "j", 3), NODE_FENCE_SAME);
  ck_assert_int_eq(node_plan_fence("j", 3, "j", 4), NODE_FENCE_NEWER);
  ck_assert_int_eq(node_plan_fence("j", 3, "k", 4), NODE_FENCE_OTHER_JOB);
}
END_TEST

/* ---- a fake controller and a real node ---- */

static struct {
  char dir[64], key[128], sd[160], log[160], ptd[PATH_MAX], train[PATH_MAX];
  char prefix[32];
  int lfd, port, fd;
  pid_t node;
  uint8_t keyb[RPC_KEY_BYTES];
  int kids[16]; /* every SMP and trainer seen, killed at exit */
  int nkids;
} F;

static void note_kid(int pid)
{
  for (int i = 0; i < F.nkids; i++)
    if (F.kids[i] == pid)
      return;
  if (pid > 0 && F.nkids < 16)
    F.kids[F.nkids++] = pid;
}

static char *read_log(void)
{
  static char buf[1 << 16];
  int fd = open(F.log, O_RDONLY);
  off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
  off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
  ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, from) : 0;
  if (fd >= 0)
    close(fd);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

/* The last lines of the node's log, short enough for a failure message. */
static const char *log_tail(void)
{
  const char *l = read_log();
  size_t n = strlen(l);
  return n > 3000 ? l + n - 3000 : l;
}

static void start_node(void)
{
  char ctl[64];
  snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", F.port);
  F.node = fork();
  ck_assert_int_ge(F.node, 0);
  if (F.node == 0) {
    int fd = open(F.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(F.ptd, F.ptd, "node", "--controller", ctl, "--node-id", "n1",
          "--key", F.key, "--state-dir", F.sd, "--advertise", "127.0.0.1",
          "--shm-prefix", F.prefix, "--capacity", "4", "--log-level", "7",
          (char *)NULL);
    _exit(127);
  }
}

/* Accepts the node's connection and answers its handshake as the
 * controller, then its NODE_REGISTER. */
static void accept_node(void)
{
  struct pollfd p = {.fd = F.lfd, .events = POLLIN};
  ck_assert_msg(poll(&p, 1, 10000) == 1, "the node did not dial: %s",
                log_tail());
  F.fd = accept(F.lfd, NULL, NULL);
  ck_assert_int_ge(F.fd, 0);
  struct rpc_auth self = {.role = PT__PEER_ROLE__PEER_ROLE_CONTROLLER};
  memcpy(self.key, F.keyb, sizeof(self.key));
  snprintf(self.node_id, sizeof(self.node_id), "controller");
  struct rpc_handshake hs;
  ck_assert_int_eq(rpc_handshake_init(&hs, &self, false), PT_OK);
  int rc = PT_OK;
  while (rc == PT_OK) {
    struct rpc_hdr h;
    ProtobufCMessage *in = NULL;
    ck_assert_int_eq(rpc_sock_session_recv(tsess(F.fd), 0, rpc_now_ms() + 5000, &h, &in),
                     PT_OK);
    uint32_t ot = 0;
    const ProtobufCMessage *out = NULL;
    rc = rpc_handshake_next(&hs, h.type, in, &ot, &out);
    protobuf_c_message_free_unpacked(in, NULL);
    ck_assert_int_ge(rc, 0);
    if (out != NULL)
      ck_assert_int_eq(rpc_sock_session_send(tsess(F.fd), ot, 0, out, rpc_now_ms() + 5000),
                       PT_OK);
  }
  ck_assert_int_eq(rc, RPC_HANDSHAKE_DONE);
  ck_assert_str_eq(hs.peer_node, "n1");
  ck_assert_int_eq(tsess_start(F.fd, &hs), PT_OK);
  rpc_handshake_release(&hs);
  struct rpc_hdr h;
  ProtobufCMessage *in = NULL;
  ck_assert_int_eq(rpc_sock_session_recv(tsess(F.fd), 0, rpc_now_ms() + 5000, &h, &in), PT_OK);
  ck_assert_uint_eq(h.type, RPC_NODE_REGISTER);
  protobuf_c_message_free_unpacked(in, NULL);
  Pt__NodeRegisterReply rep = PT__NODE_REGISTER_REPLY__INIT;
  rep.status = 0;
  rep.has_heartbeat_ms = true;
  rep.heartbeat_ms = 200;
  rep.has_dead_after_ms = true;
  rep.dead_after_ms = 5000;
  ck_assert_int_eq(rpc_sock_session_send(tsess(F.fd), RPC_NODE_REGISTER_REPLY, h.request_id,
                                 &rep.base, rpc_now_ms() + 5000),
                   PT_OK);
}

static void send_msg(uint32_t type, uint64_t id, const ProtobufCMessage *m)
{
  ck_assert_int_eq(rpc_sock_session_send(tsess(F.fd), type, id, m, rpc_now_ms() + 5000),
                   PT_OK);
}

/* The next frame of type (with request id id when id != 0) that match
 * accepts (NULL: any), within ms; heartbeats and the rest are skipped. */
typedef bool (*match_fn)(const ProtobufCMessage *m, const void *arg);
static ProtobufCMessage *expect(uint32_t type, uint64_t id, match_fn match,
                                const void *arg, int ms, const char *what)
{
  uint64_t dl = rpc_now_ms() + (uint64_t)ms;
  for (;;) {
    struct rpc_hdr h;
    ProtobufCMessage *m = NULL;
    int rc = rpc_sock_session_recv(tsess(F.fd), 0, dl, &h, &m);
    ck_assert_msg(rc == PT_OK, "waiting for %s: %s\nnode log:\n%s", what,
                  pt_strerror(rc), log_tail());
    if (h.type == type && (id == 0 || h.request_id == id) &&
        (match == NULL || match(m, arg)))
      return m;
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

static bool is_pinned(const ProtobufCMessage *m, const void *arg)
{
  const Pt__StepSealed *s = (const Pt__StepSealed *)m;
  (void)arg;
  return s->has_pinned && s->pinned;
}

struct want_state {
  uint64_t epoch;
  const char *state;
};
static bool is_state(const ProtobufCMessage *m, const void *arg)
{
  const Pt__JobPartState *s = (const Pt__JobPartState *)m;
  const struct want_state *w = arg;
  return s->epoch == w->epoch && strcmp(s->state, w->state) == 0;
}

static Pt__JobPartState *expect_state(uint64_t id, uint64_t epoch,
                                      const char *state, int ms)
{
  struct want_state w = {epoch, state};
  char what[64];
  snprintf(what, sizeof(what), "part state %s of epoch %" PRIu64, state,
           epoch);
  return (Pt__JobPartState *)expect(RPC_JOB_PART_STATE, id, is_state, &w, ms,
                                    what);
}

/* The node's STATUS_REPLY over its control socket (ptctl --state-dir). */
static Pt__StatusReply *status(void)
{
  char path[200];
  int fd;
  snprintf(path, sizeof(path), "%s/ptd.sock", F.sd);
  ck_assert_int_eq(rpc_sock_connect_unix(path, &fd), PT_OK);
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *rep = NULL;
  ck_assert_int_eq(rpc_sock_session_call(tsess(fd), RPC_STATUS_QUERY, &q.base,
                                 RPC_STATUS_REPLY, 5000, &rep),
                   PT_OK);
  close(fd);
  return (Pt__StatusReply *)rep;
}

static void trainer_pids(int pids[2])
{
  Pt__StatusReply *s = status();
  ck_assert_uint_eq(s->n_ranks, 2);
  for (int i = 0; i < 2; i++) {
    pids[i] = s->ranks[i]->trainer_pid;
    note_kid(pids[i]);
    note_kid(s->ranks[i]->smp_pid);
    ck_assert_int_gt(pids[i], 0);
  }
  protobuf_c_message_free_unpacked(&s->base, NULL);
}

/* VAR=value from /proc/pid/environ into out. */
static bool env_of(int pid, const char *var, char *out, size_t cap)
{
  char path[64], buf[1 << 15];
  snprintf(path, sizeof(path), "/proc/%d/environ", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  size_t l = strlen(var);
  for (char *e = buf; e < buf + n; e += strlen(e) + 1)
    if (strncmp(e, var, l) == 0 && e[l] == '=') {
      snprintf(out, cap, "%s", e + l + 1);
      return true;
    }
  return false;
}

static void check_env(int pid, const char *var, const char *want)
{
  char got[300] = "";
  ck_assert_msg(env_of(pid, var, got, sizeof(got)), "%s not set in pid %d",
                var, pid);
  ck_assert_msg(strcmp(got, want) == 0, "pid %d: %s=%s, not %s", pid, var,
                got, want);
}

/* Gone, or a zombie nobody reaped yet (an adopted trainer's parent is
 * not the node). */
static bool gone(int pid)
{
  char path[64], buf[256];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return true;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return true;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static bool wait_gone(int pid, int ms)
{
  uint64_t dl = rpc_now_ms() + (uint64_t)ms;
  while (!gone(pid) && rpc_now_ms() < dl)
    usleep(10000);
  return gone(pid);
}

static int free_port(void)
{
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof(a);
  ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
  ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &l), 0);
  close(s);
  return ntohs(a.sin_port);
}

/* The runner's pid, in every test dir's name: a failed check ends the
 * test's process before its teardown, and main sweeps what it left. */
static pid_t g_runner;

static void setup_fake(void)
{
  char self[PATH_MAX - 64];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  *strrchr(self, '/') = '\0'; /* build/tests */
  snprintf(F.ptd, sizeof(F.ptd), "%s/../bin/ptd", self);
  snprintf(F.train, sizeof(F.train), "%s/../bin/pt-train", self);
  /* The sanitizer build has test binaries only (make test builds its
   * unit-bins): its run takes the daemons of the build tests/run.sh names
   * (BUILD), the test itself still under ASan. */
  const char *b = getenv("BUILD");
  if (access(F.ptd, X_OK) != 0 && b != NULL && b[0] == '/') {
    snprintf(F.ptd, sizeof(F.ptd), "%s/bin/ptd", b);
    snprintf(F.train, sizeof(F.train), "%s/bin/pt-train", b);
  }
  ck_assert_msg(access(F.ptd, X_OK) == 0 && access(F.train, X_OK) == 0,
                "build ptd and pt-train first (%s; or BUILD=DIR naming a "
                "build that has them)", F.ptd);
  snprintf(F.dir, sizeof(F.dir), "/tmp/pt-node-part-%d-XXXXXX", (int)g_runner);
  ck_assert_ptr_nonnull(mkdtemp(F.dir));
  snprintf(F.key, sizeof(F.key), "%s/key", F.dir);
  snprintf(F.sd, sizeof(F.sd), "%s/sd", F.dir);
  snprintf(F.log, sizeof(F.log), "%s/node.log", F.dir);
  snprintf(F.prefix, sizeof(F.prefix), "tnp%d.", (int)getpid());
  ck_assert_int_eq(rpc_key_write(F.key, NULL, 0), PT_OK);
  ck_assert_int_eq(rpc_key_load(F.key, F.keyb, NULL, 0), PT_OK);
  F.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof(a);
  ck_assert_int_eq(bind(F.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  ck_assert_int_eq(listen(F.lfd, 4), 0);
  ck_assert_int_eq(getsockname(F.lfd, (struct sockaddr *)&a, &l), 0);
  F.port = ntohs(a.sin_port);
}

/* /proc/pid/cmdline with spaces between the arguments. */
static void cmdline_of(int pid, char *out, size_t cap)
{
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
  int fd = open(path, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  ssize_t n = read(fd, out, cap - 1);
  close(fd);
  ck_assert_int_gt(n, 0);
  for (ssize_t i = 0; i < n; i++)
    if (out[i] == '\0')
      out[i] = ' ';
  out[n] = '\0';
}

/* At exit, also when an assertion failed: the node, what it ran, the
 * directory and the shm objects. */
/* SIGKILL to every process whose command line names needle. */
static void kill_naming(const char *needle)
{
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    char path[300], cmd[4096];
    int pid = atoi(e->d_name);
    if (pid <= 0 || pid == getpid())
      continue;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
      continue;
    ssize_t n = read(fd, cmd, sizeof(cmd) - 1);
    close(fd);
    for (ssize_t i = 0; i < n; i++)
      if (cmd[i] == '\0')
        cmd[i] = ' ';
    if (n > 0 && (cmd[n] = '\0', strstr(cmd, needle) != NULL))
      kill(pid, SIGKILL);
  }
  if (d != NULL)
    closedir(d);
}

static void teardown_fake(void)
{
  if (F.node > 0) {
    kill(F.node, SIGKILL);
    waitpid(F.node, NULL, 0);
    F.node = 0;
  }
  for (int i = 0; i < F.nkids; i++)
    kill(F.kids[i], SIGKILL);
  F.nkids = 0;
  /* And any SMP or trainer of this test the list missed (its command line
   * names the test's dir: the state dir, the digest file). */
  if (F.dir[0] != '\0')
    kill_naming(F.dir);
  if (F.dir[0] != '\0') {
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
    if (system(cmd) != 0)
      fprintf(stderr, "cannot remove %s\n", F.dir);
    F.dir[0] = '\0';
  }
  if (F.prefix[0] != '\0')
    unit_shm_sweep("%spt.", F.prefix);
}

/* The job instance <state-dir>/part.state records (after its magic,
 * version and state). */
static void part_instance(uint8_t out[16])
{
  char path[200];
  snprintf(path, sizeof(path), "%s/part.state", F.sd);
  int fd = open(path, O_RDONLY);
  ck_assert_msg(fd >= 0, "no %s", path);
  ck_assert_int_eq(pread(fd, out, 16, 16), 16);
  close(fd);
}

static bool is_vote(const ProtobufCMessage *m, const void *arg)
{
  (void)arg;
  (void)m;
  return true;
}

START_TEST(part_with_fake_controller)
{
  setup_fake();
  atexit(teardown_fake);
  start_node();
  accept_node();

  /* JOB_ASSIGN: 2 ranks of pt-train, node 0 of 1. */
  char steps[] = "100000", port[16];
  snprintf(port, sizeof(port), "%d", free_port());
  /* The digest file names the test's dir: teardown_fake finds the
   * trainers by it even when a failed check left them unrecorded. */
  char digest[sizeof(F.dir) + 16];
  snprintf(digest, sizeof(digest), "%s/out.%%r", F.dir);
  char *argv[] = {F.train, "--steps", steps, "--state-mb", "1", "--batch",
                  "2", "--log-every", "100", "--step-delay-ms", "20",
                  "--digest-file", digest};
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  spec.name = "tj";
  spec.argv = argv;
  spec.n_argv = sizeof(argv) / sizeof(argv[0]);
  /* A part of a 6-node job coded 2+1 (the trainers' world is this node's
   * two ranks: the other nodes are not there), in node group 1 as its
   * member 1. */
  spec.nodes = 6;
  spec.ranks_per_node = 2;
  spec.has_code_k = spec.has_code_m = true;
  spec.code_k = 2;
  spec.code_m = 1;
  Pt__GroupMember gm[3] = {PT__GROUP_MEMBER__INIT, PT__GROUP_MEMBER__INIT,
                           PT__GROUP_MEMBER__INIT};
  Pt__GroupMember *gmp[3] = {&gm[0], &gm[1], &gm[2]};
  Pt__NodeGroup grp = PT__NODE_GROUP__INIT;
  grp.index = 1;
  grp.k = 2;
  grp.m = 1;
  grp.n_members = 3;
  grp.members = gmp;
  gm[0].node_index = 4;
  gm[0].node_id = "nb";
  gm[0].advertise = "10.0.0.5";
  gm[1].node_index = 0;
  gm[1].node_id = "n1";
  gm[1].advertise = "127.0.0.1";
  gm[2].node_index = 2;
  gm[2].node_id = "n=c";
  Pt__JobAssign as = PT__JOB_ASSIGN__INIT;
  as.group = &grp;
  as.spec = &spec;
  as.epoch = 1;
  as.node_index = 0;
  as.first_rank = 0;
  as.world_size = 2;
  as.master_addr = "127.0.0.1";
  as.master_port = (uint32_t)atoi(port);
  /* A group that does not hold this node: refused, nothing changes. */
  gm[1].node_index = 1;
  send_msg(RPC_JOB_ASSIGN, 98, &as.base);
  Pt__JobPartState *ps0 = expect_state(98, 1, "failed", 10000);
  ck_assert_int_eq(ps0->status, -EINVAL);
  ck_assert_msg(strstr(ps0->message, "is not in its node group 1") != NULL,
                "%s", ps0->message);
  protobuf_c_message_free_unpacked(&ps0->base, NULL);
  gm[1].node_index = 0;
  /* More ranks than its capacity: refused, and nothing changes. */
  spec.ranks_per_node = 64;
  send_msg(RPC_JOB_ASSIGN, 99, &as.base);
  Pt__JobPartState *ps = expect_state(99, 1, "failed", 10000);
  ck_assert_int_eq(ps->status, -ENOSPC);
  ck_assert_ptr_nonnull(strstr(ps->message, "capacity"));
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  spec.ranks_per_node = 2;
  /* The part that runs has no code: a coded one's PIN waits for its
   * group's protection, and this node's group mates are not there (the
   * coded SMP's arguments and its protection are cluster_protect's and
   * ptctl_cluster's to check, with every member running). */
  spec.has_code_k = spec.has_code_m = false;
  spec.nodes = 2;
  as.group = NULL;
  send_msg(RPC_JOB_ASSIGN, 100, &as.base);
  ps = expect_state(100, 1, "starting", 10000);
  ck_assert_str_eq(ps->job, "tj");
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ps = expect_state(0, 1, "running", 30000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);

  int pids[2];
  trainer_pids(pids);
  check_env(pids[0], "RANK", "0");
  check_env(pids[1], "RANK", "1");
  check_env(pids[1], "LOCAL_RANK", "1");
  check_env(pids[1], "WORLD_SIZE", "2");
  check_env(pids[1], "LOCAL_WORLD_SIZE", "2");
  check_env(pids[1], "GROUP_RANK", "0");
  check_env(pids[1], "MASTER_ADDR", "127.0.0.1");
  check_env(pids[1], "MASTER_PORT", port);
  check_env(pids[0], "PT_JOB", "tj");
  /* No code, no coding group on the SMPs' command lines. */
  Pt__StatusReply *sg = status();
  for (int r = 0; r < 2; r++) {
    char cmd[8192];
    cmdline_of(sg->ranks[r]->smp_pid, cmd, sizeof(cmd));
    ck_assert_msg(strstr(cmd, " --code ") == NULL && strstr(cmd, " --key ") == NULL,
                  "SMP %d: %s", r, cmd);
  }
  protobuf_c_message_free_unpacked(&sg->base, NULL);

  /* STEP_SEALED{pinned}: the node pinned the step on both SMPs before it
   * reported it (its vote); the steps after it, while that pin waits, come
   * unpinned. A JOB_PIN of the pinned step is answered at once; then
   * COMMIT. */
  Pt__StepSealed *ss = (Pt__StepSealed *)expect(
      RPC_STEP_SEALED, 0, NULL, NULL, 30000, "STEP_SEALED");
  ck_assert_str_eq(ss->job, "tj");
  ck_assert_uint_eq(ss->epoch, 1);
  ck_assert_msg(ss->has_pinned && ss->pinned,
                "the first STEP_SEALED (step %" PRIu64 ") is not pinned",
                ss->step);
  uint64_t step = ss->step;
  protobuf_c_message_free_unpacked(&ss->base, NULL);
  ss = (Pt__StepSealed *)expect(RPC_STEP_SEALED, 0, NULL, NULL, 30000,
                                "the next STEP_SEALED");
  ck_assert_uint_gt(ss->step, step);
  ck_assert_msg(!(ss->has_pinned && ss->pinned),
                "step %" PRIu64 " pinned while step %" PRIu64 " waits",
                ss->step, step);
  protobuf_c_message_free_unpacked(&ss->base, NULL);
  Pt__JobPin pin = PT__JOB_PIN__INIT;
  pin.job = "tj";
  pin.epoch = 1;
  pin.step = step;
  send_msg(RPC_JOB_PIN, 101, &pin.base);
  Pt__JobVote *v = (Pt__JobVote *)expect(RPC_JOB_VOTE, 101, is_vote, NULL,
                                         10000, "JOB_VOTE");
  ck_assert_msg(v->status == 0, "vote %d (%s)", v->status,
                v->message != NULL ? v->message : "");
  ck_assert_uint_eq(v->step, step);
  protobuf_c_message_free_unpacked(&v->base, NULL);
  Pt__JobCommit cm = PT__JOB_COMMIT__INIT;
  cm.job = "tj";
  cm.epoch = 1;
  cm.step = step;
  send_msg(RPC_JOB_COMMIT, 0, &cm.base);
  uint64_t dl = rpc_now_ms() + 5000;
  bool seen = false;
  while (!seen && rpc_now_ms() < dl) {
    Pt__StatusReply *s = status();
    seen = s->has_committed_step && s->committed_step == step;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    if (!seen)
      usleep(20000);
  }
  ck_assert_msg(seen, "the node does not show step %" PRIu64 " committed",
                step);
  /* Its pin gone with the commit, the node pins its newest step again. */
  ss = (Pt__StepSealed *)expect(RPC_STEP_SEALED, 0, is_pinned, NULL, 30000,
                                "a pinned STEP_SEALED after the commit");
  ck_assert_uint_gt(ss->step, step);
  protobuf_c_message_free_unpacked(&ss->base, NULL);

  /* An older epoch's PIN: PT_EEPOCH. */
  pin.epoch = 0;
  send_msg(RPC_JOB_PIN, 102, &pin.base);
  v = (Pt__JobVote *)expect(RPC_JOB_VOTE, 102, is_vote, NULL, 5000, "vote");
  ck_assert_int_eq(v->status, PT_EEPOCH);
  protobuf_c_message_free_unpacked(&v->base, NULL);

  /* The node killed and started again: the same trainers, re-adopted; it
   * registers again and reports the part running. */
  kill(F.node, SIGKILL);
  waitpid(F.node, NULL, 0);
  close(F.fd);
  start_node();
  accept_node();
  ps = expect_state(0, 1, "running", 30000);
  /* What it holds: the committed step, on every rank. */
  ck_assert_msg(ps->n_held >= 1 && ps->held[0] >= step, "held %zu steps",
                ps->n_held);
  ck_assert(ps->has_bytes_held && ps->bytes_held > 0);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  int again[2];
  trainer_pids(again);
  ck_assert_int_eq(again[0], pids[0]);
  ck_assert_int_eq(again[1], pids[1]);
  Pt__StatusReply *st = status();
  ck_assert(st->has_committed_step && st->committed_step >= step);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  /* The controller's JOB_ASSIGN of the same epoch changes nothing. */
  as.has_committed_step = true;
  as.committed_step = step;
  send_msg(RPC_JOB_ASSIGN, 103, &as.base);
  ps = expect_state(103, 1, "running", 10000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  trainer_pids(again);
  ck_assert_int_eq(again[0], pids[0]);
  ck_assert_int_eq(again[1], pids[1]);

  /* A newer epoch: the old trainers are gone before the new part starts,
   * which restores the committed step. */
  as.epoch = 2;
  as.has_restore_step = true;
  as.restore_step = step;
  send_msg(RPC_JOB_ASSIGN, 104, &as.base);
  ps = expect_state(104, 2, "starting", 20000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ck_assert_msg(gone(pids[0]) && gone(pids[1]),
                "old trainers %d %d still run as epoch 2 starts", pids[0],
                pids[1]);
  ps = expect_state(0, 2, "running", 30000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  trainer_pids(again);
  ck_assert(again[0] != pids[0] && again[1] != pids[1]);
  st = status();
  ck_assert(st->has_committed_step && st->committed_step == step);
  ck_assert_uint_eq(st->restores, 1);
  protobuf_c_message_free_unpacked(&st->base, NULL);

  /* A trainer killed: the node does not restart it; it stops the other
   * ranks and reports the part failed, naming the rank. */
  kill(again[1], SIGKILL);
  ps = expect_state(0, 2, "failed", 20000);
  ck_assert_msg(ps->has_status && ps->status < 0, "status %d", ps->status);
  ck_assert_msg(ps->message != NULL &&
                    strstr(ps->message, "trainer rank 1 (local 1 on node n1) "
                                        "(pid ") != NULL &&
                    strstr(ps->message, "SIGKILL") != NULL,
                "message '%s'", ps->message != NULL ? ps->message : "");
  ck_assert_msg(!(ps->has_permanent && ps->permanent),
                "a killed trainer reported permanent");
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ck_assert(wait_gone(again[0], 2000));
  st = status();
  ck_assert_uint_eq(st->n_ranks, 0);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  /* The controller's next epoch starts it again from the committed step. */
  as.epoch = 3;
  send_msg(RPC_JOB_ASSIGN, 106, &as.base);
  ps = expect_state(106, 3, "starting", 20000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ps = expect_state(0, 3, "running", 30000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  trainer_pids(again);

  /* JOB_HALT{remove}: the trainers stop, the objects go. */
  Pt__JobHalt halt = PT__JOB_HALT__INIT;
  halt.job = "tj";
  halt.epoch = 3;
  halt.remove = true;
  send_msg(RPC_JOB_HALT, 105, &halt.base);
  ps = expect_state(105, 3, "stopped", 20000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ck_assert(wait_gone(again[0], 2000) && wait_gone(again[1], 2000));
  char shm[256];
  snprintf(shm, sizeof(shm), "/dev/shm/%spt.tj.0", F.prefix);
  ck_assert_msg(access(shm, F_OK) != 0, "%s still exists", shm);
  st = status();
  ck_assert_uint_eq(st->n_ranks, 0);
  ck_assert_str_eq(st->state, "spare"); /* the job ended: nothing kept */
  protobuf_c_message_free_unpacked(&st->base, NULL);
  char rec[200];
  snprintf(rec, sizeof(rec), "%s/part.state", F.sd);
  ck_assert_msg(access(rec, F_OK) != 0, "%s still exists", rec);

  /* Failures no restart cures are reported permanent (the controller
   * ends the job): a trainer's exit 78, a trainer command that cannot be
   * run, a budget the checks before start refuse (with its numbers). */
  char **argv_was = spec.argv;
  size_t nargv_was = spec.n_argv;
  char *exit78[] = {"/bin/sh", "-c", "exit 78"};
  spec.argv = exit78;
  spec.n_argv = 3;
  as.epoch = 4;
  as.has_restore_step = false;
  send_msg(RPC_JOB_ASSIGN, 110, &as.base);
  ps = expect_state(0, 4, "failed", 30000);
  ck_assert_msg(ps->has_permanent && ps->permanent, "exit 78 not permanent: "
                "%s", ps->message != NULL ? ps->message : "");
  ck_assert_msg(strstr(ps->message, "status 78") != NULL, "%s", ps->message);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  char nosuch[sizeof(F.dir) + 16];
  snprintf(nosuch, sizeof(nosuch), "%s/no-such-trainer", F.dir);
  char *missing[] = {nosuch};
  spec.argv = missing;
  spec.n_argv = 1;
  as.epoch = 5;
  send_msg(RPC_JOB_ASSIGN, 111, &as.base);
  ps = expect_state(0, 5, "failed", 30000);
  ck_assert_msg(ps->has_permanent && ps->permanent, "a missing trainer "
                "not permanent: %s", ps->message != NULL ? ps->message : "");
  ck_assert_msg(strstr(ps->message, "cannot start trainer") != NULL, "%s",
                ps->message);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  spec.argv = argv_was;
  spec.n_argv = nargv_was;
  spec.has_memory_budget = true;
  spec.memory_budget = 4096; /* below the smallest snapshot object */
  as.epoch = 6;
  send_msg(RPC_JOB_ASSIGN, 112, &as.base);
  ps = expect_state(112, 6, "failed", 30000);
  ck_assert_msg(ps->has_permanent && ps->permanent, "PT_EBUDGET not "
                "permanent: %s", ps->message != NULL ? ps->message : "");
  ck_assert_msg(strstr(ps->message, "node 'n1'") != NULL &&
                    strstr(ps->message, "4096") != NULL,
                "the budget's numbers are not in '%s'", ps->message);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  spec.has_memory_budget = false;
  /* An ordinary failure (the trainer killed, above) is not. */

  /* A job of the same name that starts above the epochs its name had
   * (first_epoch) over the part of the older one, stopped with its
   * snapshots kept: a new job instance (its objects not the old job's),
   * PT_RESTART 0; a late halt of the older job's epoch changes nothing. */
  as.epoch = 7;
  send_msg(RPC_JOB_ASSIGN, 113, &as.base);
  ps = expect_state(0, 7, "running", 30000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  trainer_pids(again);
  check_env(again[0], "PT_RESTART", "6"); /* epochs 2..7 of the job (from 1) */
  halt.epoch = 7;
  halt.remove = false;
  send_msg(RPC_JOB_HALT, 114, &halt.base);
  ps = expect_state(114, 7, "stopped", 20000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  uint8_t inst_old[16], inst_new[16];
  part_instance(inst_old);
  as.epoch = 8;
  as.has_first_epoch = true;
  as.first_epoch = 8;
  send_msg(RPC_JOB_ASSIGN, 115, &as.base);
  ps = expect_state(115, 8, "starting", 20000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  ps = expect_state(0, 8, "running", 30000);
  protobuf_c_message_free_unpacked(&ps->base, NULL);
  part_instance(inst_new);
  ck_assert_msg(memcmp(inst_old, inst_new, 16) != 0,
                "the new job took the old job's instance");
  trainer_pids(again);
  check_env(again[0], "PT_RESTART", "0");
  halt.epoch = 7;
  send_msg(RPC_JOB_HALT, 116, &halt.base);
  usleep(300000);
  st = status();
  ck_assert_uint_eq(st->n_ranks, 2);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  ck_assert(!gone(again[0]) && !gone(again[1]));

  /* SIGTERM while a part runs: its ranks stop, then the node ends
   * (exit 3). */
  kill(F.node, SIGTERM);
  int ws = 0;
  dl = rpc_now_ms() + 10000;
  pid_t w;
  while ((w = waitpid(F.node, &ws, WNOHANG)) == 0 && rpc_now_ms() < dl)
    usleep(10000);
  ck_assert_int_eq(w, F.node);
  F.node = 0;
  ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 3, "status %d", ws);
  ck_assert(gone(again[0]) && gone(again[1]));
  const char *log = read_log();
  ck_assert_msg(strstr(log, "runtime error") == NULL &&
                    strstr(log, "Sanitizer") == NULL,
                "the node's log: %s", log_tail());
  close(F.fd);
  teardown_fake();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_part");
  TCase *tc = tcase_create("plan");
  tcase_add_test(tc, rank_env_from_assignment);
  tcase_add_test(tc, rank_named);
  tcase_add_test(tc, part_record_failure);
  tcase_add_test(tc, assign_checked);
  tcase_add_test(tc, group_from_assignment);
  tcase_add_test(tc, sealed_reported_once_per_step);
  tcase_add_test(tc, vote_from_pins);
  tcase_add_test(tc, epoch_fence);
  suite_add_tcase(s, tc);
  TCase *tp = tcase_create("part");
  tcase_set_timeout(tp, 150);
  tcase_add_test(tp, part_with_fake_controller);
  suite_add_tcase(s, tp);
  signal(SIGPIPE, SIG_IGN);
  g_runner = getpid();
  int rc = unit_run(s);
  /* What a failed check left (trainers and SMPs outlive their node by
   * design); its dirs and objects stay for the post-mortem. */
  char needle[64];
  snprintf(needle, sizeof(needle), "/tmp/pt-node-part-%d-", (int)g_runner);
  kill_naming(needle);
  return rc;
}
