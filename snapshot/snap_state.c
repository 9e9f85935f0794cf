/*
 * snap_state.c — the names of the slot states (enum snap_state in
 * snap_store.h), as status, logs and errors print them. The states'
 * meaning and transitions are in snap_store.h; snap_slot.c makes them.
 */
#include "snapshot/snap_store.h"

const char *snap_state_name(uint32_t state)
{
  switch (state) {
  case SNAP_FREE:
    return "FREE";
  case SNAP_WRITING:
    return "WRITING";
  case SNAP_SEALED:
    return "SEALED";
  case SNAP_PINNED:
    return "PINNED";
  case SNAP_PROTECTED:
    return "PROTECTED";
  case SNAP_COMMITTED:
    return "COMMITTED";
  default:
    return "UNKNOWN";
  }
}
