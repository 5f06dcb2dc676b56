#!/usr/bin/env bash
# Copies the upstream main packages of knative.dev/serving (cmd/<component>/*.go,
# tests left out) verbatim into cmd/<component>/, beside our version.go.
# `./sync-upstream.sh --check` only verifies that the copies are still identical
# to the module in the module cache (build.sh runs that before every build).
# BOX_KN_DIR: the module folder, relative to this one (default "."; v1.21 for knative-v1.21.1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/${BOX_KN_DIR:-.}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
ver=$(go list -m -f '{{.Version}}' knative.dev/serving)
src=$(go list -m -f '{{.Dir}}' knative.dev/serving)
[ -n "$src" ] && [ -d "$src" ] || { go mod download knative.dev/serving; src=$(go list -m -f '{{.Dir}}' knative.dev/serving); }
rc=0
for c in controller webhook activator autoscaler queue; do
  mkdir -p "cmd/$c"
  for f in "$src/cmd/$c"/*.go; do
    case $f in *_test.go) continue ;; esac
    dst=cmd/$c/$(basename "$f")
    if [ "${1:-}" = --check ]; then
      cmp -s "$f" "$dst" || { echo "DIFFERS from knative.dev/serving@$ver: $dst" >&2; rc=1; }
    else
      install -m 0644 "$f" "$dst"
    fi
  done
done
[ "${1:-}" = --check ] && [ $rc = 0 ] && echo "cmd/*: upstream copies identical to knative.dev/serving@$ver"
exit $rc
