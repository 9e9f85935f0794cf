/*
 * test_smp_meta.c — the checksum tables an SMP keeps for its group's other
 * members outlive it (daemon/smp/smp_peer_meta.c): what one SMP saved, the
 * next SMP of the same object and job instance reads back, table by table
 * and step by step; another instance's are not read; a damaged entry ends
 * the reading there (the ones before it stay); an object of another mode
 * is never read. A step this member rebuilt (its data, not its parity
 * rows) is kept too, so that the next SMP refuses to serve that parity.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"
#include "tests/unit/unit.h"

struct fixture {
  struct smp smp;
  struct smp_peer p;
};

static void fx_init(struct fixture *f, const char *name, uint8_t inst)
{
  memset(f, 0, sizeof(*f));
  snprintf(f->smp.shm_name, sizeof(f->smp.shm_name), "%s", name);
  memset(f->smp.instance, inst, sizeof(f->smp.instance));
  f->smp.group.k = 2;
  f->smp.group.m = 1;
  f->smp.group.n = 3;
  f->smp.group.member = 1;
  f->p.smp = &f->smp;
  for (uint32_t i = 0; i < 3; i++) {
    f->p.link[i].p = &f->p;
    f->p.link[i].member = i;
  }
}

static void fx_free(struct fixture *f)
{
  for (uint32_t i = 0; i < 3; i++)
    smp_peer_serve_forget(&f->p.link[i]);
}

static void add(struct link *l, uint64_t step, size_t len, uint8_t seed)
{
  uint8_t *t = malloc(len);
  ck_assert_ptr_nonnull(t);
  for (size_t i = 0; i < len; i++)
    t[i] = (uint8_t)(seed + i * 7);
  l->meta[l->nmeta].step = step;
  l->meta[l->nmeta].table = t;
  l->meta[l->nmeta].len = len;
  l->nmeta++;
}

static void name_of(char *out, size_t len)
{
  snprintf(out, len, "/pt-test-meta.%d", (int)getpid());
}

START_TEST(kept_across_smps)
{
  char name[64], meta[80];
  name_of(name, sizeof(name));
  snprintf(meta, sizeof(meta), "%s.meta", name);
  shm_unlink(meta);

  struct fixture a, b, c;
  fx_init(&a, name, 0x11);
  add(&a.p.link[0], 40, 64, 1);
  add(&a.p.link[0], 41, 64, 2);
  add(&a.p.link[2], 40, 128, 3);
  smp_peer_meta_save(&a.p);

  /* the next SMP of the same instance reads every table back */
  fx_init(&b, name, 0x11);
  smp_peer_meta_load(&b.p);
  ck_assert(b.p.meta_loaded);
  ck_assert_uint_eq(b.p.link[0].nmeta, 2);
  ck_assert_uint_eq(b.p.link[1].nmeta, 0);
  ck_assert_uint_eq(b.p.link[2].nmeta, 1);
  for (uint32_t i = 0; i < 3; i++)
    for (unsigned j = 0; j < a.p.link[i].nmeta; j++) {
      ck_assert_uint_eq(b.p.link[i].meta[j].step, a.p.link[i].meta[j].step);
      ck_assert_uint_eq(b.p.link[i].meta[j].len, a.p.link[i].meta[j].len);
      ck_assert(memcmp(b.p.link[i].meta[j].table, a.p.link[i].meta[j].table,
                       a.p.link[i].meta[j].len) == 0);
    }
  /* once only */
  smp_peer_serve_forget(&b.p.link[0]);
  smp_peer_meta_load(&b.p);
  ck_assert_uint_eq(b.p.link[0].nmeta, 0);
  fx_free(&b);

  /* another job instance's are not read */
  fx_init(&c, name, 0x22);
  smp_peer_meta_load(&c.p);
  ck_assert_uint_eq(c.p.link[0].nmeta + c.p.link[2].nmeta, 0);
  fx_free(&c);

  /* a damaged byte in the second entry: the first stays, the rest goes */
  int fd = shm_open(meta, O_RDWR, 0);
  ck_assert_int_ge(fd, 0);
  off_t at = 32 + 20 + 64 + 20 + 5; /* inside the second table */
  uint8_t x;
  ck_assert_int_eq(pread(fd, &x, 1, at), 1);
  x ^= 0x40;
  ck_assert_int_eq(pwrite(fd, &x, 1, at), 1);
  fx_init(&c, name, 0x11);
  smp_peer_meta_load(&c.p);
  ck_assert_uint_eq(c.p.link[0].nmeta, 1);
  ck_assert_uint_eq(c.p.link[0].meta[0].step, 40);
  ck_assert_uint_eq(c.p.link[2].nmeta, 0);
  fx_free(&c);

  /* an object others may read is never read */
  ck_assert_int_eq(fchmod(fd, 0644), 0);
  close(fd);
  fx_init(&c, name, 0x11);
  smp_peer_meta_load(&c.p);
  ck_assert_uint_eq(c.p.link[0].nmeta + c.p.link[2].nmeta, 0);
  fx_free(&c);

  fx_free(&a);
  ck_assert_int_eq(shm_unlink(meta), 0);
}
END_TEST

START_TEST(rebuilt_step_kept)
{
  char name[64], meta[80];
  name_of(name, sizeof(name));
  snprintf(meta, sizeof(meta), "%s.meta", name);
  shm_unlink(meta);

  struct fixture a, b;
  fx_init(&a, name, 0x33);
  add(&a.p.link[0], 40, 64, 1);
  a.p.no_parity = true;
  a.p.no_parity_step = 40;
  ck_assert(smp_peer_rebuild_no_parity(&a.p, 40));
  smp_peer_meta_save(&a.p);

  fx_init(&b, name, 0x33);
  ck_assert(!smp_peer_rebuild_no_parity(&b.p, 40));
  smp_peer_meta_load(&b.p);
  ck_assert_uint_eq(b.p.link[0].nmeta, 1); /* the table, as before */
  ck_assert(smp_peer_rebuild_no_parity(&b.p, 40));
  ck_assert(!smp_peer_rebuild_no_parity(&b.p, 41));
  fx_free(&b);

  /* nothing rebuilt: nothing said */
  fx_free(&a);
  fx_init(&a, name, 0x33);
  add(&a.p.link[2], 41, 64, 2);
  smp_peer_meta_save(&a.p);
  fx_init(&b, name, 0x33);
  smp_peer_meta_load(&b.p);
  ck_assert_uint_eq(b.p.link[2].nmeta, 1);
  ck_assert(!b.p.no_parity);
  fx_free(&b);
  fx_free(&a);
  ck_assert_int_eq(shm_unlink(meta), 0);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("smp_meta");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, kept_across_smps);
  tcase_add_test(tc, rebuilt_step_kept);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
