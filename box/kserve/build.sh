#!/usr/bin/env bash
# Builds the KServe controller manager (`cmd/manager`: controllers + webhooks) of
# github.com/kserve/kserve from the consumer modules in this folder, into
# box/bin/kserve-<version>/manager.
# Usage: box/kserve/build.sh [v0.15.2] [v0.15.0] [v0.20.0]   (default: all three)
# As upstream's Dockerfile: CGO_ENABLED=0 go build ./cmd/manager (upstream also passes -a,
# which would defeat the build cache, and no -ldflags). Ours adds -trimpath, -s -w and
# -X main.version=<tag> (read by version.go). Every build runs under `nice -n 19` with
# GOFLAGS=-p=1 (other work on this 2-core machine; BOX_GO_P=2 uses both cores). Default
# GOCACHE/GOMODCACHE, shared with box/build.sh. One line per build (wall s, peak RSS of the
# largest child) is appended to box/bin/build-times.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-p=${BOX_GO_P:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(v0.15.2 v0.15.0 v0.20.0)
mkdir -p "$box/bin"
for v in "${targets[@]}"; do
  d=$here/$v
  [ -f "$d/go.mod" ] || { echo "no module $d (run gen-gomod.sh $v)" >&2; exit 2; }
  got=$(cd "$d" && go list -m -f '{{.Version}}' github.com/kserve/kserve)
  [ "$got" = "$v" ] || { echo "$d requires kserve $got, not $v" >&2; exit 2; }
  out=$box/bin/kserve-$v
  mkdir -p "$out"
  t0=$(date +%s.%N)
  (cd "$d" && /usr/bin/time -f '%M %U %S' -o "$out/.rss" nice -n 19 go build -trimpath \
      -ldflags "-s -w -X main.version=$v ${KSERVE_EXTRA_LDFLAGS:-}" -o "$out/manager" .)
  t1=$(date +%s.%N)
  read -r rss usr sys < <(tail -1 "$out/.rss")
  printf '%s  kserve     %-28s wall %7.1f s  cpu %7.1f s  peak-child-RSS %5d MiB  (GOFLAGS=%s, nice 19, %s)\n' \
    "$(date -u +%FT%TZ)" "bin/kserve-$v" "$(echo "$t1 - $t0" | bc)" "$(echo "$usr + $sys" | bc)" $((rss / 1024)) \
    "$GOFLAGS" "$(lscpu | sed -n 's/^Model name: *//p')" | tee -a "$box/bin/build-times.log"
  rm -f "$out/.rss"
  "$out/manager" --version
done
