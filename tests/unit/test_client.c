/*
 * test_client.c — libpt against a real SMP (smp_main in a forked child).
 *
 * Every test starts its own SMP on a socket in a temporary directory with a
 * job name and shm prefix of its own, drives it through libpt (and, for the
 * node's side, through raw frames), and removes its shm objects. The SMP
 * child dies with the test process (PR_SET_PDEATHSIG), so a failed test
 * leaves nothing running; main() removes any object a failed test left.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/roles.h"
#include "kernels/kernels.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

#define MIB ((size_t)1 << 20)

static char g_dir[128];    /* sockets */
static char g_prefix[64];  /* shm prefix of this run */

/* ---- helpers ---- */

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

static void fill_random(void *p, size_t n, uint64_t seed)
{
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  unsigned char *b = p;

  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = (unsigned char)(x >> 24);
  }
}

struct smp_proc {
  pid_t pid;
  char job[64];
  char sock[200];
  char shm[256];
  char slots[8];
  char budget[32];
  bool autocommit;
  int start_delay_ms;
};

static void smp_init(struct smp_proc *p, const char *name, int slots,
                     bool autocommit)
{
  memset(p, 0, sizeof(*p));
  snprintf(p->job, sizeof(p->job), "%s%d", name, (int)getpid());
  snprintf(p->sock, sizeof(p->sock), "%s/%s.sock", g_dir, name);
  snprintf(p->slots, sizeof(p->slots), "%d", slots);
  p->autocommit = autocommit;
  ck_assert_int_eq(snap_store_name(p->shm, sizeof(p->shm), g_prefix, p->job, 0),
                   0);
  snap_store_unlink(p->shm);
}

/* The SMP's side of a forked child: never returns. */
static void smp_exec(struct smp_proc *p)
{
  char *argv[24];
  int n = 0;

  if (p->start_delay_ms > 0)
    sleep_ms(p->start_delay_ms);
  {
    argv[n++] = "smp";
    argv[n++] = "--job";
    argv[n++] = p->job;
    argv[n++] = "--rank";
    argv[n++] = "0";
    argv[n++] = "--world";
    argv[n++] = "1";
    argv[n++] = "--socket";
    argv[n++] = p->sock;
    argv[n++] = "--slots";
    argv[n++] = p->slots;
    argv[n++] = "--shm-prefix";
    argv[n++] = g_prefix;
    argv[n++] = "--log-level";
    argv[n++] = "3";
    if (p->autocommit)
      argv[n++] = "--autocommit";
    if (p->budget[0] != '\0') {
      argv[n++] = "--budget";
      argv[n++] = p->budget;
    }
    argv[n] = NULL;
    if (getenv("PT_TEST_SMP_EXIT") != NULL)
      exit(smp_main(n, argv)); /* lets LeakSanitizer check the SMP */
    _exit(smp_main(n, argv));
  }
}

static void smp_start(struct smp_proc *p)
{
  pid_t parent = getpid();
  pid_t pid = fork();

  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(99);
    smp_exec(p);
  }
  p->pid = pid;
}

/* Waits for the SMP to exit; returns its wait status, or -1 on timeout. */
static int smp_wait(struct smp_proc *p, int timeout_ms)
{
  uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;
  int status;

  while (now_ns() < end) {
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
      p->pid = 0;
      return status;
    }
    sleep_ms(5);
  }
  return -1;
}

static void smp_kill(struct smp_proc *p, int sig)
{
  if (p->pid <= 0)
    return;
  kill(p->pid, sig);
  ck_assert_int_ne(smp_wait(p, 5000), -1);
}

/* SIGTERM must stop the SMP cleanly (exit 0, socket removed). */
static void smp_stop_clean(struct smp_proc *p)
{
  kill(p->pid, SIGTERM);
  int st = smp_wait(p, 5000);
  ck_assert_int_ne(st, -1);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "smp stopped with status 0x%x", st);
  ck_assert_int_ne(access(p->sock, F_OK), 0);
}

static void smp_done(struct smp_proc *p)
{
  if (p->pid > 0)
    smp_stop_clean(p);
  snap_store_unlink(p->shm);
}

static void log_cb(void *arg, int level, const char *msg)
{
  (void)arg;
  if (level <= PT_LOG_WARN && getenv("PT_TEST_VERBOSE") != NULL)
    fprintf(stderr, "libpt: %s\n", msg);
}

/* snap_timeout_ms: pt_options.snapshot_timeout_ms. */
static pt_client *client_open2(struct smp_proc *p, int timeout_ms,
                               int snap_timeout_ms)
{
  struct pt_options o = { .size = sizeof(o) };
  pt_client *c = NULL;
  int rc;

  o.socket_path = p->sock;
  o.job = p->job;
  o.rank_set = true;
  o.rank = 0;
  o.world = 1;
  o.timeout_ms = timeout_ms;
  o.snapshot_timeout_ms = snap_timeout_ms;
  o.log_fn = log_cb;
  rc = pt_client_open(&c, &o);
  ck_assert_msg(rc == 0, "pt_client_open: %s", pt_err_name(rc));
  return c;
}

/* A generous bound on pt_snapshot()'s wait (a loaded machine, ASan). */
static pt_client *client_open(struct smp_proc *p, int timeout_ms)
{
  return client_open2(p, timeout_ms, 2000);
}

/* A state of several regions with sizes that do and do not divide 1 MiB. */
#define NREG 4
static const char *reg_names[NREG] = { "params", "moments", "rng", "cursor" };
static const size_t reg_bytes[NREG] = { 3 * MIB + 12345, 2 * MIB, 5000, 8 };

struct state {
  void *p[NREG];
};

static void state_new(struct state *s, uint64_t seed)
{
  for (int i = 0; i < NREG; i++) {
    s->p[i] = malloc(reg_bytes[i]);
    ck_assert_ptr_nonnull(s->p[i]);
    fill_random(s->p[i], reg_bytes[i], seed + (uint64_t)i);
  }
}

static void state_copy(struct state *dst, const struct state *src)
{
  for (int i = 0; i < NREG; i++)
    memcpy(dst->p[i], src->p[i], reg_bytes[i]);
}

static bool state_eq(const struct state *a, const struct state *b)
{
  for (int i = 0; i < NREG; i++)
    if (memcmp(a->p[i], b->p[i], reg_bytes[i]) != 0)
      return false;
  return true;
}

static void state_scramble(struct state *s, uint64_t seed)
{
  for (int i = 0; i < NREG; i++)
    fill_random(s->p[i], reg_bytes[i], seed * 131 + (uint64_t)i);
}

static void state_free(struct state *s)
{
  for (int i = 0; i < NREG; i++)
    free(s->p[i]);
}

static void state_register(pt_client *c, struct state *s)
{
  for (int i = 0; i < NREG; i++) {
    int rc = pt_region_register(c, reg_names[i], s->p[i], reg_bytes[i],
                                PT_MEM_HOST);
    ck_assert_msg(rc == 0, "register %s: %s", reg_names[i], pt_err_name(rc));
  }
}

static void snap_ok(pt_client *c, uint64_t step)
{
  int rc = pt_snapshot(c, step);
  ck_assert_msg(rc == PT_OK, "pt_snapshot(%llu): %s (%s)",
                (unsigned long long)step, pt_err_name(rc), pt_last_error(c));
  rc = pt_fence(c);
  ck_assert_msg(rc == PT_OK, "pt_fence(%llu): %s (%s)",
                (unsigned long long)step, pt_err_name(rc), pt_last_error(c));
}

static void restore_expect(pt_client *c, uint64_t want_step)
{
  uint64_t step = 0;
  int rc = pt_restore(c, &step);
  ck_assert_msg(rc == PT_OK, "pt_restore: %s (%s)", pt_err_name(rc),
                pt_last_error(c));
  ck_assert_uint_eq(step, want_step);
}

/* ---- raw frames: the node's side ---- */

static int raw_connect(struct smp_proc *p)
{
  int fd = -1;
  for (int i = 0; i < 500; i++) {
    if (rpc_sock_connect_unix(p->sock, &fd) == 0)
      return fd;
    sleep_ms(10);
  }
  ck_abort_msg("cannot connect to %s", p->sock);
  return -1;
}

/* A connection that is the SMP's node: SUBSCRIBE without a secret, which
 * an SMP started without --secret-file takes from its parent, this test. */
static int raw_node_connect(struct smp_proc *p)
{
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  ProtobufCMessage *m = NULL;
  int fd = raw_connect(p);

  sub.node_id = "test";
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SUBSCRIBE, &sub.base,
                                 RPC_STATE_REPLY, 3000, &m), 0);
  ck_assert_int_eq(((Pt__StateReply *)m)->status, 0);
  protobuf_c_message_free_unpacked(m, NULL);
  return fd;
}

static Pt__StateReply *raw_state(int fd, bool verify)
{
  Pt__StateQuery q = PT__STATE_QUERY__INIT;
  ProtobufCMessage *m = NULL;

  q.verify = verify;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_STATE_QUERY, &q.base, RPC_STATE_REPLY,
                                 3000, &m), 0);
  return (Pt__StateReply *)m;
}

static int raw_status_call(int fd, uint32_t type, const ProtobufCMessage *req)
{
  ProtobufCMessage *m = NULL;
  ck_assert_int_eq(rpc_sock_call(fd, type, req, RPC_REPLY, 3000, &m), 0);
  int st = ((Pt__Reply *)m)->status;
  protobuf_c_message_free_unpacked(m, NULL);
  return st;
}

static int raw_commit(int fd, uint64_t step)
{
  Pt__Commit q = PT__COMMIT__INIT;
  q.step = step;
  return raw_status_call(fd, RPC_COMMIT, &q.base);
}

static int raw_pin(int fd, uint64_t step)
{
  Pt__Pin q = PT__PIN__INIT;
  q.step = step;
  return raw_status_call(fd, RPC_PIN, &q.base);
}

static int raw_unpin(int fd, uint64_t step)
{
  Pt__Unpin q = PT__UNPIN__INIT;
  q.step = step;
  return raw_status_call(fd, RPC_UNPIN, &q.base);
}

static Pt__Event *raw_event(int fd)
{
  struct rpc_hdr h;
  ProtobufCMessage *m = NULL;
  int rc = rpc_sock_recv(fd, RPC_MAX_BODY_DEFAULT, rpc_now_ms() + 3000, &h, &m);
  ck_assert_msg(rc == 0, "no event: %s", pt_err_name(rc));
  ck_assert_uint_eq(h.type, RPC_EVENT);
  ck_assert_uint_eq(h.request_id, 0);
  return (Pt__Event *)m;
}

/* Stops the SMP (SIGSTOP) and returns once it is stopped: from then on
 * it serves nothing until smp_resume(). */
static void smp_pause(struct smp_proc *p)
{
  int st;

  ck_assert_int_eq(kill(p->pid, SIGSTOP), 0);
  ck_assert_int_eq(waitpid(p->pid, &st, WUNTRACED), p->pid);
  ck_assert(WIFSTOPPED(st));
}

static void smp_resume(struct smp_proc *p)
{
  ck_assert_int_eq(kill(p->pid, SIGCONT), 0);
}

/* The state of the slot holding step, read from the object's slot table;
 * SNAP_FREE when no slot holds it. */
static uint32_t slot_state_of(const struct snap_store *store, uint64_t step)
{
  struct snap_slot_info si;

  for (uint32_t i = 0; i < snap_store_nslots(store); i++) {
    snap_slot_get(store, i, &si);
    if (si.state != SNAP_FREE && si.step == step)
      return si.state;
  }
  return SNAP_FREE;
}

/* Snapshots steps *step, *step + 1, ... and stops the SMP right after each
 * pt_snapshot() until, with the SMP stopped, the new step's slot is still
 * WRITING: its seal cannot be served. A step whose copy and seal won the
 * race is fenced (it must succeed) and counted in *good, the newest step
 * known sealed (want then holds its state). Returns with the SMP stopped
 * and *step the caught one. */
static void snapshot_catch_unsealed(pt_client *c, struct smp_proc *p,
                                    const struct snap_store *store,
                                    struct state *s, struct state *want,
                                    uint64_t *step, uint64_t *good)
{
  for (int tries = 0; tries < 20; tries++, (*step)++) {
    state_scramble(s, 1000 + *step);
    int rc = pt_snapshot(c, *step);
    ck_assert_msg(rc == PT_OK, "pt_snapshot(%llu): %s (%s)",
                  (unsigned long long)*step, pt_err_name(rc),
                  pt_last_error(c));
    smp_pause(p);
    if (slot_state_of(store, *step) == SNAP_WRITING)
      return;
    smp_resume(p);
    rc = pt_fence(c);
    ck_assert_msg(rc == PT_OK, "pt_fence(%llu): %s (%s)",
                  (unsigned long long)*step, pt_err_name(rc),
                  pt_last_error(c));
    *good = *step;
    state_copy(want, s);
  }
  ck_abort_msg("every seal was served before the SMP could be stopped");
}

/* ---- tests ---- */

/* Snapshot, scramble, restore: the bytes come back; steps must increase. */
START_TEST(test_roundtrip)
{
  struct smp_proc p;
  struct state s, want;
  struct pt_status st;
  uint64_t step = 77;

  smp_init(&p, "rt", 2, true);
  smp_start(&p);
  pt_client *c = client_open(&p, 5000); /* the SMP may not listen yet */
  state_new(&s, 1);
  state_new(&want, 2);
  state_register(c, &s);

  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);
  ck_assert_uint_eq(step, 77);
  snap_ok(c, 10);
  state_copy(&want, &s);
  state_scramble(&s, 3);
  ck_assert(!state_eq(&s, &want));
  restore_expect(c, 10);
  ck_assert(state_eq(&s, &want));

  /* steps must increase, also past a restore: the committed step and
   * those below it can never be committed again */
  ck_assert_int_eq(pt_snapshot(c, 10), PT_ESTEP);
  ck_assert_int_eq(pt_snapshot(c, 5), PT_ESTEP);
  ck_assert_str_ne(pt_last_error(c), "");
  state_scramble(&s, 4);
  snap_ok(c, 11);
  state_copy(&want, &s);
  /* no fence: pt_restore refuses while the copy runs, then collects the
   * outcome of the copy libpt sealed on its own */
  state_scramble(&s, 5);
  struct state s12;
  state_new(&s12, 0);
  state_copy(&s12, &s);
  ck_assert_int_eq(pt_snapshot(c, 12), PT_OK);
  int rc;
  for (int i = 0; (rc = pt_restore(c, &step)) == PT_EINFLIGHT && i < 200; i++)
    sleep_ms(10);
  ck_assert_msg(rc == PT_OK, "restore: %s", pt_err_name(rc));
  ck_assert_uint_eq(step, 12);
  ck_assert(state_eq(&s, &s12));
  state_scramble(&s, 6);
  restore_expect(c, 12);
  ck_assert(state_eq(&s, &s12));
  ck_assert_int_eq(pt_fence(c), PT_OK); /* nothing in flight */

  ck_assert_int_eq(pt_status_get(c, &st), 0);
  ck_assert_uint_eq(st.rank, 0);
  ck_assert_uint_eq(st.world, 1);
  ck_assert_uint_eq(st.regions, NREG);
  ck_assert_uint_eq(st.bytes, reg_bytes[0] + reg_bytes[1] + reg_bytes[2] +
                                  reg_bytes[3]);
  ck_assert_uint_eq(st.snapshots_started, 3);
  ck_assert_uint_eq(st.snapshots_skipped, 0);
  ck_assert_uint_eq(st.snapshots_failed, 2);
  ck_assert(st.has_committed);
  ck_assert_uint_eq(st.committed_step, 12);
  ck_assert(!st.in_flight);
  ck_assert_str_eq(st.backend, kern_backend_name());

  pt_client_close(c, true);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
  state_free(&s12);
}
END_TEST

/* Registration rules and calls made at the wrong time. */
START_TEST(test_misuse)
{
  struct smp_proc p;
  char *buf = malloc(8 * MIB);
  size_t big = 64 * MIB;
  char *bigbuf = malloc(big);
  char longname[300];
  uint64_t step;

  ck_assert_ptr_nonnull(buf);
  ck_assert_ptr_nonnull(bigbuf);
  fill_random(bigbuf, big, 9);
  smp_init(&p, "mis", 2, true);
  smp_start(&p);
  pt_client *c = client_open(&p, 5000);

  ck_assert_int_eq(pt_snapshot(c, 1), PT_ESTATE); /* no region yet */
  ck_assert_int_eq(pt_region_register(c, "a", buf, 0, PT_MEM_HOST), -EINVAL);
  ck_assert_int_eq(pt_region_register(c, "", buf, 10, PT_MEM_HOST), -EINVAL);
  ck_assert_int_eq(pt_region_register(c, NULL, buf, 10, PT_MEM_HOST), -EINVAL);
  ck_assert_int_eq(pt_region_register(c, "a", NULL, 10, PT_MEM_HOST), -EINVAL);
  memset(longname, 'x', 256);
  longname[256] = '\0';
  ck_assert_int_eq(pt_region_register(c, longname, buf, 10, PT_MEM_HOST),
                   -ENAMETOOLONG);
  longname[255] = '\0'; /* 255 bytes: the longest name allowed */
  ck_assert_int_eq(pt_region_register(c, longname, buf + 7 * MIB, 10,
                                      PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "a", buf + MIB, MIB, PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "a", buf + 4 * MIB, 10, PT_MEM_HOST),
                   -EEXIST);
  /* overlaps: inside, across the start, across the end, around */
  ck_assert_int_eq(pt_region_register(c, "b", buf + MIB + 5, 10, PT_MEM_HOST),
                   PT_EOVERLAP);
  ck_assert_int_eq(pt_region_register(c, "b", buf + MIB - 5, 10, PT_MEM_HOST),
                   PT_EOVERLAP);
  ck_assert_int_eq(pt_region_register(c, "b", buf + 2 * MIB - 1, 10,
                                      PT_MEM_HOST), PT_EOVERLAP);
  ck_assert_int_eq(pt_region_register(c, "b", buf, 4 * MIB, PT_MEM_HOST),
                   PT_EOVERLAP);
  ck_assert_str_ne(pt_last_error(c), "");
  /* touching neighbours are fine */
  ck_assert_int_eq(pt_region_register(c, "before", buf + MIB - 100, 100,
                                      PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "after", buf + 2 * MIB, 100,
                                      PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "b", buf + MIB - 101, 2,
                                      PT_MEM_HOST), PT_EOVERLAP);
  if (!kern_backend_has_device())
    ck_assert_int_eq(pt_region_register(c, "dev", buf + 5 * MIB, 10,
                                        PT_MEM_DEVICE), PT_ENODEVICE);
  ck_assert_int_eq(pt_region_register(c, "big", bigbuf, big, PT_MEM_HOST), 0);

  /* a copy in flight refuses another snapshot and a restore */
  ck_assert_int_eq(pt_snapshot(c, 1), PT_OK);
  int rc = pt_snapshot(c, 2);
  ck_assert_msg(rc == PT_EINFLIGHT, "second snapshot: %s", pt_err_name(rc));
  ck_assert_int_eq(pt_restore(c, &step), PT_EINFLIGHT);
  struct pt_status st;
  pt_status_get(c, &st);
  ck_assert(st.in_flight);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  /* frozen now */
  ck_assert_int_eq(pt_region_register(c, "late", buf + 6 * MIB, 10,
                                      PT_MEM_HOST), PT_ESTATE);
  ck_assert_int_eq(pt_snapshot(c, 2), PT_OK);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  restore_expect(c, 2);
  ck_assert_int_eq(pt_restore(NULL, &step), -EINVAL);
  ck_assert_int_eq(pt_snapshot(NULL, 1), -EINVAL);
  ck_assert_int_eq(pt_fence(NULL), -EINVAL);
  ck_assert_str_eq(pt_last_error(NULL), "");
  pt_client_close(NULL, true);
  pt_client_close(c, true);
  smp_done(&p);

  /* options: no socket anywhere, bad rank */
  struct pt_options o = { 0 };
  unsetenv("PT_SMP_SOCKET");
  ck_assert_int_eq(pt_client_open(&c, &o), PT_ECONFIG);
  ck_assert_ptr_null(c);
  o.socket_path = p.sock;
  o.rank = 3;
  o.world = 2;
  ck_assert_int_eq(pt_client_open(&c, &o), PT_ECONFIG);
  free(buf);
  free(bigbuf);
}
END_TEST

/* pt_client_open waits for a late SMP, and gives up at its deadline. */
START_TEST(test_connect_deadline)
{
  struct smp_proc p;
  struct pt_options o = { 0 };
  pt_client *c = NULL;
  uint64_t t0;
  int rc;

  smp_init(&p, "late", 2, true);
  o.socket_path = p.sock;
  o.timeout_ms = 300;
  t0 = now_ns();
  rc = pt_client_open(&c, &o);
  ck_assert_msg(rc == -ENOENT || rc == -ECONNREFUSED, "open: %s",
                pt_err_name(rc));
  ck_assert_uint_ge(now_ns() - t0, 290u * 1000000u);

  p.start_delay_ms = 300;
  smp_start(&p);
  t0 = now_ns();
  c = client_open(&p, 5000);
  ck_assert_uint_ge(now_ns() - t0, 200u * 1000000u);
  pt_client_close(c, false);
  smp_done(&p);
}
END_TEST

/* Another region table, a second trainer. */
START_TEST(test_regions_and_busy)
{
  struct smp_proc p;
  struct state s, s2;
  char other[100];
  uint64_t step;

  smp_init(&p, "reg", 2, true);
  smp_start(&p);
  state_new(&s, 11);
  state_new(&s2, 12);
  pt_client *a = client_open(&p, 5000);
  state_register(a, &s);
  snap_ok(a, 5);

  /* a different table is refused, even while the first trainer runs */
  pt_client *b = client_open(&p, 5000);
  ck_assert_int_eq(pt_region_register(b, "other", other, sizeof(other),
                                      PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_restore(b, &step), PT_EREGIONS);
  ck_assert_ptr_nonnull(strstr(pt_last_error(b), "regions"));
  ck_assert_int_eq(pt_snapshot(b, 6), PT_EREGIONS);
  pt_client_close(b, false);

  /* the same table: one trainer at a time */
  pt_client *d = client_open(&p, 5000);
  state_register(d, &s2);
  ck_assert_int_eq(pt_restore(d, &step), -EBUSY);
  pt_client_close(a, true);
  restore_expect(d, 5);
  ck_assert(state_eq(&s, &s2));
  snap_ok(d, 6);
  pt_client_close(d, true);

  smp_done(&p);
  state_free(&s);
  state_free(&s2);
}
END_TEST

/* A flipped byte in the committed slot is found, never handed back. */
START_TEST(test_checksum)
{
  struct smp_proc p;
  struct state s;
  struct snap_store *store = NULL;
  uint32_t slot;
  uint64_t cstep, step;
  char err[256];

  smp_init(&p, "crc", 2, true);
  smp_start(&p);
  state_new(&s, 21);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 3);

  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_newest_committed(store, &slot, &cstep), 0);
  ck_assert_uint_eq(cstep, 3);
  const struct snap_region *r = snap_store_region(store, 1);
  ck_assert_str_eq(r->name, "moments");
  unsigned char *victim =
      (unsigned char *)snap_slot_data(store, slot) + r->offset + MIB + 7;
  *victim ^= 0x20;

  ck_assert_int_eq(pt_restore(c, &step), PT_ECHECKSUM);
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "moments"));

  /* the node's verifying state query sees it too */
  int fd = raw_node_connect(&p);
  Pt__StateReply *sr = raw_state(fd, true);
  bool seen = false;
  for (size_t i = 0; i < sr->n_slots; i++) {
    if (sr->slots[i]->slot == slot) {
      seen = true;
      ck_assert(sr->slots[i]->has_intact);
      ck_assert(!sr->slots[i]->intact);
    }
  }
  ck_assert(seen);
  protobuf_c_message_free_unpacked(&sr->base, NULL);

  /* a damaged checksum table is refused as well */
  *victim ^= 0x20;
  restore_expect(c, 3);
  uint32_t *crcs = snap_slot_crcs(store, slot);
  crcs[r->first_block] ^= 1;
  ck_assert_int_eq(pt_restore(c, &step), PT_ECHECKSUM);
  crcs[r->first_block] ^= 1;
  restore_expect(c, 3);

  close(fd);
  snap_store_close(store);
  pt_client_close(c, true);
  smp_done(&p);
  state_free(&s);
}
END_TEST

/* The slot record of a snapshot object, per snap_store.h's table: after
 * the header and the region table of 320-byte entries. */
static uint8_t *slot_record(struct snap_store *store, uint32_t slot)
{
  return (uint8_t *)snap_store_base(store) + 4096 +
         320 * (uint64_t)snap_store_nregions(store) + 64 * (uint64_t)slot;
}

/* A step number changed in a committed slot's record is never restored:
 * the slot fails its record checksum, the SMP restores the step before it,
 * and a restarted SMP names and frees the damaged slot. Before slot records
 * carried a checksum, the forged step was restored as if true. */
START_TEST(test_record_forged)
{
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  char err[256];
  uint32_t slot;
  uint64_t cstep;

  smp_init(&p, "forge", 2, true);
  smp_start(&p);
  state_new(&s, 51);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 3);
  state_copy(&want, &s);
  state_scramble(&s, 52);
  snap_ok(c, 4);

  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_newest_committed(store, &slot, &cstep), 0);
  ck_assert_uint_eq(cstep, 4);
  uint64_t forged = 900;
  memcpy(slot_record(store, slot) + 8, &forged, 8);

  state_scramble(&s, 53);
  restore_expect(c, 3);
  ck_assert(state_eq(&s, &want));

  /* A restarted SMP finds the damaged record and frees the slot. */
  smp_kill(&p, SIGKILL);
  smp_start(&p);
  state_scramble(&s, 54);
  restore_expect(c, 3);
  ck_assert(state_eq(&s, &want));
  struct snap_slot_info info;
  snap_slot_get(store, slot, &info);
  ck_assert(info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_FREE);

  snap_store_close(store);
  pt_client_close(c, true);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* The blob: stored with each snapshot, brought back by pt_restore() (empty,
 * small, exactly PT_BLOB_MAX), checked against its CRC, carried on by the
 * next snapshots; too big is refused. */
START_TEST(test_blob)
{
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  char err[256];
  size_t len = 7;
  uint8_t *big = malloc(PT_BLOB_MAX + 1), *got = malloc(PT_BLOB_MAX + 1);

  ck_assert_ptr_nonnull(big);
  ck_assert_ptr_nonnull(got);
  fill_random(big, PT_BLOB_MAX + 1, 61);
  smp_init(&p, "blob", 2, true);
  smp_start(&p);
  state_new(&s, 62);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);

  /* nothing restored yet */
  ck_assert_int_eq(pt_blob_get(c, got, 10, &len), PT_ENOSNAP);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(pt_blob_set(c, big, PT_BLOB_MAX + 1), PT_ETOOBIG);
  ck_assert_int_eq(pt_blob_set(c, NULL, 5), -EINVAL);
  ck_assert_int_eq(pt_blob_set(NULL, big, 5), -EINVAL);
  ck_assert_int_eq(pt_blob_get(NULL, got, 10, &len), -EINVAL);
  ck_assert_int_eq(pt_blob_get(c, got, 10, NULL), -EINVAL);

  /* an empty blob: never set */
  snap_ok(c, 1);
  state_scramble(&s, 63);
  restore_expect(c, 1);
  ck_assert_int_eq(pt_blob_get(c, NULL, 0, &len), PT_OK);
  ck_assert_uint_eq(len, 0);

  /* the largest blob; the caller's buffer is free once set returns */
  ck_assert_int_eq(pt_blob_set(c, big, PT_BLOB_MAX), PT_OK);
  memcpy(got, big, PT_BLOB_MAX);
  big[0] ^= 0xff;
  snap_ok(c, 2);
  state_copy(&want, &s);
  ck_assert_int_eq(pt_blob_set(c, "later", 5), PT_OK);
  state_scramble(&s, 64);
  restore_expect(c, 2);
  ck_assert(state_eq(&s, &want));
  ck_assert_int_eq(pt_blob_get(c, big, 100, &len), -ENOBUFS);
  ck_assert_uint_eq(len, PT_BLOB_MAX);
  ck_assert_int_eq(pt_blob_get(c, big, PT_BLOB_MAX + 1, &len), PT_OK);
  ck_assert_uint_eq(len, PT_BLOB_MAX);
  ck_assert(memcmp(big, got, PT_BLOB_MAX) == 0);

  /* the restored blob goes on with the next snapshot; a small one */
  snap_ok(c, 3);
  restore_expect(c, 3);
  ck_assert_int_eq(pt_blob_get(c, big, PT_BLOB_MAX, &len), PT_OK);
  ck_assert_uint_eq(len, PT_BLOB_MAX);
  ck_assert(memcmp(big, got, PT_BLOB_MAX) == 0);
  ck_assert_int_eq(pt_blob_set(c, "sampler:17", 10), PT_OK);
  snap_ok(c, 4);
  ck_assert_int_eq(pt_blob_set(c, NULL, 0), PT_OK);
  restore_expect(c, 4);
  ck_assert_int_eq(pt_blob_get(c, got, 10, &len), PT_OK);
  ck_assert_uint_eq(len, 10);
  ck_assert(memcmp(got, "sampler:17", 10) == 0);

  /* a damaged blob byte fails the restore, and no blob is handed out */
  uint32_t slot;
  uint64_t cstep;
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_newest_committed(store, &slot, &cstep), 0);
  ck_assert_uint_eq(cstep, 4);
  uint8_t *b = snap_slot_blob(store, slot);
  b[3] ^= 0x10;
  uint64_t step;
  ck_assert_int_eq(pt_restore(c, &step), PT_ECHECKSUM);
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "blob"));
  ck_assert_int_eq(pt_blob_get(c, got, 10, &len), PT_ENOSNAP);
  /* the SMP's verifying state query sees it too */
  ck_assert_int_eq(snap_slot_verify(store, slot, NULL), PT_ECHECKSUM);
  b[3] ^= 0x10;
  restore_expect(c, 4);

  snap_store_close(store);
  pt_client_close(c, true);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
  free(big);
  free(got);
}
END_TEST

/* 20,000 regions with 255-byte names (one HELLO of about 5.5 MB): they
 * register, snapshot and restore bit-exact, and small regions cost 64
 * bytes a slot, not a page. */
START_TEST(test_many_regions)
{
  enum { N = 20000 };
  struct smp_proc p;
  struct snap_store *store = NULL;
  struct pt_status st;
  char err[256], name[300];
  size_t *off = malloc(N * sizeof(*off)), *len = malloc(N * sizeof(*len));
  size_t total = 0, slot_need = 0;
  uint64_t step;

  ck_assert_ptr_nonnull(off);
  ck_assert_ptr_nonnull(len);
  for (int i = 0; i < N; i++) {
    len[i] = 4 + (size_t)(i * 37) % 300;
    off[i] = total;
    total += len[i] + 8;
    slot_need += (len[i] + 63) / 64 * 64;
  }
  uint8_t *buf = malloc(total), *want = malloc(total);
  ck_assert_ptr_nonnull(buf);
  ck_assert_ptr_nonnull(want);
  fill_random(buf, total, 71);
  memcpy(want, buf, total);

  smp_init(&p, "many", 2, true);
  smp_start(&p);
  pt_client *c = client_open(&p, 10000);
  memset(name, 'w', 255);
  name[255] = '\0';
  for (int i = 0; i < N; i++) {
    snprintf(name + 240, 16, ".%014d", i);
    ck_assert_uint_eq(strlen(name), 255);
    int rc = pt_region_register(c, name, buf + off[i], len[i], PT_MEM_HOST);
    ck_assert_msg(rc == 0, "region %d: %s", i, pt_err_name(rc));
  }
  snprintf(name + 240, 16, ".%014d", 77);
  ck_assert_int_eq(pt_region_register(c, name, buf + total - 4, 4,
                                      PT_MEM_HOST), -EEXIST);
  snap_ok(c, 5);
  fill_random(buf, total, 72);
  ck_assert(memcmp(buf, want, total) != 0);
  ck_assert_int_eq(pt_restore(c, &step), PT_OK);
  ck_assert_uint_eq(step, 5);
  for (int i = 0; i < N; i++)
    ck_assert_msg(memcmp(buf + off[i], want + off[i], len[i]) == 0,
                  "region %d differs after the restore", i);
  ck_assert_int_eq(pt_status_get(c, &st), 0);
  ck_assert_uint_eq(st.regions, N);

  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_uint_eq(snap_store_nregions(store), N);
  ck_assert_uint_eq(snap_store_slot_bytes(store), slot_need + PT_BLOB_MAX);
  snap_store_close(store);

  pt_client_close(c, true);
  smp_done(&p);
  free(buf);
  free(want);
  free(off);
  free(len);
}
END_TEST

/* pt_region_update: memory that moves between snapshots. */
START_TEST(test_region_update)
{
  struct smp_proc p;
  size_t big = 64 * MIB;
  char *a = malloc(4096), *a2 = malloc(4096), *b = malloc(4096);
  char *old = malloc(4096), *w = malloc(4096);
  char *huge = malloc(big);

  ck_assert_ptr_nonnull(huge);
  fill_random(a, 4096, 81);
  fill_random(b, 4096, 82);
  fill_random(huge, big, 83);
  smp_init(&p, "upd", 2, true);
  smp_start(&p);
  pt_client *c = client_open(&p, 5000);
  ck_assert_int_eq(pt_region_register(c, "a", a, 4096, PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "b", b, 4096, PT_MEM_HOST), 0);
  ck_assert_int_eq(pt_region_register(c, "huge", huge, big, PT_MEM_HOST), 0);

  /* refusals, nothing changed */
  ck_assert_int_eq(pt_region_update(c, "nope", a2), -ENOENT);
  ck_assert_int_eq(pt_region_update(c, NULL, a2), -EINVAL);
  ck_assert_int_eq(pt_region_update(c, "a", NULL), -EINVAL);
  ck_assert_int_eq(pt_region_update(NULL, "a", a2), -EINVAL);
  ck_assert_int_eq(pt_region_update(c, "a", b + 100), PT_EOVERLAP);
  ck_assert_int_eq(pt_region_update(c, "a", b - 100), PT_EOVERLAP);
  ck_assert_int_eq(pt_region_update(c, "a", a), 0);
  /* before the table is frozen: a moves, and back */
  ck_assert_int_eq(pt_region_update(c, "a", a2), 0);
  ck_assert_int_eq(pt_region_update(c, "a", a), 0);
  /* a's old place is free for another region now that a moved there and
   * back: registering over a still overlaps */
  ck_assert_int_eq(pt_region_register(c, "c", a + 10, 10, PT_MEM_HOST),
                   PT_EOVERLAP);

  snap_ok(c, 1); /* a's bytes from a */
  memcpy(old, a, 4096);
  /* a moves (as a framework replaces a storage): new bytes, new place */
  fill_random(a2, 4096, 84);
  ck_assert_int_eq(pt_region_update(c, "a", a2), 0);
  memcpy(w, a2, 4096);
  snap_ok(c, 2);
  fill_random(a2, 4096, 85);
  memset(a, 0x5c, 4096);
  restore_expect(c, 2);
  ck_assert(memcmp(a2, w, 4096) == 0);      /* restored into the new place */
  for (int i = 0; i < 4096; i++)            /* the old place untouched */
    ck_assert_int_eq((unsigned char)a[i], 0x5c);
  /* the old place may now be registered... no: the table is frozen; but
   * another region may move there */
  ck_assert_int_eq(pt_region_update(c, "b", a), 0);
  ck_assert_int_eq(pt_region_update(c, "b", b), 0);

  /* refused while a copy is in flight (a 64 MiB copy takes milliseconds;
   * the update follows pt_snapshot at once) */
  int refused = 0;
  for (int k = 0; k < 5 && refused == 0; k++) {
    ck_assert_int_eq(pt_snapshot(c, 3 + (uint64_t)k), PT_OK);
    int rc = pt_region_update(c, "a", a);
    if (rc == PT_EINFLIGHT) {
      refused++;
      ck_assert_ptr_nonnull(strstr(pt_last_error(c), "in flight"));
    } else {
      ck_assert_int_eq(rc, 0);
      ck_assert_int_eq(pt_region_update(c, "a", a2), 0);
    }
    ck_assert_int_eq(pt_fence(c), PT_OK);
  }
  ck_assert_int_eq(refused, 1);
  ck_assert_int_eq(pt_region_update(c, "a", a2), 0);

  pt_client_close(c, true);
  smp_done(&p);
  free(a);
  free(a2);
  free(b);
  free(old);
  free(w);
  free(huge);
}
END_TEST

/* kill -9 of the SMP: the client reconnects; committed data survives; a
 * snapshot interrupted by the crash is reported failed, never fatal. */
START_TEST(test_smp_restart)
{
  struct smp_proc p;
  struct state s, want;
  struct pt_status st;

  smp_init(&p, "kill", 2, true);
  smp_start(&p);
  state_new(&s, 31);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 2000);
  state_register(c, &s);
  snap_ok(c, 1);
  state_copy(&want, &s);

  smp_kill(&p, SIGKILL);
  smp_start(&p); /* the client's next call waits until it listens */
  state_scramble(&s, 32);
  restore_expect(c, 1);
  ck_assert(state_eq(&s, &want));
  state_scramble(&s, 33);
  snap_ok(c, 2);
  state_copy(&want, &s);
  state_scramble(&s, 34);
  restore_expect(c, 2);
  ck_assert(state_eq(&s, &want));

  /* killed between the slot and its seal (the seal goes out as soon as the
   * copy is done, so the SMP is stopped first to hold it off) */
  struct snap_store *store = NULL;
  char err[256];
  uint64_t k = 3, good = 2;
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  snapshot_catch_unsealed(c, &p, store, &s, &want, &k, &good);
  smp_kill(&p, SIGKILL);
  smp_start(&p);
  int rc = pt_fence(c);
  ck_assert_msg(rc < 0, "fence after the SMP died: %s", pt_err_name(rc));
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_failed, 1);
  ck_assert(!st.in_flight);
  /* the restarted SMP freed the interrupted slot; the step before it is
   * still there */
  state_scramble(&s, 35);
  restore_expect(c, good);
  ck_assert(state_eq(&s, &want));
  ck_assert_uint_eq(slot_state_of(store, k), SNAP_FREE);
  int fd = raw_node_connect(&p);
  Pt__StateReply *sr = raw_state(fd, true);
  for (size_t i = 0; i < sr->n_slots; i++)
    ck_assert_uint_ne(sr->slots[i]->state, SNAP_WRITING);
  ck_assert(sr->has_store);
  ck_assert_int_eq(sr->trainer_pid, (int)getpid());
  protobuf_c_message_free_unpacked(&sr->base, NULL);
  close(fd);

  snap_ok(c, k + 1);
  state_copy(&want, &s);
  state_scramble(&s, 36);
  restore_expect(c, k + 1);
  ck_assert(state_eq(&s, &want));

  /* the SMP is gone for good: calls fail within the deadline, no hang */
  smp_kill(&p, SIGKILL);
  uint64_t t0 = now_ns();
  ck_assert_int_lt(pt_snapshot(c, k + 2), 0);
  ck_assert_uint_lt(now_ns() - t0, 3000u * 1000000u);
  pt_client_close(c, false);
  snap_store_close(store);
  snap_store_unlink(p.shm);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* Slot policy without commits: sealed slots are reused; nothing is restored
 * until a node commits. The node's side: events, PIN, UNPIN, COMMIT,
 * SET_RESTORE. */
START_TEST(test_node_protocol)
{
  struct smp_proc p;
  struct state s, want;
  uint64_t step;

  smp_init(&p, "node", 2, false);
  smp_start(&p);
  state_new(&s, 41);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 1);
  snap_ok(c, 2);
  snap_ok(c, 3); /* 2 slots, none committed: the oldest sealed one is reused */
  state_copy(&want, &s);

  int fd = raw_node_connect(&p);
  Pt__StateReply *sr = raw_state(fd, false);
  ck_assert_uint_eq(sr->n_slots, 2);
  uint64_t steps = 0;
  for (size_t i = 0; i < sr->n_slots; i++) {
    ck_assert_uint_eq(sr->slots[i]->state, SNAP_SEALED);
    steps += sr->slots[i]->step;
  }
  ck_assert_uint_eq(steps, 2 + 3);
  ck_assert_int_eq(sr->smp_pid, p.pid);
  protobuf_c_message_free_unpacked(&sr->base, NULL);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);

  /* subscribe: a state reply, then an event per seal */
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  ProtobufCMessage *m = NULL;
  sub.node_id = "n0";
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SUBSCRIBE, &sub.base,
                                 RPC_STATE_REPLY, 3000, &m), 0);
  protobuf_c_message_free_unpacked(m, NULL);
  state_scramble(&s, 42);
  snap_ok(c, 4);
  state_copy(&want, &s);
  Pt__Event *ev = raw_event(fd);
  ck_assert_int_eq(ev->kind, PT__EVENT_KIND__EVENT_SEALED);
  ck_assert_uint_eq(ev->step, 4);
  protobuf_c_message_free_unpacked(&ev->base, NULL);

  /* Two-phase commit: a protected step is never reused by later
   * snapshots; an abort makes it an ordinary sealed step again. */
  ck_assert_int_eq(raw_pin(fd, 99), -ENOENT);
  ck_assert_int_eq(raw_pin(fd, 4), 0);
  ck_assert_int_eq(raw_pin(fd, 4), 0);
  for (uint64_t k = 5; k <= 6; k++) {
    state_scramble(&s, 40 + k);
    snap_ok(c, k);
    ev = raw_event(fd);
    ck_assert_uint_eq(ev->step, k);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  sr = raw_state(fd, false);
  ck_assert_uint_eq(sr->n_slots, 2);
  for (size_t i = 0; i < sr->n_slots; i++) {
    bool pinned = sr->slots[i]->state == SNAP_PINNED;
    ck_assert_uint_eq(sr->slots[i]->step, pinned ? 4 : 6);
    ck_assert_uint_eq(sr->slots[i]->state, pinned ? SNAP_PINNED : SNAP_SEALED);
  }
  protobuf_c_message_free_unpacked(&sr->base, NULL);
  ck_assert_int_eq(raw_unpin(fd, 6), -ENOENT); /* sealed, not protected */
  ck_assert_int_eq(raw_unpin(fd, 4), 0);
  ck_assert_int_eq(raw_unpin(fd, 4), -ENOENT);
  ck_assert_int_eq(raw_pin(fd, 4), 0);
  ck_assert_int_eq(raw_commit(fd, 99), -ENOENT);
  ck_assert_int_eq(raw_commit(fd, 4), 0);
  ck_assert_int_eq(raw_pin(fd, 4), -ENOENT); /* committed already */
  state_scramble(&s, 43);
  restore_expect(c, 4);
  ck_assert(state_eq(&s, &want));

  /* restore point: step 3 was freed by the commit of 4; none -> fresh */
  Pt__SetRestore sr3 = PT__SET_RESTORE__INIT;
  sr3.has_step = true;
  sr3.step = 3;
  ck_assert_int_eq(raw_status_call(fd, RPC_SET_RESTORE, &sr3.base), -ENOENT);
  sr3.step = 4;
  ck_assert_int_eq(raw_status_call(fd, RPC_SET_RESTORE, &sr3.base), 0);
  restore_expect(c, 4);
  Pt__SetRestore none = PT__SET_RESTORE__INIT;
  ck_assert_int_eq(raw_status_call(fd, RPC_SET_RESTORE, &none.base), 0);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);

  /* the trainer says it is done */
  pt_client_close(c, true);
  ev = raw_event(fd);
  ck_assert_int_eq(ev->kind, PT__EVENT_KIND__EVENT_TRAINER_GONE);
  ck_assert(ev->has_done && ev->done);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  sr = raw_state(fd, false);
  ck_assert(sr->trainer_done);
  ck_assert_int_eq(sr->trainer_pid, 0);
  protobuf_c_message_free_unpacked(&sr->base, NULL);

  close(fd);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* PT_SKIPPED: the only slot not holding the newest commit is still busy
 * (as while the previous step is being protected). */
START_TEST(test_skipped)
{
  struct smp_proc p;
  struct state s;
  struct snap_store *store = NULL;
  struct pt_status st;
  uint32_t busy;
  uint64_t gen;
  char err[256];

  smp_init(&p, "skip", 2, true);
  smp_start(&p);
  state_new(&s, 51);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 1);

  /* Stand-in for a protection in progress: hold the other slot WRITING. */
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_int_eq(snap_slot_acquire(store, 1000, &busy, &gen), 0);
  ck_assert_int_eq(pt_snapshot(c, 2), PT_SKIPPED);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  ck_assert_int_eq(pt_snapshot(c, 2), -EINVAL); /* a skipped step is used */
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_skipped, 1);
  ck_assert_uint_eq(st.snapshots_started, 1);
  ck_assert(st.has_committed);
  ck_assert_uint_eq(st.committed_step, 1);
  ck_assert(!st.in_flight);

  ck_assert_int_eq(snap_slot_abort(store, busy, gen), 0);
  snap_ok(c, 3);
  restore_expect(c, 3);
  pt_client_close(c, true);

  /* A trainer that goes away between its slot and its seal: the SMP frees
   * the slot. */
  int fd = raw_connect(&p);
  Pt__Hello h = PT__HELLO__INIT;
  Pt__Region rv[NREG], *rp[NREG];
  ProtobufCMessage *m = NULL;
  for (int i = 0; i < NREG; i++) {
    pt__region__init(&rv[i]);
    rv[i].name = (char *)reg_names[i];
    rv[i].bytes = reg_bytes[i];
    rp[i] = &rv[i];
  }
  h.job = p.job;
  h.world = 1; /* the SMP refuses a trainer of another world size */
  h.pid = (int32_t)getpid(); /* the SMP checks it against SO_PEERCRED */
  h.n_regions = NREG;
  h.regions = rp;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_HELLO, &h.base, RPC_HELLO_REPLY, 3000,
                                 &m), 0);
  ck_assert_int_eq(((Pt__HelloReply *)m)->status, 0);
  ck_assert_str_eq(((Pt__HelloReply *)m)->shm_name, p.shm);
  protobuf_c_message_free_unpacked(m, NULL);
  /* step 3 is committed: a new trainer asks where to restore from first */
  Pt__RestoreQuery q = PT__RESTORE_QUERY__INIT;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_RESTORE_QUERY, &q.base,
                                 RPC_RESTORE_REPLY, 3000, &m), 0);
  ck_assert_int_eq(((Pt__RestoreReply *)m)->status, 0);
  protobuf_c_message_free_unpacked(m, NULL);
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  a.step = 4;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                                 3000, &m), 0);
  Pt__SlotReply *r = (Pt__SlotReply *)m;
  ck_assert_int_eq(r->status, 0);
  ck_assert(r->has_committed_step);
  ck_assert_uint_eq(r->committed_step, 3);
  uint32_t wslot = r->slot;
  protobuf_c_message_free_unpacked(m, NULL);
  struct snap_slot_info si;
  snap_slot_get(store, wslot, &si);
  ck_assert_uint_eq(si.state, SNAP_WRITING);
  close(fd);
  for (int i = 0; i < 300 && si.state == SNAP_WRITING; i++) {
    sleep_ms(10);
    snap_slot_get(store, wslot, &si);
  }
  ck_assert_uint_eq(si.state, SNAP_FREE);

  snap_store_close(store);
  smp_done(&p);
  state_free(&s);
}
END_TEST

/* Garbage on the socket closes that connection only. */
START_TEST(test_garbage)
{
  struct smp_proc p;
  struct state s;
  unsigned char junk[256];

  smp_init(&p, "junk", 2, true);
  smp_start(&p);
  state_new(&s, 61);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 1);

  /* random bytes */
  int fd = raw_connect(&p);
  fill_random(junk, sizeof(junk), 62);
  ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  ck_assert(unit_closed_by_peer(fd, 3000));
  close(fd);
  snap_ok(c, 2);

  /* a valid header announcing a body over the limit */
  struct rpc_hdr h = { .type = RPC_HELLO, .length = 64u << 20 };
  uint8_t hb[RPC_HDR_BYTES];
  rpc_hdr_encode(hb, &h);
  fd = raw_connect(&p);
  ck_assert_int_eq(write(fd, hb, sizeof(hb)), (ssize_t)sizeof(hb));
  ck_assert(unit_closed_by_peer(fd, 3000));
  close(fd);

  /* a body that is not the message its type names */
  h.length = sizeof(junk);
  h.request_id = 5;
  rpc_hdr_encode(hb, &h);
  fd = raw_connect(&p);
  ck_assert_int_eq(write(fd, hb, sizeof(hb)), (ssize_t)sizeof(hb));
  ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  ck_assert(unit_closed_by_peer(fd, 3000));
  close(fd);

  /* a well-formed message the SMP does not serve */
  fd = raw_connect(&p);
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ck_assert_int_eq(rpc_sock_send(fd, RPC_STATUS_QUERY, 9, &q.base,
                                 rpc_now_ms() + 1000), 0);
  ck_assert(unit_closed_by_peer(fd, 3000));
  close(fd);

  /* requests of a trainer without its hello: the connection has no role,
   * so the request is refused and the connection closed */
  fd = raw_connect(&p);
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m = NULL;
  a.step = 100;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                                 3000, &m), 0);
  ck_assert_int_eq(((Pt__SlotReply *)m)->status, PT_EROLE);
  protobuf_c_message_free_unpacked(m, NULL);
  ck_assert(unit_closed_by_peer(fd, 3000));
  close(fd);

  /* the trainer was served throughout */
  snap_ok(c, 3);
  state_scramble(&s, 63);
  restore_expect(c, 3);
  pt_client_close(c, true);
  smp_done(&p);
  state_free(&s);
}
END_TEST

/* A damaged object at start-up is renamed aside; a budget refuses HELLO. */
START_TEST(test_quarantine_budget)
{
  struct smp_proc p;
  struct state s;
  char junk[8192];
  uint64_t step;

  smp_init(&p, "quar", 2, true);
  int fd = shm_open(p.shm, O_CREAT | O_RDWR | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  fill_random(junk, sizeof(junk), 71);
  ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  close(fd);
  smp_start(&p);
  state_new(&s, 72);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);
  snap_ok(c, 1);
  restore_expect(c, 1);
  pt_client_close(c, true);
  smp_done(&p);

  /* the damaged object is kept under another name */
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  int found = 0;
  ck_assert_ptr_nonnull(d);
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, p.shm + 1, strlen(p.shm + 1)) == 0 &&
        strstr(e->d_name, ".bad-") != NULL) {
      char n[300];
      snprintf(n, sizeof(n), "/%s", e->d_name);
      shm_unlink(n);
      found++;
    }
  }
  closedir(d);
  ck_assert_int_eq(found, 1);

  /* a budget far below the state: HELLO refused with the reason */
  smp_init(&p, "budget", 2, true);
  snprintf(p.budget, sizeof(p.budget), "1M");
  smp_start(&p);
  c = client_open(&p, 5000);
  state_register(c, &s);
  int rc = pt_snapshot(c, 1);
  ck_assert_msg(rc == PT_EBUDGET, "snapshot over budget: %s (%s)",
                pt_err_name(rc), pt_last_error(c));
  ck_assert_str_ne(pt_last_error(c), "");
  pt_client_close(c, false);
  smp_done(&p);
  state_free(&s);
}
END_TEST

/* The seal goes out as soon as the copy is done, not at pt_fence(): the
 * node hears of the step, and its slot is SEALED, before the trainer fences.
 * A hung SMP: pt_fence() reports and counts a seal left unanswered within
 * the deadline, training goes on, and pt_client_close() does not hang. */
START_TEST(test_seal_background)
{
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  struct pt_status st;
  ProtobufCMessage *m = NULL;
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  char err[256];

  smp_init(&p, "bg", 2, false);
  smp_start(&p);
  state_new(&s, 91);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  int fd = raw_connect(&p);
  sub.node_id = "n0";
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SUBSCRIBE, &sub.base,
                                 RPC_STATE_REPLY, 3000, &m), 0);
  protobuf_c_message_free_unpacked(m, NULL);

  for (uint64_t k = 1; k <= 3; k++) {
    state_scramble(&s, 90 + k);
    ck_assert_int_eq(pt_snapshot(c, k), PT_OK);
    if (store == NULL) /* the first snapshot's HELLO made the object */
      ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
    /* no pt_fence() yet: the event and the slot table tell */
    Pt__Event *ev = raw_event(fd);
    ck_assert_int_eq(ev->kind, PT__EVENT_KIND__EVENT_SEALED);
    ck_assert_uint_eq(ev->step, k);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    ck_assert_uint_eq(slot_state_of(store, k), SNAP_SEALED);
    pt_status_get(c, &st);
    ck_assert(st.in_flight); /* until pt_fence() collects the outcome */
    ck_assert_int_eq(pt_fence(c), PT_OK);
    pt_status_get(c, &st);
    ck_assert(!st.in_flight);
  }
  /* a sealed step nobody fenced: the next snapshot collects it (or waits
   * for the answer to its seal) and goes on */
  ck_assert_int_eq(pt_snapshot(c, 4), PT_OK);
  Pt__Event *ev = raw_event(fd);
  ck_assert_uint_eq(ev->step, 4);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  ck_assert_int_eq(pt_snapshot(c, 5), PT_OK);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  ck_assert_uint_eq(slot_state_of(store, 5), SNAP_SEALED);
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_started, 5);
  ck_assert_uint_eq(st.snapshots_failed, 0);
  close(fd); /* events are not read from here on */
  pt_client_close(c, false);

  /* a hung SMP, and a client with a shorter deadline */
  c = client_open(&p, 1000);
  state_register(c, &s);
  uint64_t k = 10, good = 0;
  snapshot_catch_unsealed(c, &p, store, &s, &want, &k, &good);
  uint64_t t0 = now_ns();
  int rc = pt_fence(c);
  uint64_t waited = now_ns() - t0;
  ck_assert_msg(rc == -ETIMEDOUT, "fence with the SMP stopped: %s",
                pt_err_name(rc));
  ck_assert_uint_lt(waited, 3000u * 1000000u);
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "SEAL"));
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_failed, 1);
  ck_assert(!st.in_flight);
  smp_resume(&p);
  /* training goes on: the client reconnects */
  state_scramble(&s, 99);
  snap_ok(c, k + 2);

  /* stopped again with a seal on its way: close keeps its deadlines */
  uint64_t k2 = k + 3;
  snapshot_catch_unsealed(c, &p, store, &s, &want, &k2, &good);
  t0 = now_ns();
  pt_client_close(c, false);
  waited = now_ns() - t0;
  ck_assert_uint_lt(waited, 4000u * 1000000u);
  smp_resume(&p);

  snap_store_close(store);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* libpt's test hook (client/pt_client_internal.h): the next copy fails. */
void client_test_copy_fault(pt_client *c, int rc);

/* A copy that fails: pt_fence() reports the copy's error, libpt gives the
 * slot back with RELEASE and the SMP frees it (a SEAL with ok = false, the
 * old way, is refused and would leave the slot WRITING); the committed
 * step stays the restore point and the next snapshot works. */
START_TEST(test_copy_failed)
{
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  struct pt_status st;
  char err[256];

  smp_init(&p, "copyfail", 2, true);
  smp_start(&p);
  state_new(&s, 31);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  snap_ok(c, 1);
  state_copy(&want, &s);
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  ck_assert_uint_eq(slot_state_of(store, 1), SNAP_COMMITTED);

  for (uint64_t k = 2; k <= 3; k++) { /* one free slot: a leak shows at once */
    state_scramble(&s, 40 + k);
    client_test_copy_fault(c, -EIO);
    ck_assert_int_eq(pt_snapshot(c, k), PT_OK);
    int rc = pt_fence(c);
    ck_assert_msg(rc == -EIO, "fence of a failed copy: %s", pt_err_name(rc));
    ck_assert_ptr_nonnull(strstr(pt_last_error(c), "copy of step"));
    ck_assert_uint_eq(slot_state_of(store, k), SNAP_FREE);
    ck_assert_uint_eq(slot_state_of(store, 1), SNAP_COMMITTED);
  }
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_failed, 2);
  for (uint32_t i = 0; i < snap_store_nslots(store); i++) {
    struct snap_slot_info si;
    snap_slot_get(store, i, &si);
    ck_assert_uint_ne(si.state, SNAP_WRITING);
  }

  /* training goes on */
  state_scramble(&s, 50);
  snap_ok(c, 4);
  ck_assert_uint_eq(slot_state_of(store, 4), SNAP_COMMITTED);
  state_copy(&want, &s);
  state_scramble(&s, 51);
  pt_client_close(c, true);
  c = client_open(&p, 5000);
  state_register(c, &s);
  restore_expect(c, 4);
  ck_assert(state_eq(&s, &want));
  pt_client_close(c, true);
  snap_store_close(store);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* A stopped SMP (SIGSTOP) never stalls training: pt_snapshot() and
 * pt_fence() return within snapshot_timeout_ms, the steps are skipped and
 * counted, and snapshots work again as soon as the SMP answers. No slot
 * given out late is left behind. */
START_TEST(test_hung_smp)
{
  enum { BOUND_MS = 250, SLACK_MS = 750 };
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  struct pt_status st;
  char err[256];
  uint64_t step = 0, t0, skipped = 0;
  int rc;

  smp_init(&p, "hung", 2, true);
  smp_start(&p);
  state_new(&s, 101);
  state_new(&want, 0);
  /* a request deadline far above the bound: a call that waits for the
   * SMP shows */
  pt_client *c = client_open2(&p, 8000, BOUND_MS);
  state_register(c, &s);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);
  snap_ok(c, 1);
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);

  /* stopped between two snapshots: every slot request goes unanswered */
  smp_pause(&p);
  for (uint64_t k = 2; k <= 6; k++) {
    t0 = now_ns();
    rc = pt_snapshot(c, k);
    uint64_t ms = (now_ns() - t0) / 1000000u;
    ck_assert_msg(rc == PT_SKIPPED, "snapshot %llu, SMP stopped: %s (%s)",
                  (unsigned long long)k, pt_err_name(rc), pt_last_error(c));
    ck_assert_msg(ms < BOUND_MS + SLACK_MS, "pt_snapshot blocked %llu ms",
                  (unsigned long long)ms);
    skipped++;
    t0 = now_ns();
    ck_assert_int_eq(pt_fence(c), PT_OK); /* nothing in flight */
    ck_assert_uint_lt((now_ns() - t0) / 1000000u, SLACK_MS);
  }
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_skipped, skipped);
  ck_assert_uint_eq(st.snapshots_failed, 0);
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "skipped"));
  smp_resume(&p);
  /* it answers again: the late slot is given back, snapshots resume */
  uint64_t k = 7;
  for (int i = 0; i < 50 && (rc = pt_snapshot(c, k)) == PT_SKIPPED; i++, k++)
    sleep_ms(20);
  ck_assert_msg(rc == PT_OK, "snapshot after SIGCONT: %s (%s)",
                pt_err_name(rc), pt_last_error(c));
  ck_assert_int_eq(pt_fence(c), PT_OK);
  state_copy(&want, &s);
  state_scramble(&s, 102);
  restore_expect(c, k);
  ck_assert(state_eq(&s, &want));

  /* stopped with a seal on its way */
  uint64_t good = k;
  k++;
  snapshot_catch_unsealed(c, &p, store, &s, &want, &k, &good);
  t0 = now_ns();
  rc = pt_fence(c);
  ck_assert_msg(rc == -ETIMEDOUT, "fence, seal unanswered: %s",
                pt_err_name(rc));
  ck_assert_uint_lt((now_ns() - t0) / 1000000u, BOUND_MS + SLACK_MS);
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "SEAL"));
  for (uint64_t j = k + 1; j <= k + 4; j++) {
    t0 = now_ns();
    rc = pt_snapshot(c, j);
    ck_assert_msg(rc == PT_SKIPPED, "snapshot %llu, seal unanswered: %s",
                  (unsigned long long)j, pt_err_name(rc));
    ck_assert_uint_lt((now_ns() - t0) / 1000000u, BOUND_MS + SLACK_MS);
    t0 = now_ns();
    ck_assert_int_eq(pt_fence(c), PT_OK); /* reported once, above */
    ck_assert_uint_lt((now_ns() - t0) / 1000000u, SLACK_MS);
  }
  pt_status_get(c, &st);
  ck_assert_uint_eq(st.snapshots_failed, 1);
  ck_assert(!st.in_flight);
  smp_resume(&p);
  k += 5;
  for (int i = 0; i < 50 && (rc = pt_snapshot(c, k)) == PT_SKIPPED; i++, k++)
    sleep_ms(20);
  ck_assert_msg(rc == PT_OK, "snapshot after the second SIGCONT: %s (%s)",
                pt_err_name(rc), pt_last_error(c));
  ck_assert_int_eq(pt_fence(c), PT_OK);
  state_copy(&want, &s);
  state_scramble(&s, 103);
  restore_expect(c, k);
  ck_assert(state_eq(&s, &want));
  for (uint32_t i = 0; i < snap_store_nslots(store); i++) {
    struct snap_slot_info si;
    snap_slot_get(store, i, &si);
    ck_assert_msg(si.state != SNAP_WRITING, "slot %u left WRITING", i);
  }

  pt_client_close(c, true);
  snap_store_close(store);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* A committed step of an earlier run: snapshotting without pt_restore() is
 * PT_ENORESTORE; a step at or below the committed one is PT_ESTEP. */
START_TEST(test_snapshot_order)
{
  struct smp_proc p;
  struct state s;
  struct pt_status st;
  uint64_t step;

  smp_init(&p, "order", 2, true);
  smp_start(&p);
  state_new(&s, 111);
  pt_client *a = client_open(&p, 5000);
  state_register(a, &s);
  ck_assert_int_eq(pt_restore(a, &step), PT_ENOSNAP);
  snap_ok(a, 5);
  snap_ok(a, 6); /* its own commits never stop a trainer */
  pt_client_close(a, false);

  pt_client *b = client_open(&p, 5000);
  state_register(b, &s);
  int rc = pt_snapshot(b, 7);
  ck_assert_msg(rc == PT_ENORESTORE, "snapshot without restore: %s",
                pt_err_name(rc));
  ck_assert_ptr_nonnull(strstr(pt_last_error(b), "pt_restore"));
  ck_assert_int_eq(pt_snapshot(b, 100), PT_ENORESTORE);
  pt_status_get(b, &st);
  ck_assert_uint_eq(st.snapshots_failed, 2);
  ck_assert_uint_eq(st.snapshots_started, 0);
  restore_expect(b, 6);
  ck_assert_int_eq(pt_snapshot(b, 6), PT_ESTEP);
  ck_assert_int_eq(pt_snapshot(b, 2), PT_ESTEP);
  ck_assert_ptr_nonnull(strstr(pt_last_error(b), "committed"));
  ck_assert_str_eq(pt_err_name(PT_ESTEP), "PT_ESTEP");
  snap_ok(b, 7);
  restore_expect(b, 7);
  pt_client_close(b, true);

  /* the first call a trainer makes is its snapshot: the HELLO it says
   * tells the committed step */
  pt_client *d = client_open(&p, 5000);
  state_register(d, &s);
  ck_assert_int_eq(pt_snapshot(d, 8), PT_ENORESTORE);
  restore_expect(d, 7);
  snap_ok(d, 8);
  pt_client_close(d, true);
  smp_done(&p);
  state_free(&s);
}
END_TEST

/* The SMP was killed and a new one is starting: a connection that the
 * socket's listener takes and resets (ECONNRESET) is retried within the
 * deadline, as a refused one is. The stand-in listener resets the first
 * connection, then a real SMP listens 50 ms later. */
START_TEST(test_reset_retry)
{
  struct smp_proc p;
  struct state s, want;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  uint64_t step;

  smp_init(&p, "reset", 2, true);
  smp_start(&p);
  state_new(&s, 121);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 3000);
  state_register(c, &s);
  ck_assert_int_eq(pt_restore(c, &step), PT_ENOSNAP);
  snap_ok(c, 1);
  state_copy(&want, &s);
  smp_kill(&p, SIGKILL);

  for (int round = 0; round < 2; round++) {
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    unlink(p.sock);
    ck_assert_uint_lt(strlen(p.sock), sizeof(sa.sun_path));
    memcpy(sa.sun_path, p.sock, strlen(p.sock) + 1);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      struct linger lg = { .l_onoff = 1, .l_linger = 0 };
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(99);
      int a = accept(lfd, NULL, NULL);
      if (a < 0)
        _exit(98);
      /* wait for the client's first bytes, then reset */
      struct pollfd pfd = { a, POLLIN, 0 };
      poll(&pfd, 1, 2000);
      setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      close(a);
      close(lfd);
      unlink(p.sock);
      p.start_delay_ms = 50;
      smp_exec(&p);
    }
    close(lfd);
    p.pid = pid;
    state_scramble(&s, 122);
    if (round == 0) {
      int rc = pt_restore(c, &step);
      ck_assert_msg(rc == PT_OK, "restore past a reset: %s (%s)",
                    pt_err_name(rc), pt_last_error(c));
      ck_assert_uint_eq(step, 1);
      ck_assert(state_eq(&s, &want));
    } else {
      snap_ok(c, 2); /* a snapshot's reconnection retries too */
      state_copy(&want, &s);
      restore_expect(c, 2);
      ck_assert(state_eq(&s, &want));
    }
    smp_kill(&p, SIGKILL);
  }
  pt_client_close(c, false);
  snap_store_unlink(p.shm);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* The ABI a binding checks: pt_version() and the size of pt_options. */
START_TEST(test_abi)
{
  struct {
    struct pt_options o;
    char newer[16]; /* fields of a newer header */
  } big;
  struct pt_options o;
  pt_client *c = NULL;
  char sock[256];

  ck_assert_uint_eq(pt_version(), PT_VERSION);
  ck_assert_uint_eq(pt_version() >> 16, PT_VERSION_MAJOR);
  ck_assert_uint_eq(pt_version() & 0xffff, PT_VERSION_MINOR);

  /* no SMP listens: an accepted struct gets as far as connecting */
  snprintf(sock, sizeof(sock), "%s/nobody.sock", g_dir);
  memset(&big, 0, sizeof(big));
  big.o.socket_path = sock;
  big.o.timeout_ms = 50;
  big.o.size = sizeof(big);
  ck_assert_int_eq(pt_client_open(&c, &big.o), PT_ECONFIG);
  ck_assert_ptr_null(c);
  big.newer[0] = 1; /* not read: the size says where the struct ends */
  big.o.size = sizeof(big.o);
  ck_assert_int_eq(pt_client_open(&c, &big.o), -ENOENT);
  big.o.size = 0; /* zero-initialised by a caller of this header */
  ck_assert_int_eq(pt_client_open(&c, &big.o), -ENOENT);
  big.o.size = sizeof(size_t);
  ck_assert_int_eq(pt_client_open(&c, &big.o), PT_ECONFIG);
  big.o.size = offsetof(struct pt_options, log_arg) - 1;
  ck_assert_int_eq(pt_client_open(&c, &big.o), PT_ECONFIG);
  /* the first struct with a size ended at log_arg */
  memset(&o, 0, sizeof(o));
  o.socket_path = sock;
  o.timeout_ms = 50;
  o.size = offsetof(struct pt_options, log_arg) + sizeof(o.log_arg);
  ck_assert_int_eq(pt_client_open(&c, &o), -ENOENT);
  ck_assert_ptr_null(c);
}
END_TEST

/* The command line: --help, missing and bad values. */
START_TEST(test_smp_cli)
{
  char *help[] = { "smp", "--help", NULL };
  char *nojob[] = { "smp", "--rank", "0", "--socket", "/tmp/x", NULL };
  char *slots[] = { "smp", "--job", "j", "--rank", "0", "--socket", "/tmp/x",
                    "--slots", "9", NULL };
  char *budget[] = { "smp", "--job", "j", "--rank", "0", "--socket", "/tmp/x",
                     "--budget", "12Q", NULL };
  char *rank[] = { "smp", "--job", "j", "--rank", "2", "--world", "2",
                   "--socket", "/tmp/x", NULL };
  char *extra[] = { "smp", "--job", "j", "--rank", "0", "--socket", "/tmp/x",
                    "stray", NULL };
  int saved = dup(STDERR_FILENO), devnull = open("/dev/null", O_WRONLY);

  dup2(devnull, STDERR_FILENO);
  int r_nojob = smp_main(5, nojob);
  int r_slots = smp_main(9, slots);
  int r_budget = smp_main(9, budget);
  int r_rank = smp_main(9, rank);
  int r_extra = smp_main(8, extra);
  dup2(saved, STDERR_FILENO);
  close(devnull);
  close(saved);
  ck_assert_int_eq(r_nojob, 2);
  ck_assert_int_eq(r_slots, 2);
  ck_assert_int_eq(r_budget, 2);
  ck_assert_int_eq(r_rank, 2);
  ck_assert_int_eq(r_extra, 2);
  fflush(stdout);
  ck_assert_int_eq(smp_main(2, help), 0);
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* pt_snapshot() must return at once: one round trip and a hand-off. */
START_TEST(test_blocking_time)
{
  enum { N = 100, PARTS = 4 };
  struct smp_proc p;
  size_t part = 16 * MIB;
  char *buf[PARTS];
  uint64_t t[N];

  smp_init(&p, "time", 2, true);
  smp_start(&p);
  pt_client *c = client_open(&p, 5000);
  for (int i = 0; i < PARTS; i++) {
    char name[16];
    buf[i] = malloc(part);
    ck_assert_ptr_nonnull(buf[i]);
    fill_random(buf[i], part, 80 + (uint64_t)i);
    snprintf(name, sizeof(name), "part%d", i);
    ck_assert_int_eq(pt_region_register(c, name, buf[i], part, PT_MEM_HOST), 0);
  }
  snap_ok(c, 1); /* the first call says HELLO and maps the object */
  for (int i = 0; i < N; i++) {
    uint64_t t0 = now_ns();
    int rc = pt_snapshot(c, (uint64_t)i + 2);
    t[i] = now_ns() - t0;
    ck_assert_int_eq(rc, PT_OK);
    ck_assert_int_eq(pt_fence(c), PT_OK);
  }
  qsort(t, N, sizeof(t[0]), cmp_u64);
  fprintf(stderr, "pt_snapshot blocking time, 64 MiB in %d regions: median "
          "%.1f us, p90 %.1f us, max %.1f us\n", PARTS, t[N / 2] / 1e3,
          t[N * 9 / 10] / 1e3, t[N - 1] / 1e3);
  ck_assert_uint_lt(t[N / 2], 1000000u);
  char orig = buf[0][12345];
  buf[0][12345] ^= 1;
  restore_expect(c, N + 1);
  ck_assert_int_eq(buf[0][12345], orig);
  pt_client_close(c, true);
  smp_done(&p);
  for (int i = 0; i < PARTS; i++)
    free(buf[i]);
}
END_TEST

/* A child forked without exec (a data-loader worker) that uses the
 * trainer's client: every call returns PT_ESTATE at once, even with the
 * parent's seal in flight (the sealer and copy threads do not exist in the
 * child), close returns at once, and nothing reaches the SMP from the child:
 * no BYE, no TRAINER_GONE event; the parent's client goes on working. */
static int fork_child_calls(pt_client *c)
{
  struct pt_status st;
  uint64_t step = 0;
  char want[64];

  alarm(2); /* the watchdog: a call that blocks kills the child */
  snprintf(want, sizeof(want), "belongs to process %d", (int)getppid());
  uint64_t t0 = now_ns();
  if (pt_fence(c) != PT_ESTATE)
    return 1;
  if (strstr(pt_last_error(c), want) == NULL ||
      strstr(pt_last_error(c), "forked child must open its own") == NULL)
    return 2;
  if (pt_snapshot(c, 1000) != PT_ESTATE)
    return 3;
  if (pt_restore(c, &step) != PT_ESTATE)
    return 4;
  if (pt_status_get(c, &st) != PT_ESTATE)
    return 5;
  if (pt_blob_set(c, "x", 1) != PT_ESTATE)
    return 6;
  int dummy = 0;
  if (pt_region_update(c, "params", &dummy) != PT_ESTATE)
    return 7;
  pt_client_close(c, true);
  if (now_ns() - t0 > 1000u * 1000000u)
    return 8;
  return 0;
}

static void fork_and_check(pt_client *c)
{
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(fork_child_calls(c));
  int st = 0;
  uint64_t end = now_ns() + 5000u * 1000000u;
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_ns() < end)
    sleep_ms(5);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    ck_abort_msg("the forked child did not finish");
  }
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "forked child: status 0x%x (signal %d: the watchdog fired "
                "when 14)", st, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

START_TEST(test_fork_child)
{
  struct smp_proc p;
  struct state s, want;
  struct snap_store *store = NULL;
  ProtobufCMessage *m = NULL;
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  char err[256];

  smp_init(&p, "fork", 3, false);
  smp_start(&p);
  state_new(&s, 71);
  state_new(&want, 0);
  pt_client *c = client_open(&p, 5000);
  state_register(c, &s);
  int fd = raw_connect(&p);
  sub.node_id = "n0";
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SUBSCRIBE, &sub.base,
                                 RPC_STATE_REPLY, 3000, &m), 0);
  protobuf_c_message_free_unpacked(m, NULL);

  /* a sealed step nobody fenced yet */
  ck_assert_int_eq(pt_snapshot(c, 1), PT_OK);
  Pt__Event *ev = raw_event(fd);
  ck_assert_int_eq(ev->kind, PT__EVENT_KIND__EVENT_SEALED);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  ck_assert_int_eq(snap_store_open(&store, p.shm, err, sizeof(err)), 0);
  fork_and_check(c);
  ck_assert_int_eq(pt_fence(c), PT_OK);

  /* a seal on its way that the stopped SMP cannot answer */
  uint64_t k = 2, good = 0;
  snapshot_catch_unsealed(c, &p, store, &s, &want, &k, &good);
  fork_and_check(c);
  smp_resume(&p);
  ck_assert_int_eq(pt_fence(c), PT_OK);
  /* drain the SEALED events of the steps so far; nothing else came */
  for (uint64_t i = 2; i <= k; i++) {
    ev = raw_event(fd);
    ck_assert_msg(ev->kind == PT__EVENT_KIND__EVENT_SEALED,
                  "event %d after the children", (int)ev->kind);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }

  /* the parent's client still works, on the same connection */
  state_scramble(&s, 77);
  state_copy(&want, &s);
  snap_ok(c, k + 1);
  ev = raw_event(fd);
  ck_assert_msg(ev->kind == PT__EVENT_KIND__EVENT_SEALED,
                "event %d: the SMP saw the trainer go", (int)ev->kind);
  ck_assert_uint_eq(ev->step, k + 1);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  ck_assert_int_eq(raw_pin(fd, k + 1), 0);
  ck_assert_int_eq(raw_commit(fd, k + 1), 0);
  state_scramble(&s, 78);
  restore_expect(c, k + 1);
  ck_assert(state_eq(&s, &want));
  pt_client_close(c, false);
  ev = raw_event(fd);
  ck_assert_int_eq(ev->kind, PT__EVENT_KIND__EVENT_TRAINER_GONE);
  protobuf_c_message_free_unpacked(&ev->base, NULL);

  close(fd);
  snap_store_close(store);
  smp_done(&p);
  state_free(&s);
  state_free(&want);
}
END_TEST

/* A stand-in SMP that refuses every HELLO with a status libpt retries
 * (-ENOENT: the SMP names nothing yet) and keeps the connection: libpt
 * tries again until its deadline. Runs in a forked child; never returns. */
static void fake_smp_refusing(const char *sock)
{
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (strlen(sock) >= sizeof(a.sun_path))
    _exit(3);
  memcpy(a.sun_path, sock, strlen(sock) + 1);
  unlink(sock);
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      listen(ls, 16) != 0)
    _exit(2);
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0)
      continue;
    for (;;) {
      struct rpc_hdr h;
      ProtobufCMessage *m = NULL;
      if (rpc_sock_recv(fd, RPC_MAX_BODY_HELLO, rpc_now_ms() + 5000, &h,
                        &m) != 0)
        break;
      protobuf_c_message_free_unpacked(m, NULL);
      Pt__HelloReply r = PT__HELLO_REPLY__INIT;
      r.status = -ENOENT;
      r.message = "fake: no object yet";
      if (rpc_sock_send(fd, RPC_HELLO_REPLY, h.request_id, &r.base,
                        rpc_now_ms() + 1000) != 0)
        break;
    }
    close(fd);
  }
}

static int g_warn_lines;
static char g_warn_first[512];

static void count_cb(void *arg, int level, const char *msg)
{
  (void)arg;
  if (level <= PT_LOG_WARN) {
    if (g_warn_lines++ == 0)
      snprintf(g_warn_first, sizeof(g_warn_first), "%s", msg);
    if (getenv("PT_TEST_VERBOSE") != NULL)
      fprintf(stderr, "libpt: %s\n", msg);
  }
}

/* A HELLO refused again and again while libpt retries it (every 20 ms until
 * timeout_ms) is logged once, and once summed up: not once per retry. */
START_TEST(test_hello_refusal_log)
{
  char sock[200];
  struct pt_options o = { .size = sizeof(o) };
  pt_client *c = NULL;
  uint64_t buf[64] = { 0 }, step = 0;

  snprintf(sock, sizeof(sock), "%s/refuse.sock", g_dir);
  pid_t parent = getpid(), pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(99);
    fake_smp_refusing(sock);
  }
  o.socket_path = sock;
  o.job = "refused";
  o.rank_set = true;
  o.rank = 0;
  o.world = 1;
  o.timeout_ms = 1000;
  o.log_fn = count_cb;
  ck_assert_int_eq(pt_client_open(&c, &o), 0);
  ck_assert_int_eq(pt_region_register(c, "x", buf, sizeof(buf), PT_MEM_HOST),
                   0);
  g_warn_lines = 0;
  uint64_t t0 = now_ns();
  int rc = pt_restore(c, &step);
  uint64_t took_ms = (now_ns() - t0) / 1000000u;
  ck_assert_msg(rc == -ENOENT || rc == -ETIMEDOUT, "pt_restore: %s (%s)",
                pt_err_name(rc), pt_last_error(c));
  ck_assert_uint_ge(took_ms, 500u); /* it did retry */
  ck_assert_msg(g_warn_lines <= 2, "%d warnings for one refused restore",
                g_warn_lines);
  /* the first refusal is logged as it came, the summary is the last error
   * (the last try may have timed out instead) */
  ck_assert_ptr_nonnull(strstr(g_warn_first, "fake: no object yet"));
  ck_assert_ptr_nonnull(strstr(pt_last_error(c), "ms of retries"));
  /* a second attempt: again one line and one summary */
  g_warn_lines = 0;
  rc = pt_snapshot(c, 1);
  ck_assert_msg(rc == -ENOENT || rc == -ETIMEDOUT, "pt_snapshot: %s",
                pt_err_name(rc));
  ck_assert_msg(g_warn_lines >= 1 && g_warn_lines <= 2,
                "%d warnings for one refused snapshot", g_warn_lines);
  pt_client_close(c, false);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  unlink(sock);
}
END_TEST

static Suite *client_suite(void)
{
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("libpt+smp");

  tcase_set_timeout(tc, 10);
  tcase_add_test(tc, test_roundtrip);
  tcase_add_test(tc, test_misuse);
  tcase_add_test(tc, test_connect_deadline);
  tcase_add_test(tc, test_regions_and_busy);
  tcase_add_test(tc, test_checksum);
  tcase_add_test(tc, test_record_forged);
  tcase_add_test(tc, test_blob);
  tcase_add_test(tc, test_many_regions);
  tcase_add_test(tc, test_region_update);
  tcase_add_test(tc, test_smp_restart);
  tcase_add_test(tc, test_node_protocol);
  tcase_add_test(tc, test_skipped);
  tcase_add_test(tc, test_garbage);
  tcase_add_test(tc, test_quarantine_budget);
  tcase_add_test(tc, test_seal_background);
  tcase_add_test(tc, test_smp_cli);
  tcase_add_test(tc, test_blocking_time);
  tcase_add_test(tc, test_hung_smp);
  tcase_add_test(tc, test_copy_failed);
  tcase_add_test(tc, test_snapshot_order);
  tcase_add_test(tc, test_reset_retry);
  tcase_add_test(tc, test_abi);
  tcase_add_test(tc, test_fork_child);
  tcase_add_test(tc, test_hello_refusal_log);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  int rc;

  snprintf(g_dir, sizeof(g_dir), "/tmp/pt-client.XXXXXX");
  if (mkdtemp(g_dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(g_prefix, sizeof(g_prefix), "ptc%d-", (int)getpid());
  rc = unit_run(client_suite());
  /* Every shm object this run made (a failed test skips its own). */
  unit_shm_sweep("%s", g_prefix);
  char cmd[200];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", g_dir);
  return rc;
}
