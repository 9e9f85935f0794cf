/*
 * smp_peer_rebuild_layout.c — the group's layout as a rebuild
 * (smp_peer_rebuild.c) sees it: every member's slot size, and which
 * survivors a bad block of the rebuilt slot came from.
 */
#include <stdbool.h>
#include <stdint.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "daemon/smp/smp_peer_rebuild_int.h"

/* The layout's sizes: every member's slot bytes (this one's from the
 * object). False while one is not known. */
bool smp_peer_rebuild_layout_sizes(const struct smp_peer_rebuild *r, size_t *out)
{
  const struct smp_peer *p = r->p;
  const struct code_group *g = &p->smp->group;
  for (uint32_t i = 0; i < g->n; i++) {
    if (i == g->member)
      out[i] = (size_t)own_bytes(p);
    else if (p->link[i].has_bytes)
      out[i] = (size_t)p->link[i].bytes;
    else
      return false;
  }
  return true;
}

/* The members that were sources of the stripes holding bad block `bad`
 * of the rebuilt slot (erased: the members erased then); 0 when that
 * cannot be told (the table itself damaged). */
uint32_t smp_peer_rebuild_layout_bad_sources(const struct smp_peer_rebuild *r,
                                             uint32_t bad, uint32_t erased)
{
  const struct smp *smp = r->p->smp;
  const struct code_group *g = &smp->group;
  const struct snap_store *s = smp->store;
  uint32_t nb = snap_store_nblocks(s);
  uint64_t off = 0, len = 0;

  if (bad == SNAP_BAD_BLOB(nb)) {
    off = (uint64_t)((const uint8_t *)snap_slot_blob(s, r->slot) -
                     (const uint8_t *)snap_slot_data(s, r->slot));
    len = snap_store_blob_max(s);
  }
  for (uint32_t i = 0; i < snap_store_nregions(s) && len == 0 && bad < nb; i++) {
    const struct snap_region *rg = snap_store_region(s, i);
    if (bad >= rg->first_block && bad < rg->first_block + rg->nblocks) {
      off = rg->offset + (uint64_t)(bad - rg->first_block) * KERN_BLOCK_SIZE;
      len = rg->bytes - (off - rg->offset) < KERN_BLOCK_SIZE
                ? rg->bytes - (off - rg->offset) : KERN_BLOCK_SIZE;
    }
  }
  size_t sz[RS_MAX_MEMBERS];
  struct rs_layout lay;
  struct rs_plan plan;
  if (len == 0 || !smp_peer_rebuild_layout_sizes(r, sz) ||
      rs_layout_init(&lay, g->k, g->m, sz, g->n) != 0 ||
      rs_layout_plan(&lay, (1u << g->member) | erased, &plan) != 0 ||
      lay.chunk_bytes == 0)
    return 0;
  uint32_t mask = 0;
  for (uint64_t c = off / lay.chunk_bytes;
       c <= (off + len - 1) / lay.chunk_bytes && c < lay.k; c++) {
    const struct rs_stripe_plan *sp =
        &plan.stripe[rs_layout_chunk_stripe(&lay, g->member, (unsigned)c)];
    for (unsigned x = 0; x < sp->nsrc; x++)
      mask |= 1u << sp->src[x].member;
  }
  return mask;
}
