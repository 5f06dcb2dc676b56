#!/usr/bin/env bash
# Builds Knative Serving's controller, webhook, activator, autoscaler and
# queue-proxy (verbatim copies of knative.dev/serving cmd/*, see sync-upstream.sh)
# and the box's KIngress stand-in (cmd/kingress) into bin/:
#   bin/{controller,webhook,activator,autoscaler,queue,kingress}
# One `go build` invocation for all of them, so every package is compiled once.
# Why not one multi-call binary: see NOTES-knative.md ("Why six binaries").
# Every build runs `nice -n 19` with -p=1 (BOX_GO_P overrides -p).
# Appends a line (wall seconds, peak RSS of the largest child) to bin/build-times.log.
# BOX_KN_DIR=v1.21 builds knative-v1.21.1 (KServe 0.20's) the same way into v1.21/bin/, without
# the stand-in (the node runs box/knative/bin/kingress for every release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BOX_KN_DIR=${BOX_KN_DIR:-.}
cd "$here/$BOX_KN_DIR"
[ "$BOX_KN_DIR" = . ] || BOX_KN_EXTRA=${BOX_KN_EXTRA:-}
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-p=${BOX_GO_P:-1}"
"$here/sync-upstream.sh" --check
mod=knative.dev/serving
ver=$(go list -m -f '{{.Version}}' $mod)
info=$(go env GOMODCACHE)/cache/download/$mod/@v/$ver.info
sha=$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$info")
# knative.dev/serving v0.X.Y is tag knative-v1.(X-27).Y (v0.43.2 = knative-v1.16.2).
minor=${ver#v0.}; minor=${minor%%.*}; patch=${ver##*.}
release="knative-v1.$((minor - 27)).$patch"
note=""
if [ "$ver" = v0.43.3 ]; then
  # The proxy refuses v0.43.2 (403 "This module version is not available").
  note="built as the pin knative-v1.16.2: v0.43.2..v0.43.3 changes only the knative.dev/hack script module and test/*.sh, no Go file"
  release="knative-v1.16.3"
fi
ld="-s -w -X knative.dev/pkg/changeset.rev=${sha:0:7}"
ld+=" -X imagelingo.local/box/knative/boxversion.Release=$release"
mkdir -p bin
t0=$(date +%s.%N)
/usr/bin/time -f '%M %U %S' -o bin/.rss nice -n 19 go build -trimpath -ldflags "$ld -X 'imagelingo.local/box/knative/boxversion.Note=$note'" \
  -o bin/ ./cmd/controller ./cmd/webhook ./cmd/activator ./cmd/autoscaler ./cmd/queue ${BOX_KN_EXTRA-./cmd/kingress}
t1=$(date +%s.%N)
read -r rss usr sys < <(tail -1 bin/.rss)
printf '%s  knative %s  wall %7.1f s  cpu %7.1f s  peak-child-RSS %5d MiB  (-p=%s, %s)\n' \
  "$(date -u +%FT%TZ)" "$ver" "$(echo "$t1 - $t0" | bc)" "$(echo "$usr + $sys" | bc)" $((rss / 1024)) \
  "${BOX_GO_P:-1}" "$(lscpu | sed -n 's/^Model name: *//p')" | tee -a bin/build-times.log
rm -f bin/.rss
for b in controller webhook activator autoscaler queue; do bin/$b --version; done
