#!/usr/bin/env bash
# Layers point one way: common/ uses nothing of the project but the public
# error codes (pt.h); rpc/, snapshot/, ec/ and kernels/ use common/ and each
# other's headers as DESIGN.md orders them, never daemon/ or client/ (but
# pt.h); rpc/ logs nothing (it reports through return codes and callbacks);
# daemon/commit/ knows nothing of the node that runs it. Reads the #include
# lines of the sources, so a new upward include fails here. Then the names
# of daemon/'s functions (from the build's objects) against their files.
set -u
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."

bad=0
check() { # check DIR REGEX WHY
  local hits
  hits=$(grep -rnE "^#[[:space:]]*include[[:space:]]+\"($2)" "$1" 2>/dev/null)
  if [ -n "$hits" ]; then
    printf '%s\n' "$hits" | sed "s|^|  |"
    say "FAIL: $1 $3"
    bad=1
  fi
}
for d in common rpc snapshot ec kernels; do
  check "$d" 'daemon/' "includes daemon/"
  check "$d" 'client/|pt_client' "includes client/ (only pt.h is allowed)"
done
check common 'rpc/|snapshot/|ec/|kernels/' "includes a layer above it"
check rpc 'common/log\.h' "logs (rpc/ reports through return codes and callbacks)"
check snapshot 'rpc/|ec/' "includes rpc/ or ec/"
check kernels 'rpc/|snapshot/|ec/' "includes a layer above it"
[ -d daemon/commit ] && check daemon/commit 'daemon/node/|daemon/smp/' "knows who runs it"
[ "$bad" = 0 ] || fail "an include points the wrong way"
say "ok: every include points down"

# Inside daemon/ a function's name says its file: every global function of
# daemon/ROLE/FILE.c is FILE_* (the role's entry point ROLE_main in ROLE.c).
names=0
for src in daemon/*/*.c daemon/*.c; do
  obj=$BUILD/obj/${src%.c}.o
  [ -f "$obj" ] || fail "no object $obj for $src (build first)"
  b=$(basename "$src" .c)
  for fn in $(nm --defined-only "$obj" | awk '$2 == "T" { print $3 }'); do
    case $fn in "${b}"_*|main) ;; *) say "FAIL: $src defines $fn (expected ${b}_*)"; names=1 ;; esac
  done
done
[ "$names" = 0 ] || fail "a function's name does not say its file"
say "ok: every daemon/ function's name says its file"
