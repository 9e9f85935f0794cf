/*
 * test_snap_populate.c — the background page-table fill of a fresh mapping
 * (snapshot/snap_populate.h): a second mapping of an object whose pages all
 * exist starts with no page-table entries (as a restarted trainer's), and is
 * fully mapped once populating is done; the hint and stop are safe at any
 * moment; an object truncated under the mapping ends populating with EFAULT
 * instead of a SIGBUS.
 *
 * Page-table entries are read from /proc/self/pagemap (bit 63: present),
 * which every process may read for itself.
 *
 * Objects are named /pt-tpop.<runner pid>.<tag>; main() removes leftovers.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "snapshot/snap_populate.h"
#include "tests/unit/unit.h"

#define MIB ((uint64_t)1 << 20)
#define PAGE 4096u

static pid_t runner_pid;

/* A shm object of bytes, every page allocated and written through a mapping
 * that is unmapped again. OUT: the open fd. */
static int object_make(const char *tag, uint64_t bytes)
{
  char name[128];
  snprintf(name, sizeof(name), "/pt-tpop.%d.%s", (int)runner_pid, tag);
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  ck_assert_int_ge(fd, 0);
  shm_unlink(name); /* the fd keeps it */
  ck_assert_int_eq(posix_fallocate(fd, 0, (off_t)bytes), 0);
  uint8_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  for (uint64_t off = 0; off < bytes; off += PAGE)
    m[off] = (uint8_t)(off / PAGE);
  munmap(m, bytes);
  return fd;
}

/* How many pages of [p, p + bytes) have a page-table entry. */
static uint64_t pages_present(const void *p, uint64_t bytes)
{
  int fd = open("/proc/self/pagemap", O_RDONLY);
  ck_assert_int_ge(fd, 0);
  uint64_t n = bytes / PAGE, present = 0;
  uint64_t buf[512];
  uint64_t first = (uint64_t)(uintptr_t)p / PAGE;
  for (uint64_t i = 0; i < n; i += 512) {
    uint64_t k = n - i < 512 ? n - i : 512;
    ssize_t got = pread(fd, buf, k * 8, (off_t)((first + i) * 8));
    ck_assert_int_eq(got, (ssize_t)(k * 8));
    for (uint64_t j = 0; j < k; j++)
      present += buf[j] >> 63;
  }
  close(fd);
  return present;
}

static void wait_done(struct snap_populate *p)
{
  for (int i = 0; i < 1000 && !snap_populate_is_done(p); i++) {
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  ck_assert(snap_populate_is_done(p));
}

START_TEST(test_fresh_mapping_is_filled)
{
  uint64_t bytes = 64 * MIB + 3 * PAGE; /* a partial last chunk */
  int fd = object_make("fill", bytes);
  uint8_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  /* A new mapping has no entries: what a restarted trainer starts with. */
  ck_assert_uint_eq(pages_present(m, bytes), 0);

  struct snap_populate *p = NULL;
  ck_assert_int_eq(snap_populate_start(&p, m, bytes), 0);
  snap_populate_hint(p, m + 32 * MIB, 8 * MIB);
  wait_done(p);
  ck_assert_int_eq(snap_populate_error(p), 0);
  snap_populate_stop(p);
  ck_assert_uint_eq(pages_present(m, bytes), bytes / PAGE);
  /* Populating never changes a byte. */
  for (uint64_t off = 0; off < bytes; off += PAGE)
    ck_assert_uint_eq(m[off], (uint8_t)(off / PAGE));
  munmap(m, bytes);
  close(fd);
}
END_TEST

START_TEST(test_hint_bounds_and_stop)
{
  uint64_t bytes = 128 * MIB;
  int fd = object_make("stop", bytes);
  uint8_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);

  struct snap_populate *p = NULL;
  ck_assert_int_eq(snap_populate_start(&p, NULL, bytes), -EINVAL);
  ck_assert_ptr_null(p);
  ck_assert_int_eq(snap_populate_start(&p, m, bytes), 0);
  /* Ranges outside the mapping, empty ones and a NULL handle are ignored;
   * one running past the end is cut at the end. */
  snap_populate_hint(p, m - PAGE, PAGE);
  snap_populate_hint(p, m + bytes, PAGE);
  snap_populate_hint(p, m, 0);
  snap_populate_hint(NULL, m, bytes);
  snap_populate_hint(p, m + bytes - PAGE, 64 * MIB);
  /* Stopping at once ends within a chunk and unmapping after it is safe. */
  snap_populate_stop(p);
  snap_populate_stop(NULL);
  ck_assert(snap_populate_is_done(NULL));
  munmap(m, bytes);
  close(fd);
}
END_TEST

START_TEST(test_truncated_object_is_efault)
{
  uint64_t bytes = 16 * MIB;
  int fd = object_make("trunc", bytes);
  uint8_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  /* Someone shrinks the object under the mapping: touching the tail would
   * raise SIGBUS; populating must end with an error instead. */
  ck_assert_int_eq(ftruncate(fd, (off_t)(4 * MIB)), 0);

  struct snap_populate *p = NULL;
  ck_assert_int_eq(snap_populate_start(&p, m, bytes), 0);
  wait_done(p);
  ck_assert_int_eq(snap_populate_error(p), -EFAULT);
  snap_populate_stop(p);
  munmap(m, bytes);
  close(fd);
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_populate");
  TCase *tc = tcase_create("populate");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_fresh_mapping_is_filled);
  tcase_add_test(tc, test_hint_bounds_and_stop);
  tcase_add_test(tc, test_truncated_object_is_efault);
  suite_add_tcase(su, tc);

  int rc = unit_run(su);
  unit_shm_sweep("pt-tpop.%d.", (int)runner_pid);
  return rc;
}
