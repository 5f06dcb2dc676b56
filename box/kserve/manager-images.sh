#!/usr/bin/env bash
# Images of the KServe controller manager's Pod, built here as upstream builds them, for the
# release's kserve-controller-manager Deployment (box/kserve/start-kserve.sh with BOX_NODE):
#   kserve/kserve-controller:<v>          /manager (box/bin/kserve-<v>/manager), ENTRYPOINT, as
#                                         kserve's Dockerfile copies it onto
#                                         gcr.io/distroless/static:nonroot (user 65532)
#   quay.io/brancz/kube-rbac-proxy:<v>    /usr/local/bin/kube-rbac-proxy, user 65532:65532, as
#                                         its Dockerfile (box/bin/kube-rbac-proxy-<v>/; lib.sh)
# The Deployment's manager container pulls Always, so up.sh pushes them to the box's registry
# (box/lib.sh box_registry). Usage: box/kserve/manager-images.sh v0.15.2 OUTDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
kv=${1:?usage: manager-images.sh KSERVE_VERSION OUTDIR} out=${2:?OUTDIR}
mkdir -p "$out"
. "$box/lib.sh"   # box_static_image
proxy=$box/bin/kube-rbac-proxy-$BOX_RBAC_PROXY/kube-rbac-proxy
[ -x "$proxy" ] || { echo "no $proxy: box/build.sh kube-rbac-proxy" >&2; exit 1; }
box_static_image "" "$box/bin/kserve-$kv/manager" /manager "docker.io/kserve/kserve-controller:$kv" \
  "$out/kserve-controller.oci.tar"
box_static_image "" "$proxy" /usr/local/bin/kube-rbac-proxy \
  "quay.io/brancz/kube-rbac-proxy:$BOX_RBAC_PROXY" \
  "$out/kube-rbac-proxy.oci.tar"
