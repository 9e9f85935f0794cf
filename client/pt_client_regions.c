/*
 * pt_client_regions.c — libpt: the region table the trainer registers
 * (pt_region_register(), pt_region_update()), its indexes by name and by
 * address, its freezing, and the mapping of the SMP's object made for it.
 * See pt_client_internal.h for the invariants.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt_client_internal.h"

/* ---- the region table and the object ---- */

int client_table_freeze(pt_client *c)
{
  if (c->frozen)
    return 0;
  if (c->nregions == 0) {
    client_log(c, PT_LOG_ERROR, "pt: no region registered");
    return PT_ESTATE;
  }
  c->descs = calloc(c->nregions, sizeof(*c->descs));
  c->xfers = calloc(c->nregions, sizeof(*c->xfers));
  if (c->descs == NULL || c->xfers == NULL) {
    free(c->descs);
    free(c->xfers);
    c->descs = NULL;
    c->xfers = NULL;
    return -ENOMEM;
  }
  for (size_t i = 0; i < c->nregions; i++) {
    memcpy(c->descs[i].name, c->regions[i].name, SNAP_NAME_MAX);
    c->descs[i].bytes = c->regions[i].bytes;
    c->descs[i].kind = (uint32_t)c->regions[i].kind;
  }
  c->frozen = true;
  return 0;
}

void client_store_release(pt_client *c)
{
  if (c->store == NULL)
    return;
  /* No copy may run into a mapping that goes away. */
  kern_save_wait(c->engine, -1);
  if (c->reg_base != NULL)
    kern_host_unregister(c->engine, c->reg_base);
  c->reg_base = NULL;
  snap_populate_stop(c->populate);
  c->populate = NULL;
  snap_store_close(c->store);
  c->store = NULL;
}

/* Maps the object the SMP named, unless the mapping we hold is that very
 * object (same name, size and creation time). */
int client_store_attach(pt_client *c, const char *name, uint64_t bytes)
{
  struct snap_store *s;
  char err[256] = "";
  int rc;

  rc = snap_store_open(&s, name, err, sizeof(err));
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot open snapshot object '%s': %s",
               name, err[0] ? err : pt_strerror(rc));
    return rc;
  }
  if (bytes != 0 && snap_store_total_bytes(s) != bytes) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot object '%s' holds %llu bytes, the SMP said %llu",
               name, (unsigned long long)snap_store_total_bytes(s),
               (unsigned long long)bytes);
    rc = PT_EFORMAT;
    goto out_close;
  }
  if (!snap_store_regions_match(s, c->descs, (uint32_t)c->nregions)) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot object '%s' was made for another region table",
               name);
    rc = PT_EREGIONS;
    goto out_close;
  }
  if (c->store != NULL && strcmp(c->shm_name, name) == 0 &&
      snap_store_total_bytes(c->store) == snap_store_total_bytes(s) &&
      c->store_ctime == snap_store_ctime_ns(s)) {
    snap_store_close(s); /* the same object: keep the registered mapping */
    return 0;
  }
  client_store_release(c);
  rc = kern_host_register(c->engine, snap_store_base(s),
                          snap_store_total_bytes(s));
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot register '%s' for copying: %s",
               name, pt_strerror(rc));
    goto out_close;
  }
  c->store = s;
  c->reg_base = snap_store_base(s);
  c->store_ctime = snap_store_ctime_ns(s);
  snprintf(c->shm_name, sizeof(c->shm_name), "%s", name);
  /* A fresh mapping has empty page tables: one fault per page on the first
   * copy into each slot. Fill them in the background instead; without it
   * the copies still work, only slower. */
  rc = snap_populate_start(&c->populate, snap_store_base(s),
                           snap_store_total_bytes(s));
  if (rc != 0)
    client_log(c, PT_LOG_DEBUG, "pt: no background populating of '%s': %s",
               name, pt_strerror(rc));
  return 0;

out_close:
  snap_store_close(s);
  return rc;
}

/* ---- the name index ---- */

static uint64_t name_hash(const char *s)
{
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

  for (; *s != '\0'; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* The region called name; SIZE_MAX when none. */
static size_t name_find(const pt_client *c, const char *name)
{
  if (c->names_cap == 0)
    return SIZE_MAX;
  size_t mask = c->names_cap - 1;
  for (size_t k = name_hash(name) & mask;; k = (k + 1) & mask) {
    uint32_t e = c->names[k];
    if (e == 0)
      return SIZE_MAX;
    if (strcmp(c->regions[e - 1].name, name) == 0)
      return e - 1;
  }
}

/* Adds region i (its name unique) to an index with room for it. */
static void names_put(pt_client *c, size_t i)
{
  size_t mask = c->names_cap - 1;
  size_t k = name_hash(c->regions[i].name) & mask;

  while (c->names[k] != 0)
    k = (k + 1) & mask;
  c->names[k] = (uint32_t)(i + 1);
}

/* Room in the index for n regions (at most half full). */
static int names_reserve(pt_client *c, size_t n)
{
  if (n * 2 <= c->names_cap)
    return 0;
  size_t cap = c->names_cap ? c->names_cap : 64;
  while (cap < n * 2)
    cap *= 2;
  uint32_t *t = calloc(cap, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  free(c->names);
  c->names = t;
  c->names_cap = cap;
  for (size_t i = 0; i < c->nregions; i++)
    names_put(c, i);
  return 0;
}

/* ---- the address index ---- */

static void by_addr_insert(pt_client *c, size_t pos, size_t i)
{
  memmove(&c->by_addr[pos + 1], &c->by_addr[pos],
          (c->nregions - pos) * sizeof(*c->by_addr));
  c->by_addr[pos] = i;
}

static void by_addr_remove(pt_client *c, size_t pos)
{
  memmove(&c->by_addr[pos], &c->by_addr[pos + 1],
          (c->nregions - pos - 1) * sizeof(*c->by_addr));
}

/* Index in by_addr where a region starting at p would go. */
static size_t addr_lower_bound(const pt_client *c, uintptr_t p)
{
  size_t lo = 0, hi = c->nregions;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if ((uintptr_t)c->regions[c->by_addr[mid]].ptr < p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static bool overlaps(const struct region *r, uintptr_t p, size_t bytes)
{
  uintptr_t a = (uintptr_t)r->ptr;

  return p < a + r->bytes && a < p + bytes;
}

/* The region [p, p+bytes) would overlap, given pos = addr_lower_bound(p)
 * (regions do not overlap each other, so only the neighbours can); NULL
 * when none. */
static const struct region *overlap_at(const pt_client *c, size_t pos,
                                       uintptr_t p, size_t bytes)
{
  if (pos < c->nregions && overlaps(&c->regions[c->by_addr[pos]], p, bytes))
    return &c->regions[c->by_addr[pos]];
  if (pos > 0 && overlaps(&c->regions[c->by_addr[pos - 1]], p, bytes))
    return &c->regions[c->by_addr[pos - 1]];
  return NULL;
}

/* What pt_region_register and pt_region_update check first: 0, -EINVAL
 * (no client, no name or pointer) or PT_ESTATE (a forked child). */
static int region_args(pt_client *c, const char *name, const void *ptr)
{
  if (c == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  if (name == NULL || ptr == NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region name and pointer are required");
    return -EINVAL;
  }
  return 0;
}

int pt_region_register(pt_client *c, const char *name, void *ptr, size_t bytes,
                       enum pt_mem kind)
{
  size_t len, pos;
  uintptr_t p = (uintptr_t)ptr;

  int rc = region_args(c, name, ptr);
  if (rc != 0)
    return rc;
  if (c->frozen) {
    client_log(c, PT_LOG_ERROR,
               "pt: cannot register '%s': the region table is frozen by the "
               "first snapshot or restore", name);
    return PT_ESTATE;
  }
  len = strlen(name);
  if (len == 0 || len >= SNAP_NAME_MAX) {
    client_log(c, PT_LOG_ERROR,
               "pt: region name '%s' must have 1 to %d bytes", name,
               SNAP_NAME_MAX - 1);
    return len == 0 ? -EINVAL : -ENAMETOOLONG;
  }
  if (bytes == 0 || p + bytes < p) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' has an invalid size %zu",
               name, bytes);
    return -EINVAL;
  }
  if (kind != PT_MEM_HOST && kind != PT_MEM_DEVICE) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' has an unknown kind %d", name,
               (int)kind);
    return -EINVAL;
  }
  if (kind == PT_MEM_DEVICE && !kern_backend_has_device()) {
    client_log(c, PT_LOG_ERROR,
               "pt: region '%s' is device memory, and libpt's '%s' backend "
               "copies host memory only", name, kern_backend_name());
    return PT_ENODEVICE;
  }
  if (c->nregions >= SNAP_MAX_REGIONS) {
    client_log(c, PT_LOG_ERROR, "pt: cannot register '%s': at most %d regions",
               name, SNAP_MAX_REGIONS);
    return -E2BIG;
  }
  if (name_find(c, name) != SIZE_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' is already registered", name);
    return -EEXIST;
  }
  pos = addr_lower_bound(c, p);
  const struct region *o = overlap_at(c, pos, p, bytes);
  if (o != NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' overlaps region '%s'", name,
               o->name);
    return PT_EOVERLAP;
  }
  if (names_reserve(c, c->nregions + 1) != 0)
    return -ENOMEM;

  if (c->nregions == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 8;
    struct region *r = realloc(c->regions, cap * sizeof(*r));
    if (r == NULL)
      return -ENOMEM;
    c->regions = r;
    size_t *b = realloc(c->by_addr, cap * sizeof(*b));
    if (b == NULL)
      return -ENOMEM;
    c->by_addr = b;
    c->cap = cap;
  }
  struct region *r = &c->regions[c->nregions];
  memset(r, 0, sizeof(*r));
  memcpy(r->name, name, len + 1);
  r->ptr = ptr;
  r->bytes = bytes;
  r->kind = kind;
  by_addr_insert(c, pos, c->nregions);
  names_put(c, c->nregions);
  c->nregions++;
  c->total_bytes += bytes;
  return 0;
}

int pt_region_update(pt_client *c, const char *name, void *ptr)
{
  uintptr_t p = (uintptr_t)ptr;
  size_t i, at, pos;
  bool copying;

  int rc = region_args(c, name, ptr);
  if (rc != 0)
    return rc;
  i = name_find(c, name);
  if (i == SIZE_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: cannot update '%s': no such region",
               name);
    return -ENOENT;
  }
  struct region *r = &c->regions[i];
  if (p + r->bytes < p) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' cannot move to %p: its %zu "
               "bytes would wrap around", name, ptr, r->bytes);
    return -EINVAL;
  }
  pthread_mutex_lock(&c->mu);
  copying = c->phase == PHASE_COPYING;
  pthread_mutex_unlock(&c->mu);
  if (copying) {
    client_log(c, PT_LOG_ERROR,
               "pt: cannot update '%s': the copy of step %llu is in flight "
               "(call pt_fence first)", name, (unsigned long long)c->p_step);
    return PT_EINFLIGHT;
  }
  if (r->ptr == ptr)
    return 0;
  /* Out of the address index, checked against the others, back in. */
  at = addr_lower_bound(c, (uintptr_t)r->ptr);
  while (c->by_addr[at] != i)
    at++;
  by_addr_remove(c, at);
  c->nregions--; /* the index now holds the others only */
  pos = addr_lower_bound(c, p);
  const struct region *o = overlap_at(c, pos, p, r->bytes);
  if (o != NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' cannot move to %p: it would "
               "overlap region '%s'", name, ptr, o->name);
    by_addr_insert(c, at, i);
    c->nregions++;
    return PT_EOVERLAP;
  }
  r->ptr = ptr;
  by_addr_insert(c, pos, i);
  c->nregions++;
  return 0;
}
