#!/usr/bin/env bash
# libpt's ABI as a binding sees it: libpt.so exports the pt_* functions of
# pt.h and nothing else, carries the soname libpt.so.0, the build tree has
# libpt.so.0 so that a program linked against it runs from there, and
# pt_version() agrees with the header.
set -u
. "$(dirname "$0")/../lib.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
lib=$BUILD/lib/libpt.so
[ -f "$lib" ] || fail "$lib was not built"
command -v nm >/dev/null || skip "nm not found"
command -v "${CC:-cc}" >/dev/null || skip "no C compiler"

nm -D --defined-only "$lib" | awk '{print $NF}' >"$T_DIR/exports" \
  || fail "nm -D failed on $lib"
others=$(grep -v '^pt_[a-z]' "$T_DIR/exports" | grep -v '^$')
[ -z "$others" ] || fail "libpt.so exports symbols outside pt_*: $(echo $others | head -c 400)"
# every function pt.h declares is exported
for f in $(grep -oE '\bpt_[a-z_]+\(' "$ROOT/client/pt.h" | tr -d '(' | sort -u); do
  grep -qx "$f" "$T_DIR/exports" || fail "pt.h declares $f, libpt.so does not export it"
done
say "libpt.so exports $(wc -l <"$T_DIR/exports") symbols, all pt_*"

soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libpt.so.0 ] || fail "soname of libpt.so is '$soname', not libpt.so.0"
[ -e "$BUILD/lib/libpt.so.0" ] || fail "$BUILD/lib/libpt.so.0 does not exist"

cat >"$T_DIR/ver.c" <<'C'
#include <pt.h>
#include <stdio.h>

int main(void)
{
  uint32_t v = pt_version();
  printf("%u.%u\n", (unsigned)(v >> 16), (unsigned)(v & 0xffff));
  return v == PT_VERSION ? 0 : 1;
}
C
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -I"$ROOT/client" -o "$T_DIR/ver" "$T_DIR/ver.c" \
  -L"$BUILD/lib" -lpt -Wl,-rpath,"$BUILD/lib" >"$T_DIR/cc.log" 2>&1 \
  || { cat "$T_DIR/cc.log"; fail "cannot link a program against $lib"; }
out=$("$T_DIR/ver" 2>&1) || fail "a program linked against the build tree does not run: $out"
say "a program linked against the build tree runs: libpt $out"
exit 0
