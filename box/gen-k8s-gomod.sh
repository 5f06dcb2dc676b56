#!/usr/bin/env bash
# Writes <dir>/go.mod for a consumer module of k8s.io/kubernetes@<version>:
# requires k8s.io/kubernetes, replaces every staging module (upstream go.mod's
# "k8s.io/x => ./staging/src/k8s.io/x" lines) with k8s.io/x v0.<minor>.<patch>,
# copies upstream's go/godebug lines (they only apply in the main module),
# then runs go mod tidy. Usage: gen-k8s-gomod.sh v1.34.4 k8s-v1.34 [mod=ver ...]
# Extra mod=ver arguments pin one staging module at another version, for a
# staging module whose exact v0.X.Y the module proxy here does not serve
# (see NOTES-controlplane.md: k8s.io/endpointslice v0.32.13 is refused).
set -euo pipefail
ver=$1 dir=$2; shift 2
overrides=" $* "
cd "$(dirname "$0")/$dir"
gomod=$(go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
staging_ver="v0.${ver#v1.}"
{
  echo "module imagelingo.local/box/$dir"
  echo
  echo "// go and godebug lines copied from k8s.io/kubernetes@$ver go.mod"
  grep -E '^(go|godebug) ' "$gomod"
  echo
  echo "require k8s.io/kubernetes $ver"
  echo
  echo "// k8s.io/kubernetes@$ver replaces these with ./staging/src/...; a consumer"
  echo "// must pin the published staging modules at $staging_ver instead."
  echo "replace ("
  for m in $(sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=> .\/staging/ {print $1}'); do
    v=$staging_ver
    case "$overrides" in *" $m="*) v=${overrides#* $m=}; v=${v%% *}
      printf '\t// %s %s is not served by the module proxy here; nearest served patch:\n' "$m" "$staging_ver" ;; esac
    printf '\t%s => %s %s\n' "$m" "$m" "$v"
  done
  echo ")"
} > go.mod
go mod tidy
