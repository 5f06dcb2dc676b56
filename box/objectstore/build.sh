#!/usr/bin/env bash
# Builds the object stores Kubeflow ships from the Go module proxy into box/objectstore/bin/:
#   bin/weed   SeaweedFS (Kubeflow 1.11.0), module ./seaweedfs (go.mod `tool` line)
#   bin/minio  MinIO     (Kubeflow 1.10.2), module ./minio     (go.mod `tool` line)
# The proxy serves neither pinned release (NOTES-objectstore.md): these are the versions it serves.
# Usage: box/objectstore/build.sh [seaweedfs] [minio]        (default: both)
# Flags as upstream builds its release binaries (seaweedfs docker/Dockerfile.go_build; minio
# Makefile `build` + buildscripts/gen-ldflags.go), CGO off. Always `nice -n 19`, -p=1
# unless BOX_GO_P says more.
# One line per target (wall s, CPU s, peak RSS of the biggest child) goes to bin/build-times.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-p=${BOX_GO_P:-1} -buildvcs=false"
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(seaweedfs minio)
mkdir -p "$here/bin"

modinfo() { (cd "$here/$1" && go list -m -f "$3" "$2"); }
timed() { # label, command...
  local label=$1 t0 t1 rss usr sys; shift
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$here/bin/.rss" "$@"
  t1=$(date +%s.%N)
  read -r rss usr sys < <(tail -1 "$here/bin/.rss")
  printf '%s  %-9s wall %7.1f s  cpu %7.1f s  peak-child-RSS %5d MiB  GOCACHE=%s  (%s)\n' \
    "$(date -u +%FT%TZ)" "$label" "$(echo "$t1 - $t0" | bc)" "$(echo "$usr + $sys" | bc)" \
    $((rss / 1024)) "$(go env GOCACHE)" "$(lscpu | sed -n 's/^Model name: *//p')" \
    | tee -a "$here/bin/build-times.log"
}

for t in "${targets[@]}"; do
  case $t in
  seaweedfs)
    v=$(modinfo seaweedfs github.com/seaweedfs/seaweedfs '{{.Version}}')  # v0.0.0-<time>-<commit>
    ld="-extldflags -static -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=${v##*-}"
    (cd "$here/seaweedfs" && timed seaweedfs nice -n 19 go build -ldflags "$ld" \
        -o "$here/bin/weed" github.com/seaweedfs/seaweedfs/weed)
    "$here/bin/weed" version | head -1 ;;
  minio)
    v=$(modinfo minio github.com/minio/minio '{{.Version}}')
    ts=$(modinfo minio github.com/minio/minio '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')
    p=github.com/minio/minio/cmd   # gen-ldflags.go with no tag: version = commit time, DEVELOPMENT.<time>
    ld="-s -w -X $p.Version=$ts -X $p.CopyrightYear=${ts:0:4} -X $p.ReleaseTag=DEVELOPMENT.${ts//:/-}"
    ld+=" -X $p.CommitID=${v##*-} -X $p.ShortCommitID=${v##*-} -X $p.GOPATH= -X $p.GOROOT="
    (cd "$here/minio" && timed minio nice -n 19 go build -tags kqueue -trimpath -ldflags "$ld" \
        -o "$here/bin/minio" github.com/minio/minio)
    "$here/bin/minio" --version | head -2 ;;
  *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
