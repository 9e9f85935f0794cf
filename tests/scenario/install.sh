#!/usr/bin/env bash
# make install into a staging directory, then build a trainer the way a user
# would (pt.h and pkg-config only) and run it under the installed ptd: the
# public header is self-contained, pt.pc links, and the example in README.md
# works end to end.
set -u
. "$(dirname "$0")/../lib.sh"

stage=$T_DIR/stage
make --no-print-directory -s BUILD="$BUILD" install DESTDIR="$stage" PREFIX=/usr/local >"$T_DIR/install.log" 2>&1 \
  || { cat "$T_DIR/install.log"; fail "make install failed"; }
pre=$stage/usr/local
for f in bin/ptd bin/ptctl bin/pt-train bin/ptbench include/pt.h lib/libpt.so lib/libpt.a \
         lib/pkgconfig/pt.pc lib/systemd/system/ptd.service share/pt/ptd.default \
         lib/systemd/system/ptd-controller.service share/pt/ptd-controller.default; do
  [ -e "$pre/$f" ] || fail "make install did not install $f"
done
grep -q "ExecStart=/usr/local/bin/ptd node" "$pre/lib/systemd/system/ptd.service" \
  || fail "ptd.service does not point at the installed ptd"
grep -q "ExecStart=/usr/local/bin/ptd controller" "$pre/lib/systemd/system/ptd-controller.service" \
  || fail "ptd-controller.service does not point at the installed ptd"

cat >"$T_DIR/example.c" <<'C'
#include <pt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
  static float params[100000], m[100000], v[100000];
  unsigned long long rng = 42, cursor = 0;
  pt_client *pt;
  int rc = pt_client_open(&pt, NULL);
  if (rc != PT_OK) { fprintf(stderr, "open: %s\n", pt_strerror(rc)); return 1; }
  pt_region_register(pt, "params", params, sizeof(params), PT_MEM_HOST);
  pt_region_register(pt, "adam_m", m, sizeof(m), PT_MEM_HOST);
  pt_region_register(pt, "adam_v", v, sizeof(v), PT_MEM_HOST);
  pt_region_register(pt, "rng", &rng, sizeof(rng), PT_MEM_HOST);
  pt_region_register(pt, "cursor", &cursor, sizeof(cursor), PT_MEM_HOST);
  uint64_t step = 0;
  rc = pt_restore(pt, &step);
  if (rc != PT_OK && rc != PT_ENOSNAP) {
    fprintf(stderr, "%s\n", pt_strerror(rc));
    return rc == PT_EREGIONS || rc == PT_EFOREIGN || rc == PT_EWORLD ? 78 : 1;
  }
  for (step = step + 1; step <= 20; step++) {
    pt_fence(pt);
    for (size_t i = 0; i < 100000; i++) params[i] += 0.5f;
    rng = rng * 6364136223846793005ULL + 1; cursor += 32;
    rc = pt_snapshot(pt, step);
    if (rc < 0) fprintf(stderr, "snapshot %llu: %s\n", (unsigned long long)step, pt_strerror(rc));
  }
  struct pt_status st;
  pt_status_get(pt, &st);
  printf("example: %llu snapshots, backend %s\n", (unsigned long long)st.snapshots_started, st.backend);
  pt_client_close(pt, true);
  return st.snapshots_started > 0 ? 0 : 1;
}
C
export PKG_CONFIG_PATH=$pre/lib/pkgconfig
cc -std=c11 -Wall -Wextra -Werror -o "$T_DIR/example" "$T_DIR/example.c" \
  $(pkg-config --define-variable=prefix="$pre" --cflags pt) \
  $(pkg-config --define-variable=prefix="$pre" --libs pt) -Wl,-rpath,"$pre/lib" \
  || fail "the example does not build against the installed pt.h and pt.pc"
"$pre/bin/ptd" node --ranks 2 --job "$T_JOB" --state-dir "$T_DIR/sd" --shm-prefix "$T_PREFIX" \
  -- "$T_DIR/example" >"$T_DIR/node.log" 2>&1 || fail "the example under the installed ptd failed"
# A snapshot may be skipped while the previous step's commit runs (the
# example fences and snapshots back to back); most must be taken.
n=$(sed -n 's/^example: \([0-9][0-9]*\) snapshots, .*/\1/p' "$T_DIR/node.log" | awk '$1 >= 10 && $1 <= 20' | wc -l)
[ "$n" = 2 ] || fail "expected both ranks to take 10 to 20 of the 20 snapshots: $(grep 'example:' "$T_DIR/node.log")"
grep -q 'commit step [0-9]' "$T_DIR/node.log" || fail "no step was committed"
say "ok"
