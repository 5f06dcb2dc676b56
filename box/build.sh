#!/usr/bin/env bash
# Builds the box's control-plane binaries from the consumer modules in this
# folder into bin/<k8s-version>/:
#   kube (multi-call) + symlinks kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl, kubelet, kube-proxy;  etcd and coredns (coredns/coredns-v1.1x),
#   each the version that Kubernetes release pairs with; and kube-rbac-proxy (bin/
#   kube-rbac-proxy-<v>/), the KServe manager Deployment's sidecar in both Kubeflow releases.
# Usage: box/build.sh [k8s-v1.32] [k8s-v1.34] [etcd-v3.5] [etcd-v3.6] [coredns-v1.11] [coredns-v1.12]
#   [kube-rbac-proxy]
#   (default: all)
# Uses the default GOCACHE/GOMODCACHE (~/.cache/go-build, ~/go/pkg/mod), shared
# by all modules. Builds run under `nice -n 15` with -p=1 so that one core stays
# for the machine's other work; BOX_GO_P=2 (or more) builds faster.
# Appends one line per target (wall seconds, peak RSS of the largest child
# process, i.e. compiler or linker) to bin/build-times.log.
set -euo pipefail
box=$(cd "$(dirname "$0")" && pwd)
cd "$box"
export CGO_ENABLED=0 GOTOOLCHAIN=local
p=${BOX_GO_P:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(k8s-v1.34 etcd-v3.6 k8s-v1.32 etcd-v3.5 coredns-v1.12 coredns-v1.11 kube-rbac-proxy)

# Which Kubernetes version's bin/ folder an etcd or coredns module belongs to.
declare -A etcd_for=([etcd-v3.5]=k8s-v1.32 [etcd-v3.6]=k8s-v1.34 [coredns-v1.11]=k8s-v1.32 [coredns-v1.12]=k8s-v1.34)

modver() { (cd "$box/$1" && go list -m -f '{{.Version}}' "$2"); }

timed() { # label, then the command
  local label=$1; shift
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$box/bin/.rss" "$@"
  t1=$(date +%s.%N)
  rss=$(tail -1 "$box/bin/.rss")
  printf '%s  %-10s %-28s wall %7.1f s  peak-child-RSS %5d MiB  (-p=%s, %s)\n' \
    "$(date -u +%FT%TZ)" "$label" "$outdir" "$(echo "$t1 - $t0" | bc)" $((rss / 1024)) "$p" \
    "$(lscpu | sed -n 's/^Model name: *//p')" | tee -a "$box/bin/build-times.log"
}

mkdir -p bin
for t in "${targets[@]}"; do
  case $t in
  k8s-v*)
    kver=$(modver "$t" k8s.io/kubernetes)            # e.g. v1.34.4
    (cd "$t" && go mod download "k8s.io/kubernetes@$kver")  # the .info below, on a cold cache
    info=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$kver.info
    bdate=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")  # the tag's commit time
    major=${kver#v}; major=${major%%.*}
    minor=${kver#v*.}; minor=${minor%%.*}
    ld="-s -w"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ld+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$bdate"
    done
    outdir=bin/$kver
    mkdir -p "$outdir"
    # Tags and flags as upstream hack/lib/golang.sh builds non-debug binaries.
    (cd "$t" && timed "$t" nice -n 15 go build -p "$p" -trimpath \
        -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$box/$outdir/kube" .)
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
      ln -sfn kube "$outdir/$c"
    done
    ;;
  etcd-v*)
    ever=$(modver "$t" go.etcd.io/etcd/server/v3)    # e.g. v3.6.5
    kver=$(modver "${etcd_for[$t]}" k8s.io/kubernetes)
    sha=$(go mod download -json "go.etcd.io/etcd/server/v3@$ever" | sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p')
    outdir=bin/$kver
    mkdir -p "$outdir"
    # As upstream scripts/build-binary.sh: CGO_ENABLED=0, -trimpath, GitSHA.
    (cd "$t" && timed "$t" nice -n 15 go build -p "$p" -trimpath \
        -ldflags "-s -w${sha:+ -X go.etcd.io/etcd/api/v3/version.GitSHA=${sha:0:7}}" -o "$box/$outdir/etcd" .)
    ;;
  coredns-v*)
    cver=$(modver "coredns/$t" github.com/coredns/coredns)   # e.g. v1.12.1
    kver=$(modver "${etcd_for[$t]}" k8s.io/kubernetes)
    sha=$(go mod download -json "github.com/coredns/coredns@$cver" | sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p')
    outdir=bin/$kver
    mkdir -p "$outdir"
    # As upstream Makefile: CGO_ENABLED=0, -ldflags "-s -w -X ...coremain.GitCommit=...".
    (cd "coredns/$t" && timed "$t" nice -n 15 go build -p "$p" -trimpath \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${sha:0:7}" -o "$box/$outdir/coredns" .)
    ;;
  kube-rbac-proxy)
    rver=$(modver "$t" github.com/brancz/kube-rbac-proxy)   # v0.18.0: the KServe manager's sidecar
    outdir=bin/kube-rbac-proxy-$rver
    mkdir -p "$outdir"
    # As upstream Makefile: the version into component-base, programName kube-rbac-proxy.
    (cd "$t" && timed "$t" nice -n 15 go build -p "$p" -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=$rver \
        -X k8s.io/component-base/version/verflag.programName=kube-rbac-proxy" \
        -o "$box/$outdir/kube-rbac-proxy" github.com/brancz/kube-rbac-proxy/cmd/kube-rbac-proxy)
    ;;
  *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
rm -f bin/.rss
