#!/usr/bin/env bash
# Everything box/up.sh needs for one target, in one command: Debian's packages the node runs on
# (containerd, runc, the CNI plugins, iptables, the registry the manager's Pod pulls from,
# mmdebstrap for the images), then each component built from source at the release's pins:
# Kubernetes + etcd + CoreDNS and kube-rbac-proxy (build.sh), KServe's manager
# (kserve/build.sh), Knative Serving (knative/build.sh), cert-manager (certmanager/build.sh; the
# Kubeflow targets), the object store (objectstore/build.sh).
#   box/build-target.sh kubeflow-1.11|kubeflow-1.10|kserve-0.20
# Warm (Go caches full, binaries current): seconds, as `go build` finds nothing to do. Cold: see
# benchmarks/RESULTS.md ("The box built cold"). BOX_GO_P (default 2 here: the builds have the
# machine) sets go build's -p. Each step's wall time goes to box/bin/build-target.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: box/build-target.sh kubeflow-1.11|kubeflow-1.10|kserve-0.20}
case $target in
kubeflow-1.11) k8s="k8s-v1.34 etcd-v3.6 coredns-v1.12" kserve=v0.15.2 store=seaweedfs ;;
kubeflow-1.10) k8s="k8s-v1.32 etcd-v3.5 coredns-v1.11" kserve=v0.15.0 store=minio ;;
# KServe's own install: the Knative 1.21.1 it installs (knative/v1.21; the KIngress stand-in comes
# from box/knative's build), 1.11's SeaweedFS as the S3
kserve-0.20) k8s="k8s-v1.34 etcd-v3.6 coredns-v1.12" kserve=v0.20.0 store=seaweedfs knative=v1.21 certmanager=no ;;
*) echo "unknown target $target (kubeflow-1.11, kubeflow-1.10, kserve-0.20)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "box/build-target.sh installs Debian packages: run it as root" >&2; exit 2; }
command -v go >/dev/null || { echo "box/build-target.sh needs Go (1.26.8 here)" >&2; exit 2; }
export BOX_GO_P=${BOX_GO_P:-2}
mkdir -p "$here/bin"
step() { # label, command...: runs it and logs its wall time
  local label=$1 t0; shift
  t0=$(date +%s)
  "$@"
  printf '%s  %-14s %-13s %5d s\n' "$(date -u +%FT%TZ)" "$target" "$label" $(($(date +%s) - t0)) \
    | tee -a "$here/bin/build-target.log"
}
packages=(containerd runc containernetworking-plugins iptables conntrack busybox-static
  libcap2-bin mmdebstrap docker-registry bc)
need=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  step debian sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ${need[*]} > '$here/bin/apt.log' 2>&1 || { tail -20 '$here/bin/apt.log'; exit 1; }"
fi
# shellcheck disable=SC2086  # the word lists above
step kubernetes "$here/build.sh" $k8s kube-rbac-proxy
step kserve "$here/kserve/build.sh" "$kserve"
step knative "$here/knative/build.sh"
[ -z "${knative:-}" ] || step knative-$knative env BOX_KN_DIR="$knative" "$here/knative/build.sh"
[ "${certmanager:-}" = no ] || step cert-manager "$here/certmanager/build.sh"
step object-store "$here/objectstore/build.sh" "$store"
printf '%s  %-14s %-13s %5d s  (BOX_GO_P=%s, %s)\n' "$(date -u +%FT%TZ)" "$target" total $SECONDS \
  "$BOX_GO_P" "$(lscpu | sed -n 's/^Model name: *//p')" | tee -a "$here/bin/build-target.log"
