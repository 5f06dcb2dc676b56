#!/usr/bin/env bash
# Builds cert-manager's controller, cainjector and webhook from the consumer module in this folder
# (github.com/cert-manager/cert-manager at go.mod's version; the mains in cmd/ are the box's, see
# internal/boxmain) into box/bin/cert-manager-<version>/. As upstream's make does: CGO_ENABLED=0,
# -X pkg/util.AppVersion=<version> (make/00_mod.mk); ours adds -trimpath, -s -w. Every build runs
# under `nice -n 19` with GOFLAGS=-p=${BOX_GO_P:-1}; one line each (wall s, peak RSS) is appended
# to box/bin/build-times.log. Usage: box/certmanager/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-p=${BOX_GO_P:-1}
v=$(cd "$here" && go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
out=$box/bin/cert-manager-$v
mkdir -p "$out"
for cmd in controller cainjector webhook; do
  t0=$(date +%s.%N)
  (cd "$here" && /usr/bin/time -f '%M %U %S' -o "$out/.rss" nice -n 19 go build -trimpath \
      -ldflags "-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$v" \
      -o "$out/$cmd" "./cmd/$cmd")
  t1=$(date +%s.%N)
  read -r rss usr sys < <(tail -1 "$out/.rss")
  printf '%s  cert-manager %-26s wall %7.1f s  cpu %7.1f s  peak-child-RSS %5d MiB  (GOFLAGS=%s, nice 19, %s)\n' \
    "$(date -u +%FT%TZ)" "bin/cert-manager-$v/$cmd" "$(echo "$t1 - $t0" | bc)" "$(echo "$usr + $sys" | bc)" \
    $((rss / 1024)) "$GOFLAGS" "$(lscpu | sed -n 's/^Model name: *//p')" | tee -a "$box/bin/build-times.log"
  rm -f "$out/.rss"
  "$out/$cmd" --version
done
