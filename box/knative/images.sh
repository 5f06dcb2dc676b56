#!/usr/bin/env bash
# Images of Knative Serving's binaries built here (bin/), as ko builds the release's: the static
# binary at /ko-app/<cmd> as ENTRYPOINT, KO_DATA_PATH=/var/run/ko, the CA bundle, user nonroot
# (65532, ko's default base cgr.dev/chainguard/static; the release's Deployments set runAsNonRoot
# and no runAsUser, so the image's user must be a number). No registry: OCI archives for
# `ctr images import` (kubelet/up.sh BOX_IMAGE_DIRS).
# Usage: box/knative/images.sh OUTDIR   -> OUTDIR/knative-<cmd>.oci.tar, and prints the names.
# Names: gcr.io/knative-releases/knative.dev/serving/cmd/<cmd>:<release> (the release's repository;
# its Deployments name them by digest, which select_objects.py --node replaces with this tag), and
# box.local/knative/kingress:<release> for the KIngress stand-in, in net-istio-controller's place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"   # box_knative_release, box_static_image
out=${1:?usage: images.sh OUTDIR}
release=$(box_knative_release)
mkdir -p "$out"
for cmd in controller webhook activator autoscaler queue kingress; do
  name=gcr.io/knative-releases/knative.dev/serving/cmd/$cmd:$release
  [ $cmd != kingress ] || name=box.local/knative/kingress:$release
  box_static_image var/run/ko "$here/bin/$cmd" "/ko-app/$cmd" "$name" "$out/knative-$cmd.oci.tar" \
    --env KO_DATA_PATH=/var/run/ko
done
