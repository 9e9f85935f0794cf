/*
 * snap_layout.c — the byte layout of a snapshot object (the table at the top
 * of snap_store.h): computing it from the slot count and region sizes,
 * writing a fresh header and region table, and validating an existing one.
 *
 * Both directions go through snap_layout_compute(), so an object is accepted
 * only when every offset and count its header and region table store equals
 * what this build would have written for the same slots and regions. That is
 * what lets snap_store_open() trust the cached offsets afterwards: nothing a
 * damaged or foreign object says is used before it has been recomputed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/crc.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_internal.h"

_Static_assert(sizeof(SNAP_MAGIC) - 1 == 8, "the magic is 8 bytes");
_Static_assert(HDR_CRC + 4 <= SNAP_HEADER_BYTES, "the header fits its area");
_Static_assert(SNAP_NAME_MAX == 256 && SNAP_JOB_MAX == 64,
               "name fields are 256 and 64 bytes in the layout");
_Static_assert(REG_NAME + SNAP_NAME_MAX <= REG_BYTES,
               "a region name fits its field");
_Static_assert((uint64_t)SNAP_MAX_REGIONS * REG_ENTRY_BYTES < ((uint64_t)1 << 32),
               "the region table stays far from any size limit");
_Static_assert(SNAP_BLOB_MAX % SNAP_REGION_ALIGN == 0, "the blob area is aligned");
_Static_assert(KERN_BLOCK_SIZE <= UINT32_MAX, "the block size is a u32 field");

static uint64_t align_up(uint64_t v, uint64_t a)
{
  return (v + a - 1) / a * a;
}

uint64_t snap_layout_parity_chunk(uint64_t slot_bytes, uint32_t k)
{
  if (k == 0)
    return 0;
  uint64_t chunk = align_up((slot_bytes + k - 1) / k, SNAP_PARITY_CHUNK_ALIGN);
  return chunk < SNAP_PARITY_CHUNK_ALIGN ? SNAP_PARITY_CHUNK_ALIGN : chunk;
}

static int name_cmp(const void *a, const void *b)
{
  const struct snap_region *x = *(const struct snap_region *const *)a;
  const struct snap_region *y = *(const struct snap_region *const *)b;
  return strcmp(x->name, y->name);
}

/* -EINVAL with a sentence when two regions share a name: sorted, so that
 * tens of thousands of regions cost n log n comparisons. */
static int names_unique(const struct snap_region *regions, uint32_t n,
                        char *errbuf, size_t errlen)
{
  const struct snap_region **v = malloc((size_t)n * sizeof(*v));
  int rc = PT_OK;

  if (v == NULL)
    return snap_err(errbuf, errlen, -ENOMEM, "out of memory");
  for (uint32_t i = 0; i < n; i++)
    v[i] = &regions[i];
  qsort(v, n, sizeof(*v), name_cmp);
  for (uint32_t i = 1; i < n; i++) {
    if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
      rc = snap_err(errbuf, errlen, -EINVAL, "region '%s' is declared twice",
                    v[i]->name);
      break;
    }
  }
  free(v);
  return rc;
}

int snap_layout_compute(struct snap_layout *lay, uint32_t nslots,
                        uint32_t nregions, struct snap_region *regs,
                        uint32_t ec_k, uint32_t ec_m, char *errbuf,
                        size_t errlen)
{
  if (nslots < 2 || nslots > SNAP_MAX_SLOTS)
    return snap_err(errbuf, errlen, -EINVAL,
                    "%" PRIu32 " slots: between 2 and %d are allowed", nslots,
                    SNAP_MAX_SLOTS);
  if (nregions < 1 || nregions > SNAP_MAX_REGIONS)
    return snap_err(errbuf, errlen, -EINVAL,
                    "%" PRIu32 " regions: between 1 and %d are allowed",
                    nregions, SNAP_MAX_REGIONS);
  if ((ec_k == 0) != (ec_m == 0) ||
      (uint64_t)ec_k + ec_m > SNAP_EC_MAX_MEMBERS)
    return snap_err(errbuf, errlen, -EINVAL,
                    "code %" PRIu32 "+%" PRIu32 ": k and m are both 0 (no "
                    "code) or both at least 1, with k+m at most %d",
                    ec_k, ec_m, SNAP_EC_MAX_MEMBERS);

  uint64_t cur = 0, nblocks = 0;
  for (uint32_t i = 0; i < nregions; i++) {
    uint64_t bytes = regs[i].bytes;
    if (bytes == 0 || bytes > SNAP_MAX_TOTAL_BYTES)
      return snap_err(errbuf, errlen, -EINVAL,
                      "region %" PRIu32 " has %" PRIu64 " bytes", i, bytes);
    uint64_t nb = kern_nblocks(bytes);
    regs[i].offset = cur;
    regs[i].first_block = (uint32_t)nblocks;
    regs[i].nblocks = (uint32_t)(nb <= UINT32_MAX ? nb : 0);
    cur = align_up(cur + bytes, SNAP_REGION_ALIGN);
    nblocks += nb;
    if (cur > SNAP_MAX_TOTAL_BYTES || nblocks > SNAP_MAX_NBLOCKS)
      return snap_err(errbuf, errlen, -EINVAL,
                      "regions add up to more than %" PRIu64 " bytes",
                      SNAP_MAX_TOTAL_BYTES);
  }

  lay->nslots = nslots;
  lay->nregions = nregions;
  lay->nblocks = (uint32_t)nblocks;
  lay->region_off = SNAP_HEADER_BYTES;
  lay->slot_off = lay->region_off + (uint64_t)nregions * REG_ENTRY_BYTES;
  lay->crc_off = align_up(lay->slot_off + (uint64_t)nslots * SLOT_ENTRY_BYTES,
                          SNAP_CRC_TABLE_ALIGN);
  lay->crc_stride =
      align_up((nblocks + SNAP_TABLE_TRAILER) * 4, SNAP_CRC_TABLE_ALIGN);
  lay->data_off = align_up(lay->crc_off + nslots * lay->crc_stride, SNAP_ALIGN);
  /* The regions are packed, each 64-byte aligned; the blob area follows. */
  lay->blob_off = cur;
  lay->blob_max = SNAP_BLOB_MAX;
  cur += lay->blob_max;
  lay->slot_bytes = cur;
  lay->stride = align_up(cur, SNAP_ALIGN);
  /* The parity areas follow the slot data, one per slot (snap_store.h). */
  lay->ec_k = ec_k;
  lay->ec_m = ec_m;
  lay->parity_off = lay->data_off + nslots * lay->stride;
  uint64_t chunk = snap_layout_parity_chunk(lay->slot_bytes, ec_k);
  if (ec_m > 0 && chunk > SNAP_MAX_TOTAL_BYTES / ec_m)
    return snap_err(errbuf, errlen, -EINVAL,
                    "code %" PRIu32 "+%" PRIu32 ": the parity of %" PRIu64
                    " bytes a slot passes %" PRIu64 " bytes", ec_k, ec_m,
                    lay->slot_bytes, SNAP_MAX_TOTAL_BYTES);
  lay->parity_bytes = (uint64_t)ec_m * chunk;
  lay->parity_stride = align_up(lay->parity_bytes, SNAP_ALIGN);
  lay->total = lay->parity_off + nslots * lay->parity_stride;
  if (lay->total > SNAP_MAX_TOTAL_BYTES)
    return snap_err(errbuf, errlen, -EINVAL,
                    "the object would need %" PRIu64 " bytes, more than %" PRIu64,
                    lay->total, SNAP_MAX_TOTAL_BYTES);
  return PT_OK;
}

int snap_layout_params(const struct snap_params *p, struct snap_layout *lay,
                       struct snap_region *regions, char *errbuf,
                       size_t errlen)
{
  if (p == NULL)
    return snap_err(errbuf, errlen, -EINVAL, "no parameters");
  if (p->job == NULL || p->job[0] == '\0' ||
      strnlen(p->job, SNAP_JOB_MAX) >= SNAP_JOB_MAX)
    return snap_err(errbuf, errlen, -EINVAL,
                    "job name must have 1 to %d bytes", SNAP_JOB_MAX - 1);
  if (p->world < 1 || p->rank >= p->world)
    return snap_err(errbuf, errlen, -EINVAL,
                    "rank %" PRIu32 " is not below world size %" PRIu32,
                    p->rank, p->world);
  if (p->nregions < 1 || p->nregions > SNAP_MAX_REGIONS || p->regions == NULL)
    return snap_err(errbuf, errlen, -EINVAL,
                    "%" PRIu32 " regions: between 1 and %d are allowed",
                    p->nregions, SNAP_MAX_REGIONS);

  for (uint32_t i = 0; i < p->nregions; i++) {
    const struct snap_region_desc *d = &p->regions[i];
    size_t nl = strnlen(d->name, SNAP_NAME_MAX);
    if (nl == 0 || nl >= SNAP_NAME_MAX)
      return snap_err(errbuf, errlen, -EINVAL,
                      "region %" PRIu32 ": name must have 1 to %d bytes", i,
                      SNAP_NAME_MAX - 1);
    if (d->kind > 1)
      return snap_err(errbuf, errlen, -EINVAL,
                      "region '%s': unknown kind %" PRIu32, d->name, d->kind);
    memset(&regions[i], 0, sizeof(regions[i]));
    memcpy(regions[i].name, d->name, nl);
    regions[i].bytes = d->bytes;
    regions[i].kind = d->kind;
  }
  int rc = names_unique(regions, p->nregions, errbuf, errlen);
  if (rc < 0)
    return rc;
  return snap_layout_compute(lay, p->nslots, p->nregions, regions, p->ec_k,
                             p->ec_m, errbuf, errlen);
}

void snap_layout_write(uint8_t *base, const struct snap_layout *lay,
                       const struct snap_params *p,
                       const struct snap_region *regions)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);

  for (uint32_t i = 0; i < lay->nregions; i++) {
    uint8_t *e = base + lay->region_off + (uint64_t)i * REG_ENTRY_BYTES;
    memcpy(e + REG_NAME, regions[i].name, SNAP_NAME_MAX);
    snap_put64(e + REG_BYTES, regions[i].bytes);
    snap_put64(e + REG_OFFSET, regions[i].offset);
    snap_put32(e + REG_KIND, regions[i].kind);
    snap_put32(e + REG_FIRST_BLOCK, regions[i].first_block);
    snap_put32(e + REG_NBLOCKS, regions[i].nblocks);
    snap_put32(e + REG_CRC, crc32c(e, REG_CRC_COVERS));
  }
  /* The slot table of a fresh object: every slot FREE with generation 0,
   * its record CRC over that state and the zero fields. */
  for (uint32_t i = 0; i < lay->nslots; i++) {
    uint8_t *e = base + lay->slot_off + (uint64_t)i * SLOT_ENTRY_BYTES;
    uint8_t rec[SLOT_CRC_COVERS];
    memset(rec, 0, sizeof(rec)); /* the state, FREE, and bytes 8..63 */
    snap_put32(e + SLOT_STATE, SNAP_FREE);
    snap_put32(e + SLOT_RECORD_CRC, crc32c(rec, sizeof(rec)));
  }

  uint8_t *h = base;
  memcpy(h + HDR_MAGIC, SNAP_MAGIC, 8);
  snap_put32(h + HDR_VERSION, SNAP_VERSION);
  snap_put32(h + HDR_HEADER_BYTES, SNAP_HEADER_BYTES);
  snap_put64(h + HDR_TOTAL, lay->total);
  memset(h + HDR_JOB, 0, SNAP_JOB_MAX);
  memcpy(h + HDR_JOB, p->job, strlen(p->job));
  snap_put32(h + HDR_RANK, p->rank);
  snap_put32(h + HDR_WORLD, p->world);
  if (p->instance != NULL)
    memcpy(h + HDR_INSTANCE, p->instance, SNAP_INSTANCE_BYTES);
  else
    memset(h + HDR_INSTANCE, 0, SNAP_INSTANCE_BYTES);
  snap_put32(h + HDR_NSLOTS, lay->nslots);
  snap_put32(h + HDR_NREGIONS, lay->nregions);
  snap_put32(h + HDR_BLOCK_SIZE, (uint32_t)KERN_BLOCK_SIZE);
  snap_put32(h + HDR_NBLOCKS, lay->nblocks);
  snap_put64(h + HDR_SLOT_BYTES, lay->slot_bytes);
  snap_put64(h + HDR_STRIDE, lay->stride);
  snap_put64(h + HDR_REGION_OFF, lay->region_off);
  snap_put64(h + HDR_SLOT_OFF, lay->slot_off);
  snap_put64(h + HDR_CRC_OFF, lay->crc_off);
  snap_put64(h + HDR_DATA_OFF, lay->data_off);
  snap_put64(h + HDR_PARITY_OFF, lay->parity_off);
  snap_put64(h + HDR_PARITY_BYTES, lay->parity_bytes);
  snap_put32(h + HDR_EC_K, lay->ec_k);
  snap_put32(h + HDR_EC_M, lay->ec_m);
  snap_put64(h + HDR_PARITY_STRIDE, lay->parity_stride);
  snap_put64(h + HDR_CTIME,
             (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
  snap_put64(h + HDR_BLOB_MAX, lay->blob_max);
  snap_put64(h + HDR_BLOB_OFF, lay->blob_off);
  /* Last: an object whose creation was interrupted has no valid header. */
  atomic_thread_fence(memory_order_release);
  snap_put32(h + HDR_CRC, crc32c(h, HDR_CRC_COVERS));
}

int snap_layout_check_header(const uint8_t *hdr, uint64_t file_bytes,
                             const char *name, char *errbuf, size_t errlen)
{
  if (file_bytes < SNAP_HEADER_BYTES)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': truncated: %" PRIu64 " bytes, header needs %u",
                    name, file_bytes, SNAP_HEADER_BYTES);
  if (memcmp(hdr + HDR_MAGIC, SNAP_MAGIC, 8) != 0)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': not a snapshot object (bad magic)", name);
  uint32_t version = snap_get32(hdr + HDR_VERSION);
  if (version != SNAP_VERSION)
    return snap_err(errbuf, errlen, PT_EVERSION,
                    "'%s': snapshot format version %" PRIu32
                    ", this build reads only version %u (an object made by "
                    "another pt release is not converted; remove it, or "
                    "use the release that made it)",
                    name, version, SNAP_VERSION);
  uint32_t stored = snap_get32(hdr + HDR_CRC);
  uint32_t crc = crc32c(hdr, HDR_CRC_COVERS);
  if (stored != crc)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': header checksum mismatch (stored %08" PRIx32
                    ", computed %08" PRIx32 ")",
                    name, stored, crc);
  uint32_t hbytes = snap_get32(hdr + HDR_HEADER_BYTES);
  if (hbytes != SNAP_HEADER_BYTES)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': header size %" PRIu32 ", expected %u", name, hbytes,
                    SNAP_HEADER_BYTES);
  uint64_t total = snap_get64(hdr + HDR_TOTAL);
  if (file_bytes < total)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': truncated: %" PRIu64 " bytes, header says %" PRIu64,
                    name, file_bytes, total);
  if (file_bytes != total)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': %" PRIu64 " bytes, header says %" PRIu64, name,
                    file_bytes, total);
  const uint8_t *job = hdr + HDR_JOB;
  if (job[0] == '\0' || memchr(job, '\0', SNAP_JOB_MAX) == NULL)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': job name is empty or not terminated", name);
  uint32_t rank = snap_get32(hdr + HDR_RANK);
  uint32_t world = snap_get32(hdr + HDR_WORLD);
  if (world < 1 || rank >= world)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': rank %" PRIu32 " is not below world size %" PRIu32,
                    name, rank, world);
  uint32_t nslots = snap_get32(hdr + HDR_NSLOTS);
  if (nslots < 2 || nslots > SNAP_MAX_SLOTS)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': %" PRIu32 " slots, between 2 and %d expected", name,
                    nslots, SNAP_MAX_SLOTS);
  uint32_t nregions = snap_get32(hdr + HDR_NREGIONS);
  if (nregions < 1 || nregions > SNAP_MAX_REGIONS)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': %" PRIu32 " regions, between 1 and %d expected",
                    name, nregions, SNAP_MAX_REGIONS);
  uint32_t bsize = snap_get32(hdr + HDR_BLOCK_SIZE);
  if (bsize != KERN_BLOCK_SIZE)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': checksum block size %" PRIu32 ", this build uses %zu",
                    name, bsize, KERN_BLOCK_SIZE);
  uint64_t region_off = snap_get64(hdr + HDR_REGION_OFF);
  if (region_off != SNAP_HEADER_BYTES ||
      region_off + (uint64_t)nregions * REG_ENTRY_BYTES > total)
    return snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': region table at %" PRIu64 " is out of range", name,
                    region_off);
  return PT_OK;
}

/* One header field that must equal the layout the region table and the
 * code (k+m, from the header) imply. */
static int field_check(const uint8_t *hdr, unsigned off, const char *what,
                       uint64_t expect, const char *name, char *errbuf,
                       size_t errlen)
{
  uint64_t v = snap_get64(hdr + off);
  if (v == expect)
    return PT_OK;
  return snap_err(errbuf, errlen, PT_EFORMAT,
                  "'%s': header says %s is %" PRIu64
                  ", the region table and the code %" PRIu32 "+%" PRIu32
                  " imply %" PRIu64,
                  name, what, v, snap_get32(hdr + HDR_EC_K),
                  snap_get32(hdr + HDR_EC_M), expect);
}

/* Decodes every region entry from a private copy, checking its CRC, name,
 * kind and size. OUT: regs (name, bytes, kind) and stored (the offset and
 * blocks the entry claims, to compare with the computed layout). */
static int parse_regions(struct snap_region *regs, struct snap_region *stored,
                         const uint8_t *base, uint32_t nregions,
                         const char *name, char *errbuf, size_t errlen)
{
  for (uint32_t i = 0; i < nregions; i++) {
    uint8_t e[REG_ENTRY_BYTES];
    memcpy(e, base + SNAP_HEADER_BYTES + (uint64_t)i * REG_ENTRY_BYTES,
           sizeof(e));
    uint32_t crc_stored = snap_get32(e + REG_CRC);
    uint32_t crc = crc32c(e, REG_CRC_COVERS);
    if (crc_stored != crc)
      return snap_err(errbuf, errlen, PT_EFORMAT,
                      "'%s': region %" PRIu32 " entry checksum mismatch "
                      "(stored %08" PRIx32 ", computed %08" PRIx32 ")",
                      name, i, crc_stored, crc);
    if (e[REG_NAME] == '\0' ||
        memchr(e + REG_NAME, '\0', SNAP_NAME_MAX) == NULL)
      return snap_err(errbuf, errlen, PT_EFORMAT,
                      "'%s': region %" PRIu32 " name is empty or not terminated",
                      name, i);
    memcpy(regs[i].name, e + REG_NAME, SNAP_NAME_MAX);
    regs[i].bytes = snap_get64(e + REG_BYTES);
    regs[i].kind = snap_get32(e + REG_KIND);
    stored[i].offset = snap_get64(e + REG_OFFSET);
    stored[i].first_block = snap_get32(e + REG_FIRST_BLOCK);
    stored[i].nblocks = snap_get32(e + REG_NBLOCKS);
    if (regs[i].kind > 1)
      return snap_err(errbuf, errlen, PT_EFORMAT,
                      "'%s': region '%s' has unknown kind %" PRIu32, name,
                      regs[i].name, regs[i].kind);
    if (regs[i].bytes == 0 || regs[i].bytes > SNAP_MAX_TOTAL_BYTES)
      return snap_err(errbuf, errlen, PT_EFORMAT,
                      "'%s': region '%s' has %" PRIu64 " bytes", name,
                      regs[i].name, regs[i].bytes);
  }
  return PT_OK;
}

static int compare_regions(const struct snap_region *regs,
                           const struct snap_region *stored, uint32_t nregions,
                           const char *name, char *errbuf, size_t errlen)
{
  for (uint32_t i = 0; i < nregions; i++) {
    if (stored[i].offset != regs[i].offset ||
        stored[i].first_block != regs[i].first_block ||
        stored[i].nblocks != regs[i].nblocks)
      return snap_err(errbuf, errlen, PT_EFORMAT,
                      "'%s': region '%s' lies at offset %" PRIu64
                      " blocks %" PRIu32 "+%" PRIu32 ", expected offset %" PRIu64
                      " blocks %" PRIu32 "+%" PRIu32,
                      name, regs[i].name, stored[i].offset,
                      stored[i].first_block, stored[i].nblocks, regs[i].offset,
                      regs[i].first_block, regs[i].nblocks);
  }
  return PT_OK;
}

int snap_layout_parse(struct snap_store *s, const uint8_t *hdr, uint8_t *base,
                      uint64_t total, const char *name, char *errbuf,
                      size_t errlen)
{
  const uint8_t *h = hdr;
  uint32_t nslots = snap_get32(h + HDR_NSLOTS);
  uint32_t nregions = snap_get32(h + HDR_NREGIONS);
  struct snap_layout lay;
  int rc;

  struct snap_region *regs = calloc(nregions, sizeof(*regs));
  struct snap_region *stored = calloc(nregions, sizeof(*stored));
  if (regs == NULL || stored == NULL) {
    rc = snap_err(errbuf, errlen, -ENOMEM, "'%s': out of memory", name);
    goto out_free_regions;
  }
  rc = parse_regions(regs, stored, base, nregions, name, errbuf, errlen);
  if (rc < 0)
    goto out_free_regions;
  char why[512];
  rc = snap_layout_compute(&lay, nslots, nregions, regs,
                           snap_get32(h + HDR_EC_K), snap_get32(h + HDR_EC_M),
                           why, sizeof(why));
  if (rc < 0) {
    rc = snap_err(errbuf, errlen, PT_EFORMAT, "'%s': %s", name, why);
    goto out_free_regions;
  }
  rc = compare_regions(regs, stored, nregions, name, errbuf, errlen);
  if (rc < 0)
    goto out_free_regions;

  uint32_t nblocks = snap_get32(h + HDR_NBLOCKS);
  if (nblocks != lay.nblocks) {
    rc = snap_err(errbuf, errlen, PT_EFORMAT,
                  "'%s': header says %" PRIu32
                  " checksum blocks, the region table implies %" PRIu32,
                  name, nblocks, lay.nblocks);
    goto out_free_regions;
  }
  const struct {
    unsigned off;
    const char *what;
    uint64_t expect;
  } fields[] = {
      /* The parity first: a header whose code was changed says so. */
      {HDR_PARITY_BYTES, "the parity bytes per slot", lay.parity_bytes},
      {HDR_PARITY_STRIDE, "the parity stride", lay.parity_stride},
      {HDR_TOTAL, "the object size", lay.total},
      {HDR_SLOT_BYTES, "the slot data size", lay.slot_bytes},
      {HDR_STRIDE, "the slot stride", lay.stride},
      {HDR_SLOT_OFF, "the slot table offset", lay.slot_off},
      {HDR_CRC_OFF, "the checksum table offset", lay.crc_off},
      {HDR_DATA_OFF, "the slot data offset", lay.data_off},
      {HDR_PARITY_OFF, "the parity offset", lay.parity_off},
      {HDR_BLOB_MAX, "the blob area size", lay.blob_max},
      {HDR_BLOB_OFF, "the blob area offset", lay.blob_off},
  };
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    rc = field_check(h, fields[i].off, fields[i].what, fields[i].expect, name,
                     errbuf, errlen);
    if (rc < 0)
      goto out_free_regions;
  }
  if (lay.total != total) {
    rc = snap_err(errbuf, errlen, PT_EFORMAT,
                  "'%s': %" PRIu64 " bytes, the layout needs %" PRIu64, name,
                  total, lay.total);
    goto out_free_regions;
  }

  s->base = base;
  s->lay = lay;
  snprintf(s->name, sizeof(s->name), "%s", name);
  /* A slot whose record fails its checksum does not condemn the object: it
   * holds nothing (snap_slot_bad_records() names it). A record that
   * checks out must name a known state. */
  for (uint32_t i = 0; i < nslots; i++) {
    uint64_t w = atomic_load_explicit(snap_slot_word_ptr(s, i),
                                      memory_order_acquire);
    uint32_t st = (uint32_t)w;
    if ((st & SNAP_STATE_BUSY) == 0 &&
        (uint32_t)(w >> 32) == snap_slot_record_crc(s, i, st) &&
        st > SNAP_STATE_MAX) {
      rc = snap_err(errbuf, errlen, PT_EFORMAT,
                    "'%s': slot %" PRIu32 " has unknown state %" PRIu32, name,
                    i, st);
      goto out_free_regions;
    }
  }
  memcpy(s->job, h + HDR_JOB, SNAP_JOB_MAX);
  memcpy(s->instance, h + HDR_INSTANCE, SNAP_INSTANCE_BYTES);
  s->rank = snap_get32(h + HDR_RANK);
  s->world = snap_get32(h + HDR_WORLD);
  s->regions = regs;
  free(stored);
  return PT_OK;

out_free_regions:
  free(stored);
  free(regs);
  s->base = NULL;
  return rc;
}
