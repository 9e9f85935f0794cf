/*
 * test_smp_roles.c — who may speak to whom on an SMP's socket. `ptd smp`
 * runs in a forked child of the test (smp_main); fake clients speak raw
 * frames to it. A connection has no role until an accepted HELLO (trainer)
 * or a valid SUBSCRIBE (node); every request of the other role, or of no
 * role, is refused with PT_EROLE and logged, and a role-less connection is
 * closed after its refusal. SUBSCRIBE is valid only with the secret of
 * --secret-file, or, without one, from the SMP's parent process. The secret
 * file itself must be ours, mode 0600, not a symlink, exactly 32 bytes.
 * With --secret-file, HELLO is accepted only from the session of the
 * trainer the node announced (TRAINER_SET).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/node_secret.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"
#include "tests/unit/fixture/smp_fx.h"
#include "tests/unit/unit.h"

/* A request of each kind but HELLO and SUBSCRIBE. */
struct req {
  uint32_t type;
  const ProtobufCMessage *msg;
};

static Pt__SlotAcquire q_acq = PT__SLOT_ACQUIRE__INIT;
static Pt__Seal q_seal = PT__SEAL__INIT;
static Pt__Release q_rel = PT__RELEASE__INIT;
static Pt__RestoreQuery q_rq = PT__RESTORE_QUERY__INIT;
static Pt__Bye q_bye = PT__BYE__INIT;
static Pt__StateQuery q_sq = PT__STATE_QUERY__INIT;
static Pt__Pin q_pin = PT__PIN__INIT;
static Pt__Commit q_commit = PT__COMMIT__INIT;
static Pt__Unpin q_unpin = PT__UNPIN__INIT;
static Pt__SetRestore q_none = PT__SET_RESTORE__INIT; /* no step: free all */

static const struct req trainer_reqs[] = {
  { RPC_SLOT_ACQUIRE, &q_acq.base }, { RPC_SEAL, &q_seal.base },
  { RPC_RESTORE_QUERY, &q_rq.base }, { RPC_BYE, &q_bye.base },
  { RPC_RELEASE, &q_rel.base },
};
static const struct req node_reqs[] = {
  { RPC_STATE_QUERY, &q_sq.base }, { RPC_PIN, &q_pin.base },
  { RPC_COMMIT, &q_commit.base },  { RPC_UNPIN, &q_unpin.base },
  { RPC_SET_RESTORE, &q_none.base },
};
#define NREQ(a) (sizeof(a) / sizeof((a)[0]))

static void secret_write(const char *path, const uint8_t *b, size_t len,
                         mode_t mode)
{
  unlink(path);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
  ck_assert_int_eq(fchmod(fd, mode), 0);
  close(fd);
}

/* ---- tests ---- */

/* Each trainer and node request on a connection with no role: PT_EROLE,
 * logged, and the connection closed. SET_RESTORE{none} and COMMIT from
 * such a connection change nothing. */
START_TEST(roleless_requests_refused)
{
  struct smp_fx f;
  int n = 0;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int tr = smp_fx_trainer_with_step(&f);
  for (size_t i = 0; i < NREQ(trainer_reqs); i++, n++) {
    int fd = smp_fx_conn(&f);
    ck_assert_int_eq(smp_fx_call(fd, trainer_reqs[i].type, trainer_reqs[i].msg),
                     PT_EROLE);
    ck_assert(unit_closed_by_peer(fd, 3000));
    close(fd);
  }
  for (size_t i = 0; i < NREQ(node_reqs); i++, n++) {
    int fd = smp_fx_conn(&f);
    ck_assert_int_eq(smp_fx_call(fd, node_reqs[i].type, node_reqs[i].msg), PT_EROLE);
    ck_assert(unit_closed_by_peer(fd, 3000));
    close(fd);
  }
  ck_assert_int_eq(smp_fx_log_count(&f, "on a role-less connection; closing it"), n);
  /* The sealed step survived the role-less SET_RESTORE{none}. */
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_SEALED);
  close(node);
  close(tr);
  smp_fx_done(&f);
}
END_TEST

/* A trainer connection may not commit, pin, query, set the restore point
 * or subscribe; it stays the trainer. The node may not act as the trainer. */
START_TEST(cross_role_requests_refused)
{
  struct smp_fx f;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int tr = smp_fx_trainer_with_step(&f);
  q_pin.step = 7;
  q_commit.step = 7;
  for (size_t i = 0; i < NREQ(node_reqs); i++)
    ck_assert_int_eq(smp_fx_call(tr, node_reqs[i].type, node_reqs[i].msg), PT_EROLE);
  ck_assert_int_eq(smp_fx_subscribe(tr, NULL, 0), PT_EROLE);
  ck_assert_int_eq(smp_fx_log_count(&f, "on the trainer's connection"),
                   (int)NREQ(node_reqs) + 1);

  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_SEALED); /* not pinned */
  ck_assert_int_eq(smp_fx_hello(&f, node, (int32_t)getpid()), PT_EROLE);
  q_acq.step = 8;
  ck_assert_int_eq(smp_fx_call(node, RPC_SLOT_ACQUIRE, &q_acq.base), PT_EROLE);
  ck_assert_int_eq(smp_fx_call(node, RPC_BYE, &q_bye.base), PT_EROLE);
  ck_assert_int_eq(smp_fx_call(node, RPC_RELEASE, &q_rel.base), PT_EROLE);
  ck_assert_int_eq(smp_fx_log_count(&f, "on the node's connection"), 4);

  /* Both keep their roles. */
  ck_assert_int_eq(smp_fx_call(tr, RPC_SLOT_ACQUIRE, &q_acq.base), 0);
  ck_assert_int_eq(smp_fx_call(node, RPC_PIN, &q_pin.base), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_PINNED);
  close(node);
  close(tr);
  smp_fx_done(&f);
}
END_TEST

/* A slot the trainer will not seal is given back with RELEASE, a trainer
 * request: the SMP frees it. SEAL with ok = false is no longer the way: it
 * is refused with PT_EPROTO and changes nothing; the node may not release
 * the trainer's slot. */
START_TEST(release_frees_slot)
{
  struct smp_fx f;
  ProtobufCMessage *m = NULL;
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  Pt__Seal s = PT__SEAL__INIT;
  Pt__Release rel = PT__RELEASE__INIT;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int tr = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_hello(&f, tr, (int32_t)getpid()), 0);
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);
  a.step = 7;
  ck_assert_int_eq(rpc_sock_call(tr, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                                 3000, &m), 0);
  Pt__SlotReply *r = (Pt__SlotReply *)m;
  ck_assert_int_eq(r->status, 0);
  uint32_t slot = r->slot;
  uint64_t gen = r->generation;
  protobuf_c_message_free_unpacked(m, NULL);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_WRITING);

  /* SEAL{ok = false}: a protocol error, and the slot is still the
   * writer's. */
  s.slot = slot;
  s.generation = gen;
  s.step = 7;
  s.ok = false;
  ck_assert_int_eq(smp_fx_call(tr, RPC_SEAL, &s.base), PT_EPROTO);
  ck_assert_int_eq(smp_fx_log_count(&f, "refusing SEAL of step 7 with ok = false"), 1);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_WRITING);

  /* The node may not release it; a stale generation releases nothing. */
  rel.slot = slot;
  rel.generation = gen;
  rel.has_step = true;
  rel.step = 7;
  rel.has_status = true;
  rel.status = -EIO;
  rel.reason = "the copy failed: test";
  ck_assert_int_eq(smp_fx_call(node, RPC_RELEASE, &rel.base), PT_EROLE);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_WRITING);
  rel.generation = gen + 1;
  ck_assert_int_eq(smp_fx_call(tr, RPC_RELEASE, &rel.base), PT_ESTALE);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_WRITING);

  /* The trainer's RELEASE frees it, once. */
  rel.generation = gen;
  ck_assert_int_eq(smp_fx_call(tr, RPC_RELEASE, &rel.base), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), -1);
  ck_assert_int_eq(smp_fx_log_count(&f, "of step 7 released by the trainer: the "
                                 "copy failed: test"), 1);
  ck_assert_int_eq(smp_fx_call(tr, RPC_RELEASE, &rel.base), PT_ESTALE);

  /* The trainer goes on: the next step seals. */
  ck_assert_int_eq(smp_fx_seal_step(tr, 8), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 8), SNAP_SEALED);
  close(node);
  close(tr);
  smp_fx_done(&f);
}
END_TEST

/* Without --secret-file only the SMP's parent may SUBSCRIBE: a sibling
 * process is refused. A HELLO naming another pid than its sender's is
 * refused too. */
START_TEST(subscribe_only_from_parent)
{
  struct smp_fx f;
  int status;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  close(smp_fx_conn(&f)); /* listening */
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd;
    if (rpc_sock_connect_unix(f.sock, &fd) != 0)
      _exit(3);
    Pt__Subscribe s = PT__SUBSCRIBE__INIT;
    ProtobufCMessage *m = NULL;
    s.node_id = "intruder";
    if (rpc_sock_call(fd, RPC_SUBSCRIBE, &s.base, RPC_STATE_REPLY, 3000, &m))
      _exit(4);
    if (((Pt__StateReply *)m)->status != PT_EROLE)
      _exit(5);
    _exit(unit_closed_by_peer(fd, 3000) ? 0 : 6);
  }
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  ck_assert_int_eq(smp_fx_log_count(&f, "refusing SUBSCRIBE"), 1);

  int fd = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_hello(&f, fd, 4242), PT_EROLE);
  ck_assert_int_eq(smp_fx_hello(&f, fd, (int32_t)getpid()), 0);
  close(fd);
  smp_fx_done(&f);
}
END_TEST

/* With --secret-file: no secret, a short one or a wrong one is refused and
 * the connection closed; the right one makes the node. A second valid
 * SUBSCRIBE replaces the node (the old connection is closed); an invalid
 * one leaves the node alone. */
START_TEST(subscribe_secret)
{
  struct smp_fx f;
  uint8_t secret[NODE_SECRET_BYTES], wrong[NODE_SECRET_BYTES];

  smp_fx_init(&f);
  for (int i = 0; i < NODE_SECRET_BYTES; i++) {
    secret[i] = (uint8_t)(i * 7 + 1);
    wrong[i] = secret[i];
  }
  wrong[NODE_SECRET_BYTES - 1] ^= 1;
  secret_write(f.secret, secret, sizeof(secret), 0600);
  smp_fx_fork(&f, f.secret);

  struct { const uint8_t *b; size_t len; } bad[] = {
    { NULL, 0 }, { secret, NODE_SECRET_BYTES - 1 }, { wrong, sizeof(wrong) },
  };
  for (size_t i = 0; i < 3; i++) {
    int fd = smp_fx_conn(&f); /* from the SMP's parent: the secret decides */
    ck_assert_int_eq(smp_fx_subscribe(fd, bad[i].b, bad[i].len), PT_EROLE);
    ck_assert(unit_closed_by_peer(fd, 3000));
    close(fd);
  }
  ck_assert_int_eq(smp_fx_log_count(&f, "refusing SUBSCRIBE"), 3);

  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, secret, sizeof(secret)), 0);
  q_commit.step = 99;
  ck_assert_int_eq(smp_fx_call(node, RPC_COMMIT, &q_commit.base), -ENOENT);
  int bad2 = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(bad2, wrong, sizeof(wrong)), PT_EROLE);
  close(bad2);
  ck_assert_int_eq(smp_fx_call(node, RPC_COMMIT, &q_commit.base), -ENOENT);
  int node2 = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node2, secret, sizeof(secret)), 0);
  ck_assert(unit_closed_by_peer(node, 3000));
  ck_assert_int_eq(smp_fx_call(node2, RPC_COMMIT, &q_commit.base), -ENOENT);
  close(node);
  close(node2);
  smp_fx_done(&f);
}
END_TEST

/* An SMP refuses to start (exit 2) with a secret file that is not ours
 * alone: another mode, a symlink, the wrong size, another owner, none. */
START_TEST(secret_file_checked)
{
  struct smp_fx f;
  uint8_t b[NODE_SECRET_BYTES + 1] = { 1, 2, 3 };
  char link[160];

  smp_fx_init(&f);
  snprintf(link, sizeof(link), "%s/link.secret", f.dir);

  secret_write(f.secret, b, NODE_SECRET_BYTES, 0644);
  smp_fx_fork(&f, f.secret);
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  secret_write(f.secret, b, NODE_SECRET_BYTES, 0640);
  smp_fx_fork(&f, f.secret);
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  secret_write(f.secret, b, NODE_SECRET_BYTES - 1, 0600);
  smp_fx_fork(&f, f.secret);
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  secret_write(f.secret, b, NODE_SECRET_BYTES + 1, 0600);
  smp_fx_fork(&f, f.secret);
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  secret_write(f.secret, b, NODE_SECRET_BYTES, 0600);
  ck_assert_int_eq(symlink(f.secret, link), 0);
  smp_fx_fork(&f, link);
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  smp_fx_fork(&f, "/nonexistent/node.secret");
  ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
  if (geteuid() == 0) {
    ck_assert_int_eq(chown(f.secret, 65534, 65534), 0);
    smp_fx_fork(&f, f.secret);
    ck_assert_int_eq(smp_fx_exit(&f, 5000), 2);
    ck_assert_int_eq(chown(f.secret, 0, 0), 0);
  }
  ck_assert_int_ge(smp_fx_log_count(&f, "the node's secret is unusable"), 6);
  /* The good file: the SMP serves. */
  smp_fx_fork(&f, f.secret);
  close(smp_fx_conn(&f));
  ck_assert_int_eq(smp_fx_exit(&f, 100), -1);
  smp_fx_done(&f);
}
END_TEST

/* The node's side: the secret is made once (0600, 32 bytes), read back the
 * same after, and a symlink in its place is refused. */
START_TEST(node_secret_made_once)
{
  struct smp_fx f;
  uint8_t a[NODE_SECRET_BYTES], b[NODE_SECRET_BYTES], zero[NODE_SECRET_BYTES];
  char path[160], link[160], target[160];
  struct stat st;

  smp_fx_init(&f);
  memset(zero, 0, sizeof(zero));
  ck_assert_int_eq(node_secret_load_or_create(f.dir, path, sizeof(path), a), 0);
  ck_assert_str_eq(path, f.secret);
  ck_assert_int_eq(lstat(path, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  ck_assert_int_eq(st.st_mode & 07777, 0600);
  ck_assert_int_eq(st.st_size, NODE_SECRET_BYTES);
  ck_assert(memcmp(a, zero, sizeof(a)) != 0);
  ck_assert_int_eq(node_secret_load_or_create(f.dir, path, sizeof(path), b), 0);
  ck_assert(memcmp(a, b, sizeof(a)) == 0);

  snprintf(target, sizeof(target), "%s/elsewhere", f.dir);
  ck_assert_int_eq(rename(path, target), 0);
  snprintf(link, sizeof(link), "%s", path);
  ck_assert_int_eq(symlink(target, link), 0);
  ck_assert_int_lt(node_secret_load_or_create(f.dir, path, sizeof(path), b), 0);
  unlink(link);
  /* a dangling symlink is not followed to create a file either */
  ck_assert_int_eq(symlink("/tmp/pt-should-not-exist", link), 0);
  ck_assert_int_lt(node_secret_load_or_create(f.dir, path, sizeof(path), b), 0);
  ck_assert_int_ne(access("/tmp/pt-should-not-exist", F_OK), 0);
  smp_fx_done(&f);
}
END_TEST

/* Connections without a role cannot hold the SMP: one that stops inside a
 * frame is closed after SMP_ROLELESS_IDLE_MS (10 s), a silent one (libpt
 * before its HELLO) is kept; 80 peers each sending a 1 MiB-1 body's first
 * byte keep at most 32 connections (and 32 MiB) and the trainer and the
 * node are served throughout; 500 more in a burst are closed likewise, with
 * one log line for all (rate-limited). */
START_TEST(roleless_connections_bounded)
{
  struct smp_fx f;
  struct rpc_hdr h = { .type = RPC_HELLO, .length = (1u << 20) - 1,
                       .request_id = 1 };
  uint8_t frame[RPC_HDR_BYTES + 1] = { 0 };
  int flood[80], closed = 0;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  rpc_hdr_encode(frame, &h);
  int tr = smp_fx_trainer_with_step(&f);
  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, NULL, 0), 0);

  int silent = smp_fx_conn(&f);
  int partial = smp_fx_conn(&f);
  ck_assert_int_eq(write(partial, frame, 10), 10); /* part of a header */
  uint64_t t0 = rpc_now_ms();
  ck_assert(unit_closed_by_peer(partial, 15000));
  ck_assert_uint_ge(rpc_now_ms() - t0, 9000);
  struct pollfd pfd = { silent, POLLIN, 0 };
  ck_assert_int_eq(poll(&pfd, 1, 0), 0); /* still open, nothing to read */
  ck_assert_int_eq(smp_fx_log_count(&f, "no role and nothing sent for 10 s inside "
                                 "a frame"), 1);
  close(partial);

  for (int i = 0; i < 80; i++) {
    flood[i] = smp_fx_conn(&f);
    ck_assert_int_eq(write(flood[i], frame, sizeof(frame)),
                     (ssize_t)sizeof(frame));
  }
  q_acq.step = 8;
  ck_assert_int_eq(smp_fx_call(tr, RPC_SLOT_ACQUIRE, &q_acq.base), 0);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_SEALED);
  /* At least 80 + 1 - 32 of them are closed; on a loaded machine the SMP
   * may take a while to get there, so wait (10 s) rather than sample. */
  bool shut[80] = { false };
  for (uint64_t end = rpc_now_ms() + 10000;
       closed < 80 + 1 - 32 && rpc_now_ms() < end;)
    for (int i = 0; i < 80; i++)
      if (!shut[i] && unit_closed_by_peer(flood[i], 1)) {
        shut[i] = true;
        closed++;
      }
  ck_assert_int_ge(closed, 80 + 1 - 32);
  ck_assert(unit_closed_by_peer(silent, 1000)); /* the oldest idle one went */
  for (int i = 0; i < 80; i++)
    close(flood[i]);
  /* 500 more in a burst: each one over the bound closes the oldest, but the
   * log gets the first such line only (rate-limited), not one per
   * connection. */
  static int burst[500];
  for (int i = 0; i < 500; i++)
    burst[i] = smp_fx_conn(&f);
  /* All but at most SMP_ROLELESS_MAX (32) are closed by the SMP; which
   * ones depends on ties in idle time, so count them. */
  static bool gone[500];
  int ngone = 0;
  for (uint64_t end = rpc_now_ms() + 10000;
       ngone < 500 - 32 && rpc_now_ms() < end;) {
    for (int i = 0; i < 500; i++) {
      char b[64];
      struct pollfd p = { burst[i], POLLIN, 0 };
      if (!gone[i] && poll(&p, 1, 0) > 0) {
        ssize_t r = read(burst[i], b, sizeof(b));
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
          gone[i] = true;
          ngone++;
        }
      }
    }
    usleep(10000);
  }
  ck_assert_int_ge(ngone, 500 - 32);
  ck_assert_int_eq(smp_fx_slot_state(node, 7), SNAP_SEALED); /* still served */
  /* The first line, and at most one more if the test ran past the 10 s
   * interval: not one per connection closed (over 500). */
  ck_assert_int_le(smp_fx_log_count(&f, "connections without a role: closing the "
                                 "one idle longest"), 2);
  for (int i = 0; i < 500; i++)
    close(burst[i]);
  close(silent);
  close(node);
  close(tr);
  smp_fx_done(&f);
}
END_TEST

/* Client text is logged escaped: a newline in HELLO's job name, in a
 * region name, in SUBSCRIBE's node id or in RELEASE's reason cannot forge
 * a log line. */
START_TEST(client_text_escaped)
{
  struct smp_fx f;
  Pt__Hello h = PT__HELLO__INIT;
  Pt__Region r = PT__REGION__INIT, *rp[1] = { &r };
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;

  smp_fx_init(&f);
  smp_fx_fork(&f, NULL);
  int fd = smp_fx_conn(&f);
  r.name = "w";
  r.bytes = 4096;
  h.job = "x\n<3>forged job";
  h.world = 1;
  h.pid = (int32_t)getpid();
  h.n_regions = 1;
  h.regions = rp;
  ck_assert_int_eq(smp_fx_call(fd, RPC_HELLO, &h.base), PT_ECONFIG);
  h.job = f.job;
  r.name = "r\n<3>forged region";
  r.bytes = 0;
  ck_assert_int_eq(smp_fx_call(fd, RPC_HELLO, &h.base), -EINVAL);
  close(fd);
  int node = smp_fx_conn(&f);
  sub.node_id = "n\n<3>forged node";
  ck_assert_int_eq(smp_fx_call(node, RPC_SUBSCRIBE, &sub.base), 0);
  close(node);
  /* RELEASE's reason. */
  ProtobufCMessage *m = NULL;
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  Pt__Release rel = PT__RELEASE__INIT;
  int tr = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_hello(&f, tr, (int32_t)getpid()), 0);
  a.step = 3;
  ck_assert_int_eq(rpc_sock_call(tr, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                                 3000, &m), 0);
  ck_assert_int_eq(((Pt__SlotReply *)m)->status, 0);
  rel.slot = ((Pt__SlotReply *)m)->slot;
  rel.generation = ((Pt__SlotReply *)m)->generation;
  protobuf_c_message_free_unpacked(m, NULL);
  rel.reason = "c\n<3>forged release";
  ck_assert_int_eq(smp_fx_call(tr, RPC_RELEASE, &rel.base), 0);
  close(tr);
  ck_assert_int_eq(smp_fx_log_count(&f, "released by the trainer: "
                                 "c\\x0a<3>forged release"), 1);
  ck_assert_int_eq(smp_fx_log_count(&f, "job 'x\\x0a<3>forged job'"), 1);
  ck_assert_int_eq(smp_fx_log_count(&f, "('r\\x0a<3>forged region')"), 1);
  ck_assert_int_eq(smp_fx_log_count(&f, "node 'n\\x0a<3>forged node' subscribed"), 1);
  ck_assert_int_eq(smp_fx_log_count(&f, "\n<3>forged"), 0);
  /* every line is one of the SMP's: "<N>ptd smp 0: ..." */
  ck_assert_int_gt(smp_fx_log_count(&f, "\n"), 3);
  ck_assert_int_eq(smp_fx_log_count(&f, "\n"), smp_fx_log_count(&f, ">ptd smp 0: "));
  ck_assert_int_eq(smp_fx_log_count(&f, "\n<"), smp_fx_log_count(&f, "\n") - 1);
  smp_fx_done(&f);
}
END_TEST

/* ---- the trainer the node announced ---- */

/* HELLO's status, without asserting (for forked children). OUT: msg (may be
 * NULL), the reply's message. */
static int hello_raw(struct smp_fx *f, int fd, char *msg, size_t len)
{
  Pt__Hello h = PT__HELLO__INIT;
  Pt__Region r = PT__REGION__INIT, *rp[1] = { &r };
  ProtobufCMessage *m = NULL;

  r.name = "w";
  r.bytes = 4096;
  h.job = f->job;
  h.world = 1;
  h.pid = (int32_t)getpid();
  h.n_regions = 1;
  h.regions = rp;
  if (rpc_sock_call(fd, RPC_HELLO, &h.base, RPC_HELLO_REPLY, 3000, &m) != 0)
    return 1000;
  Pt__HelloReply *hr = (Pt__HelloReply *)m;
  int st = hr->status;
  if (msg != NULL)
    snprintf(msg, len, "%s", hr->message != NULL ? hr->message : "");
  protobuf_c_message_free_unpacked(m, NULL);
  return st;
}

/* A "trainer" as the node spawns one: the leader of a session of its own.
 * On each byte read from cmd it runs a HELLO in a child of its session (not
 * the leader: a wrapper's pt-train) and writes the status to res. */
struct leader {
  pid_t pid;
  int cmd, res;
};

static void leader_start(struct smp_fx *f, struct leader *l)
{
  int c[2], r[2];
  char b;

  ck_assert_int_eq(pipe(c), 0);
  ck_assert_int_eq(pipe(r), 0);
  l->pid = fork();
  ck_assert_int_ge(l->pid, 0);
  if (l->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(c[1]);
    close(r[0]);
    if (setsid() < 0)
      _exit(2);
    if (write(r[1], "r", 1) != 1)
      _exit(3);
    while (read(c[0], &b, 1) == 1) {
      int st = 2000;
      int p2[2];
      if (pipe(p2) != 0)
        _exit(4);
      pid_t k = fork();
      if (k == 0) {
        int fd = -1;
        if (rpc_sock_connect_unix(f->sock, &fd) == 0)
          st = hello_raw(f, fd, NULL, 0);
        if (write(p2[1], &st, sizeof(st)) != sizeof(st))
          _exit(5);
        _exit(0);
      }
      close(p2[1]);
      if (k < 0 || read(p2[0], &st, sizeof(st)) != sizeof(st))
        st = 3000;
      close(p2[0]);
      waitpid(k, NULL, 0);
      if (write(r[1], &st, sizeof(st)) != sizeof(st))
        _exit(6);
    }
    _exit(0);
  }
  close(c[0]);
  close(r[1]);
  l->cmd = c[1];
  l->res = r[0];
  ck_assert_int_eq(read(l->res, &b, 1), 1);
}

/* HELLO from a child of the leader's session. */
static int leader_hello(struct leader *l)
{
  int st = 0;

  ck_assert_int_eq(write(l->cmd, "h", 1), 1);
  ck_assert_int_eq(read(l->res, &st, sizeof(st)), (ssize_t)sizeof(st));
  return st;
}

static void leader_kill(struct leader *l)
{
  kill(l->pid, SIGKILL);
  waitpid(l->pid, NULL, 0);
  close(l->cmd);
  close(l->res);
}

static int trainer_set(int fd, int32_t pid, uint64_t ticks)
{
  Pt__TrainerSet t = PT__TRAINER_SET__INIT;
  t.pid = pid;
  t.has_start_ticks = ticks != 0;
  t.start_ticks = ticks;
  return smp_fx_call(fd, RPC_TRAINER_SET, &t.base);
}

/* With --secret-file, only the trainer the node announced may say HELLO:
 * before any announcement HELLO is answered -EAGAIN (the connection kept,
 * to ask again); then a process of the announced trainer's session is
 * accepted and one of another session is refused with PT_EROLE naming its
 * pid and the expected session. TRAINER_SET from a role-less connection is
 * refused; one naming no live session leader, or another
 * start time, is -ESRCH. The announced trainer's exit ends it: HELLO waits
 * again. */
START_TEST(hello_only_from_announced_trainer)
{
  struct smp_fx f;
  struct leader l;
  uint8_t secret[NODE_SECRET_BYTES];
  char msg[512], want[64];

  smp_fx_init(&f);
  for (int i = 0; i < NODE_SECRET_BYTES; i++)
    secret[i] = (uint8_t)(i * 5 + 3);
  secret_write(f.secret, secret, sizeof(secret), 0600);
  smp_fx_fork(&f, f.secret);
  leader_start(&f, &l);

  int me = smp_fx_conn(&f);
  ck_assert_int_eq(hello_raw(&f, me, msg, sizeof(msg)), -EAGAIN);
  ck_assert_ptr_nonnull(strstr(msg, "waiting for the node to announce"));
  ck_assert_int_eq(hello_raw(&f, me, NULL, 0), -EAGAIN); /* still open */
  ck_assert_int_eq(leader_hello(&l), -EAGAIN);

  /* Only the node may announce. */
  int stray = smp_fx_conn(&f);
  ck_assert_int_eq(trainer_set(stray, l.pid, 0), PT_EROLE);
  ck_assert(unit_closed_by_peer(stray, 3000));
  close(stray);
  ck_assert_int_eq(smp_fx_log_count(&f, "refusing TRAINER_SET"), 1);
  ck_assert_int_eq(leader_hello(&l), -EAGAIN);

  int node = smp_fx_conn(&f);
  ck_assert_int_eq(smp_fx_subscribe(node, secret, sizeof(secret)), 0);
  ck_assert_int_eq(trainer_set(node, (int32_t)f.pid, 0), -ESRCH); /* no leader */
  ck_assert_int_eq(trainer_set(node, l.pid, 1), -ESRCH); /* other start time */
  /* A session leader that has exited but is not reaped yet (a zombie, as
   * the leader of the session a CI runner inherits may be): no trainer. */
  pid_t z = fork();
  ck_assert_int_ge(z, 0);
  if (z == 0) {
    setsid();
    _exit(0);
  }
  siginfo_t si;
  ck_assert_int_eq(waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT), 0);
  ck_assert_int_eq(trainer_set(node, (int32_t)z, 0), -ESRCH);
  ck_assert_int_eq(smp_fx_log_count(&f, "has exited"), 1);
  waitpid(z, NULL, 0);
  ck_assert_int_eq(hello_raw(&f, me, NULL, 0), -EAGAIN);
  ck_assert_int_eq(trainer_set(node, l.pid, 0), 0);

  /* Another session: refused, naming the pid and the session expected. */
  ck_assert_int_eq(hello_raw(&f, me, msg, sizeof(msg)), PT_EROLE);
  snprintf(want, sizeof(want), "hello from pid %d ", (int)getpid());
  ck_assert_msg(strstr(msg, want) != NULL, "%s", msg);
  snprintf(want, sizeof(want), "trainer pid %d,", (int)l.pid);
  ck_assert_msg(strstr(msg, want) != NULL, "%s", msg);
  ck_assert_int_eq(smp_fx_log_count(&f, want), 1);
  close(me);
  /* The announced session: accepted (a child of its leader, as a wrapper's
   * pt-train or torchrun's workers). */
  ck_assert_int_eq(leader_hello(&l), 0);

  /* The leader's exit ends the announcement: HELLO waits again. */
  leader_kill(&l);
  me = smp_fx_conn(&f);
  ck_assert_int_eq(hello_raw(&f, me, NULL, 0), -EAGAIN);
  close(me);
  close(node);
  smp_fx_done(&f);
}
END_TEST

static Suite *smp_roles_suite(void)
{
  Suite *s = suite_create("smp_roles");
  TCase *tc = tcase_create("roles");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, roleless_requests_refused);
  tcase_add_test(tc, cross_role_requests_refused);
  tcase_add_test(tc, release_frees_slot);
  tcase_add_test(tc, subscribe_only_from_parent);
  tcase_add_test(tc, subscribe_secret);
  tcase_add_test(tc, secret_file_checked);
  tcase_add_test(tc, node_secret_made_once);
  tcase_add_test(tc, roleless_connections_bounded);
  tcase_add_test(tc, client_text_escaped);
  tcase_add_test(tc, hello_only_from_announced_trainer);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "smp") == 0)
    return smp_main(argc - 1, argv + 1);
  return unit_run(smp_roles_suite());
}
