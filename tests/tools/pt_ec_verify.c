/*
 * pt-ec-verify — a test tool: checks that the parity a coding group's SMPs
 * folded for a step is the code's parity of their data.
 *
 *   pt-ec-verify K M STEP OBJECT...     (K + M shm object names, in member
 *                                        order)
 *
 * Opens each member's snapshot object (read as the SMPs left it: run it
 * once the job's trainers are stopped), takes in each the slot that holds
 * STEP committed or protected, computes every member's parity rows from
 * every member's data with ec/ (rs_group_encode) and compares them with
 * the parity areas. Exit 0 when all equal; 1 naming the first member and
 * byte that differ; 2 on a usage error or an object that cannot be used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "ec/rs.h"
#include "snapshot/snap_store.h"

int main(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: pt-ec-verify K M STEP OBJECT...\n");
    return 2;
  }
  unsigned k = (unsigned)strtoul(argv[1], NULL, 10);
  unsigned m = (unsigned)strtoul(argv[2], NULL, 10);
  uint64_t step = strtoull(argv[3], NULL, 10);
  unsigned g = k + m;
  if (k == 0 || m == 0 || g > RS_MAX_MEMBERS || (unsigned)(argc - 4) != g) {
    fprintf(stderr, "pt-ec-verify: %u+%u needs %u objects, %d given\n", k, m,
            g, argc - 4);
    return 2;
  }
  struct snap_store *s[RS_MAX_MEMBERS];
  struct rs_member mb[RS_MAX_MEMBERS];
  uint8_t *want[RS_MAX_MEMBERS];
  const uint8_t *have[RS_MAX_MEMBERS];
  size_t sizes[RS_MAX_MEMBERS];
  char err[512];

  for (unsigned i = 0; i < g; i++) {
    int rc = snap_store_open(&s[i], argv[4 + i], err, sizeof(err));
    if (rc != 0) {
      fprintf(stderr, "pt-ec-verify: %s: %s\n", argv[4 + i], err);
      return 2;
    }
    uint32_t slot = UINT32_MAX;
    for (uint32_t j = 0; j < snap_store_nslots(s[i]); j++) {
      struct snap_slot_info si;
      snap_slot_get(s[i], j, &si);
      if (si.record_ok && si.step == step &&
          (si.state == SNAP_COMMITTED || si.state == SNAP_PROTECTED))
        slot = j;
    }
    if (slot == UINT32_MAX) {
      fprintf(stderr, "pt-ec-verify: %s holds no step %" PRIu64
              " committed or protected\n", argv[4 + i], step);
      return 2;
    }
    uint64_t plen = 0;
    have[i] = snap_store_parity(s[i], slot, &plen);
    sizes[i] = (size_t)snap_store_slot_bytes(s[i]);
    mb[i] = (struct rs_member){.data = snap_slot_data(s[i], slot),
                               .bytes = sizes[i]};
    if (have[i] == NULL) {
      fprintf(stderr, "pt-ec-verify: %s has no parity area\n", argv[4 + i]);
      return 2;
    }
  }
  struct rs_layout l;
  struct rs_coder *c;
  if (rs_layout_init(&l, k, m, sizes, g) != 0 ||
      rs_coder_new(&c, k, m, NULL) != 0) {
    fprintf(stderr, "pt-ec-verify: %s\n", rs_last_error());
    return 2;
  }
  for (unsigned i = 0; i < g; i++) {
    want[i] = calloc(1, l.parity_bytes);
    if (want[i] == NULL)
      return 2;
    mb[i].parity = want[i];
  }
  if (rs_group_encode(c, &l, mb) != 0) {
    fprintf(stderr, "pt-ec-verify: encode: %s\n", rs_last_error());
    return 2;
  }
  int rc = 0;
  for (unsigned i = 0; i < g && rc == 0; i++)
    for (size_t b = 0; b < l.parity_bytes; b++)
      if (want[i][b] != have[i][b]) {
        printf("member %u: parity byte %zu of %zu is %02x, the code's is "
               "%02x\n", i, b, l.parity_bytes, have[i][b], want[i][b]);
        rc = 1;
        break;
      }
  if (rc == 0)
    printf("step %" PRIu64 ": the parity of all %u members is the %u+%u code's "
           "(%zu bytes each)\n", step, g, k, m, l.parity_bytes);
  for (unsigned i = 0; i < g; i++) {
    free(want[i]);
    snap_store_close(s[i]);
  }
  rs_coder_free(c);
  return rc;
}
