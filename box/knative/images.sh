#!/usr/bin/env bash
# Images of Knative Serving's binaries built here (bin/), as ko builds the release's: the static
# binary at /ko-app/<cmd> as ENTRYPOINT, KO_DATA_PATH=/var/run/ko, the CA bundle, user nonroot
# (65532, ko's default base cgr.dev/chainguard/static; the release's Deployments set runAsNonRoot
# and no runAsUser, so the image's user must be a number). No registry: OCI archives for
# `ctr images import` (kubelet/up.sh BOX_IMAGE_DIRS).
# Usage: box/knative/images.sh OUTDIR [DIR]  -> OUTDIR/knative-<cmd>.oci.tar, and prints the names.
# DIR: the build's folder (box_knative_dir: v1.21 for knative-v1.21.1); the stand-in is always
# box/knative/bin/kingress, named for that release.
# Names: gcr.io/knative-releases/knative.dev/serving/cmd/<cmd>:<release> (the release's repository;
# its Deployments name them by digest, which select_objects.py --node replaces with this tag), and
# box.local/knative/kingress:<release> for the KIngress stand-in, in net-istio-controller's place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"   # box_knative_release, box_static_image
out=${1:?usage: images.sh OUTDIR [DIR]} dir=${2:-.}
release=$(box_knative_release "$dir")
mkdir -p "$out"
for cmd in controller webhook activator autoscaler queue kingress; do
  name=gcr.io/knative-releases/knative.dev/serving/cmd/$cmd:$release
  binary=$here/$dir/bin/$cmd
  [ $cmd != kingress ] || name=box.local/knative/kingress:$release binary=$here/bin/kingress
  box_static_image var/run/ko "$binary" "/ko-app/$cmd" "$name" "$out/knative-$cmd.oci.tar" \
    --env KO_DATA_PATH=/var/run/ko
done
