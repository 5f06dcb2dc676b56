#!/usr/bin/env bash
# Images of cert-manager's three Deployments, built here as upstream builds them
# (hack/containers/Containerfile.{controller,cainjector,webhook} at the tag): the static binary
# (box/bin/cert-manager-<v>/, build.sh) at /app/cmd/<name>/<name> as ENTRYPOINT, USER 1000, on a
# distroless/static-like base (box/lib.sh box_static_image). The release's Deployments pull
# IfNotPresent, so importing them into the node's containerd (up.sh) is enough.
# Usage: box/certmanager/images.sh v1.16.1 OUTDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"   # box_static_image
v=${1:?usage: images.sh VERSION OUTDIR} out=${2:?OUTDIR}
mkdir -p "$out"
for cmd in controller cainjector webhook; do
  bin=$here/../bin/cert-manager-$v/$cmd
  [ -x "$bin" ] || { echo "no $bin: box/certmanager/build.sh" >&2; exit 1; }
  box_static_image "" "$bin" "/app/cmd/$cmd/$cmd" "quay.io/jetstack/cert-manager-$cmd:$v" \
    "$out/cert-manager-$cmd.oci.tar" --user 1000
done
