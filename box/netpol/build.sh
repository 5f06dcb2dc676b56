#!/usr/bin/env bash
# Builds the NetworkPolicy enforcer sigs.k8s.io/kube-network-policies v0.8.0 (its cmd/main.go, the
# DaemonSet's /bin/netpol) from this consumer module into box/netpol/bin/ (git-ignored), as
# upstream's Makefile/Dockerfile build it: CGO_ENABLED=0 (plus -trimpath -s -w, as the box's other
# binaries). Upstream's go.mod has no replace lines; `go mod tidy` here selected exactly upstream's
# versions. Appends wall/CPU time and peak RSS to bin/build-times.log.
set -euo pipefail
cd "$(dirname "$0")"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--p=1}
mkdir -p bin
/usr/bin/time -f 'wall %e s  user %U s  sys %S s  peak-RSS %M KB' -a -o bin/build-times.log \
  nice -n 19 go build -trimpath -ldflags "-s -w" -o bin/kube-network-policies \
  sigs.k8s.io/kube-network-policies/cmd
echo "$(date -u +%FT%TZ) kube-network-policies $(go list -m -f '{{.Version}}' sigs.k8s.io/kube-network-policies) ($GOFLAGS, $(lscpu | sed -n 's/^Model name: *//p'))" >> bin/build-times.log
tail -2 bin/build-times.log
