/*
 * unit.c — see unit.h. Linked into every unit test binary.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "tests/unit/unit.h"

int unit_run(Suite *s)
{
  SRunner *sr = srunner_create(s);
  int failed;

  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void unit_shm_sweep(const char *fmt, ...)
{
  char prefix[256];
  DIR *d;
  struct dirent *de;
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(prefix, sizeof(prefix), fmt, ap);
  va_end(ap);
  d = opendir("/dev/shm");
  if (d == NULL)
    return;
  while ((de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
      char nm[300];
      snprintf(nm, sizeof(nm), "/%s", de->d_name);
      shm_unlink(nm);
    }
  }
  closedir(d);
}

bool unit_closed_by_peer(int fd, int timeout_ms)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int64_t end = now + timeout_ms;
  char buf[256];

  while (now < end) {
    struct pollfd pfd = { fd, POLLIN, 0 };
    if (poll(&pfd, 1, 50) > 0) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n == 0 || (n < 0 && errno == ECONNRESET))
        return true;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  }
  return false;
}

void unit_own_session(void)
{
  pid_t parent = getpid();
  int st;

  if (getsid(0) == parent || setsid() >= 0)
    return;
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(EXIT_FAILURE);
  }
  if (pid == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent ||
        setsid() < 0) {
      perror("setsid");
      _exit(EXIT_FAILURE);
    }
    return;
  }
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) {
      perror("waitpid");
      exit(EXIT_FAILURE);
    }
  if (WIFSIGNALED(st))
    fprintf(stderr, "test process %d: killed by signal %d\n", (int)pid,
            WTERMSIG(st));
  exit(WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_FAILURE);
}
