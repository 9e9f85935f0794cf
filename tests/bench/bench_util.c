/*
 * bench_util.c — what ptbench's parts share: clocks and statistics, size
 * parsing, child processes with deadlines, and the cleanup list.
 *
 * The cleanup list is fixed-size static storage so that the signal handler
 * can walk it: it kills the registered process groups, unlinks shm objects
 * (by name and by this run's unique prefix) and removes directories with
 * raw system calls only (no malloc, no stdio), then re-raises the signal.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

extern char **environ;

/* ---- clocks and statistics ---- */

double bench_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t bench_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void bench_sleep_ms(int ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, size_t n)
{
  if (n == 0)
    return NAN;
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_percentile(double *v, size_t n, double p)
{
  if (n == 0)
    return NAN;
  qsort(v, n, sizeof(*v), cmp_double);
  size_t rank = (size_t)ceil(p * (double)n);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return v[rank - 1];
}

const char *bench_fmt_bytes(char *buf, size_t len, uint64_t bytes)
{
  static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  int u = 0;
  uint64_t v = bytes;
  while (u < 4 && v >= 1024 && v % 1024 == 0) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, "%llu %s", (unsigned long long)v, unit[u]);
  return buf;
}

void bench_cpu_model(char *buf, size_t len)
{
  snprintf(buf, len, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r"); /* the CPU model, for the report */
  if (f == NULL)
    return;
  char line[512];
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "model name", 10) != 0)
      continue;
    char *p = strchr(line, ':');
    if (p == NULL)
      continue;
    p++;
    while (*p == ' ' || *p == '\t')
      p++;
    p[strcspn(p, "\n")] = '\0';
    snprintf(buf, len, "%s", p);
    break;
  }
  fclose(f);
}

void bench_fill(void *buf, size_t bytes, uint64_t seed)
{
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  uint64_t *w = buf;
  size_t n = bytes / 8;
  for (size_t i = 0; i < n; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w[i] = x * 0x2545F4914F6CDD1Dull;
  }
  unsigned char *t = (unsigned char *)buf + n * 8;
  for (size_t i = 0; i < bytes % 8; i++)
    t[i] = (unsigned char)(x >> (8 * i));
}

/* ---- the cleanup list ---- */

#define MAX_ITEMS 16
#define ITEM_LEN 256

static pid_t cl_pids[MAX_ITEMS];
static char cl_shm[MAX_ITEMS][ITEM_LEN];
static volatile sig_atomic_t cl_nshm;
static char cl_prefix[MAX_ITEMS][ITEM_LEN];
static volatile sig_atomic_t cl_nprefix;
static char cl_dirs[MAX_ITEMS][ITEM_LEN];
static volatile sig_atomic_t cl_ndirs;
static volatile sig_atomic_t cl_running;

static int add_item(char (*list)[ITEM_LEN], volatile sig_atomic_t *n,
                    const char *s)
{
  if (*n >= MAX_ITEMS || strlen(s) >= ITEM_LEN)
    return -ENOSPC;
  for (int i = 0; i < *n; i++)
    if (strcmp(list[i], s) == 0)
      return 0;
  memcpy(list[*n], s, strlen(s) + 1);
  *n = *n + 1; /* published after the string is complete */
  return 0;
}

int bench_cleanup_shm(const char *shm_name)
{
  return add_item(cl_shm, &cl_nshm, shm_name);
}

int bench_cleanup_shm_prefix(const char *prefix)
{
  if (prefix[0] == '\0' || strchr(prefix, '/') != NULL)
    return -EINVAL; /* an empty prefix would match everyone's objects */
  return add_item(cl_prefix, &cl_nprefix, prefix);
}

int bench_cleanup_dir(const char *path)
{
  return add_item(cl_dirs, &cl_ndirs, path);
}

static int pid_add(pid_t pid)
{
  for (int i = 0; i < MAX_ITEMS; i++)
    if (cl_pids[i] == 0) {
      cl_pids[i] = pid;
      return 0;
    }
  return -ENOSPC;
}

static void pid_forget(pid_t pid)
{
  for (int i = 0; i < MAX_ITEMS; i++)
    if (cl_pids[i] == pid)
      cl_pids[i] = 0;
}

struct dirent64_raw {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/* Calls fn(dirfd, name, arg) for every entry of the open directory dfd
 * except "." and ".."; async-signal-safe. */
static void dir_each(int dfd, void (*fn)(int, const char *, unsigned char, void *),
                     void *arg)
{
  char buf[4096] __attribute__((aligned(8)));
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
    if (n <= 0)
      return;
    for (long off = 0; off < n;) {
      struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);
      off += d->d_reclen;
      if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
        continue;
      fn(dfd, d->d_name, d->d_type, arg);
    }
  }
}

static void unlink_prefixed(int dfd, const char *name, unsigned char type,
                            void *arg)
{
  const char *prefix = arg;
  (void)type;
  if (strncmp(name, prefix, strlen(prefix)) == 0)
    unlinkat(dfd, name, 0);
}

static void rm_entry(int dfd, const char *name, unsigned char type, void *arg)
{
  int depth = (int)(intptr_t)arg;
  if (type == DT_DIR && depth < 8) {
    int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub >= 0) {
      dir_each(sub, rm_entry, (void *)(intptr_t)(depth + 1));
      close(sub);
    }
    unlinkat(dfd, name, AT_REMOVEDIR);
    return;
  }
  if (unlinkat(dfd, name, 0) != 0 && errno == EISDIR)
    unlinkat(dfd, name, AT_REMOVEDIR);
}

static void rm_tree(const char *path)
{
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd >= 0) {
    dir_each(dfd, rm_entry, (void *)(intptr_t)0);
    close(dfd);
  }
  rmdir(path);
}

static bool reap_until(pid_t pid, int timeout_ms)
{
  for (int waited = 0;; waited += 10) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD))
      return true;
    if (waited >= timeout_ms)
      return false;
    struct timespec ts = { 0, 10 * 1000000L };
    nanosleep(&ts, NULL);
  }
}

void bench_cleanup_run(void)
{
  if (cl_running)
    return;
  cl_running = 1;
  for (int i = 0; i < MAX_ITEMS; i++)
    if (cl_pids[i] > 0)
      kill(-cl_pids[i], SIGTERM);
  for (int i = 0; i < MAX_ITEMS; i++) {
    pid_t pid = cl_pids[i];
    if (pid <= 0)
      continue;
    if (!reap_until(pid, 3000)) {
      kill(-pid, SIGKILL);
      reap_until(pid, 3000);
    }
    kill(-pid, SIGKILL); /* whatever of its group outlived it */
    cl_pids[i] = 0;
  }
  for (int i = 0; i < cl_nshm; i++)
    shm_unlink(cl_shm[i]);
  if (cl_nprefix > 0) {
    int dfd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      for (int i = 0; i < cl_nprefix; i++) {
        lseek(dfd, 0, SEEK_SET);
        dir_each(dfd, unlink_prefixed, cl_prefix[i]);
      }
      close(dfd);
    }
  }
  for (int i = 0; i < cl_ndirs; i++)
    rm_tree(cl_dirs[i]);
  cl_running = 0;
}

static void on_signal(int sig)
{
  bench_cleanup_run();
  signal(sig, SIG_DFL);
  raise(sig);
}

void bench_cleanup_init(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* ---- child processes ---- */

int bench_child_spawn(pid_t *pid, char *const argv[], const char *log_path,
                      char *errbuf, size_t errlen)
{
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t fa;
  sigset_t none, defaults;
  int rc;

  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_init(&fa);
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE); /* ignored here; children get the default */
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGHUP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (log_path != NULL) {
    posix_spawn_file_actions_addopen(&fa, 1, log_path,
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  rc = posix_spawn(pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    snprintf(errbuf, errlen, "cannot start '%s': %s", argv[0], strerror(rc));
    return -rc;
  }
  if (pid_add(*pid) != 0) {
    kill(-*pid, SIGKILL);
    reap_until(*pid, 3000);
    snprintf(errbuf, errlen, "too many child processes");
    return -ENOSPC;
  }
  return 0;
}

int bench_child_fork(pid_t *pid, void (*fn)(void *arg), void *arg, char *errbuf,
                     size_t errlen)
{
  pid_t p = fork();
  if (p < 0) {
    snprintf(errbuf, errlen, "fork: %s", strerror(errno));
    return -errno;
  }
  if (p == 0) {
    /* The parent's handlers would run its cleanup here: the defaults. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    setpgid(0, 0);
    fn(arg);
    _exit(0);
  }
  (void)setpgid(p, p); /* either side may run first */
  *pid = p;
  if (pid_add(p) != 0) {
    kill(-p, SIGKILL);
    reap_until(p, 3000);
    snprintf(errbuf, errlen, "too many child processes");
    return -ENOSPC;
  }
  return 0;
}

double bench_proc_cpu_s(pid_t pid)
{
  char path[64], buf[2048];
  snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return NAN;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *q = strrchr(buf, ')'); /* the name may hold spaces */
  if (q == NULL)
    return NAN;
  unsigned long long ut = 0, st = 0;
  /* After ')': state(3) ... utime is field 14, stime 15. */
  if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return NAN;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

bool bench_child_is_alive(pid_t pid, int *status)
{
  int st;
  pid_t r = waitpid(pid, &st, WNOHANG);
  if (r == 0)
    return true;
  if (r == pid) {
    if (status != NULL)
      *status = st;
    pid_forget(pid);
    kill(-pid, SIGKILL); /* its group's leftovers, if any */
  }
  return false;
}

int bench_child_wait(pid_t pid, int timeout_ms, int *status)
{
  uint64_t deadline = bench_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      *status = st;
      pid_forget(pid);
      return 0;
    }
    if (r < 0)
      return -errno;
    if (bench_now_ms() >= deadline)
      return -ETIMEDOUT;
    bench_sleep_ms(10);
  }
}

int bench_child_stop(pid_t pid, int grace_ms)
{
  int st = 0;
  bool reaped = false;
  if (kill(-pid, SIGTERM) != 0 && errno == ESRCH)
    kill(pid, SIGTERM);
  uint64_t deadline = bench_now_ms() + (uint64_t)grace_ms;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      reaped = true;
      break;
    }
    if (r < 0)
      break;
    if (bench_now_ms() >= deadline) {
      kill(-pid, SIGKILL);
      if (bench_child_wait(pid, 5000, &st) == 0)
        reaped = true;
      break;
    }
    bench_sleep_ms(10);
  }
  kill(-pid, SIGKILL); /* whatever of its group outlived it */
  pid_forget(pid);
  return reaped ? st : -ECHILD;
}

const char *bench_wait_text(char *buf, size_t len, int status)
{
  if (WIFEXITED(status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "wait status 0x%x", status);
  return buf;
}

void bench_log_tail(const char *path, int lines)
{
  FILE *f = fopen(path, "r"); /* a child's log, shown when it failed */
  if (f == NULL)
    return;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = size > 16384 ? size - 16384 : 0;
  fseek(f, from, SEEK_SET);
  char *buf = malloc(16385);
  if (buf == NULL) {
    fclose(f);
    return;
  }
  size_t n = fread(buf, 1, 16384, f);
  fclose(f);
  buf[n] = '\0';
  char *start = buf + n;
  int seen = 0;
  while (start > buf) {
    if (start[-1] == '\n' && start != buf + n && ++seen > lines)
      break;
    start--;
  }
  fprintf(stderr, "  --- last lines of %s ---\n", path);
  for (char *line = strtok(start, "\n"); line != NULL; line = strtok(NULL, "\n"))
    fprintf(stderr, "  | %s\n", line);
  free(buf);
}

void *bench_shm_buffer(const char *prefix, const char *tag, size_t bytes,
                       int *rc, char *errbuf, size_t errlen)
{
  char name[256];

  snprintf(name, sizeof(name), "/%s%s", prefix, tag);
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    *rc = -errno;
    snprintf(errbuf, errlen, "cannot create '%s': %s", name, strerror(-*rc));
    return NULL;
  }
  bench_cleanup_shm(name);
  *rc = -posix_fallocate(fd, 0, (off_t)bytes);
  void *p = MAP_FAILED;
  if (*rc == 0)
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  shm_unlink(name);
  if (p == MAP_FAILED) {
    *rc = *rc != 0 ? *rc : -errno;
    snprintf(errbuf, errlen, "cannot map '%s': %s", name, strerror(-*rc));
    return NULL;
  }
  memset(p, 0, bytes); /* pre-faulted */
  return p;
}
