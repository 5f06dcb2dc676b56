#!/usr/bin/env bash
# (Re)writes box/certmanager/go.mod for github.com/cert-manager/cert-manager at <version>:
# upstream's `go` line and require blocks (so MVS selects upstream's versions) and its replace
# lines, copied from the tag's go.mod, plus `require github.com/cert-manager/cert-manager
# <version>`; go.sum starts as upstream's, then `go mod tidy`. The module path sits under
# github.com/cert-manager/cert-manager, as upstream's own cmd/*/go.mod modules do
# (`.../controller-binary` etc.), so that the mains may import the library's internal/ packages.
# Usage: box/certmanager/gen-gomod.sh v1.16.1
set -euo pipefail
v=${1:?usage: gen-gomod.sh v1.16.1}
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-p=1
src=$(go mod download -json "github.com/cert-manager/cert-manager@$v" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
[ -d "$src" ] || { echo "cannot download github.com/cert-manager/cert-manager@$v" >&2; exit 1; }
{
  echo "// Consumer module: box/certmanager/cmd/{controller,cainjector,webhook} on"
  echo "// github.com/cert-manager/cert-manager $v (written by gen-gomod.sh)."
  echo "module github.com/cert-manager/cert-manager/box-binaries"
  echo
  grep -m1 '^go ' "$src/go.mod"
  echo
  echo "require github.com/cert-manager/cert-manager $v"
  echo
  sed -n '/^go /,$p' "$src/go.mod" | sed '1d' | grep -v '^toolchain'
} > "$here/go.mod"
cp "$src/go.sum" "$here/go.sum"; chmod u+w "$here/go.sum"
cd "$here" && nice -n 19 go mod tidy
