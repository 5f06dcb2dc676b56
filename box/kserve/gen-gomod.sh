#!/usr/bin/env bash
# (Re)writes the consumer module box/kserve/<version>/ for github.com/kserve/kserve at <version>:
#   go.mod  : module + upstream's `go` line, `require github.com/kserve/kserve <version>`,
#             upstream's require blocks (so MVS selects exactly upstream's versions) and
#             upstream's replace/exclude lines, copied verbatim from the tag's go.mod;
#   go.sum  : upstream's go.sum, then `go mod tidy`;
#   main.go : upstream cmd/manager/main.go at the tag, unchanged (package main cannot be imported);
#   version.go is ours (prints the version the binary was built from) and is not touched here.
# Usage: box/kserve/gen-gomod.sh v0.15.2
set -euo pipefail
v=$1
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-p=1
src=$(go mod download -json "github.com/kserve/kserve@$v" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
[ -d "$src" ] || { echo "cannot download github.com/kserve/kserve@$v" >&2; exit 1; }
d=$here/$v; mkdir -p "$d"
{
  echo "// Consumer module: builds github.com/kserve/kserve $v cmd/manager (written by gen-gomod.sh)."
  echo "module box.local/kserve-manager"
  echo
  grep -m1 '^go ' "$src/go.mod"
  grep '^godebug' "$src/go.mod" || true
  echo
  echo "require github.com/kserve/kserve $v"
  echo
  # Everything after the module/go lines: require, replace, exclude blocks and their comments.
  sed -n '/^go /,$p' "$src/go.mod" | sed '1d' | grep -v '^godebug' | grep -v '^toolchain'
} > "$d/go.mod"
cp "$src/go.sum" "$d/go.sum"; chmod u+w "$d/go.sum"
cp "$src/cmd/manager/main.go" "$d/main.go"; chmod u+w "$d/main.go"
cd "$d" && nice -n 19 go mod tidy
