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
. "$here/../lib.sh"   # box_knative_release
out=${1:?usage: images.sh OUTDIR}
release=$(box_knative_release)
mkdir -p "$out"
for cmd in controller webhook activator autoscaler queue kingress; do
  r=$out/rootfs-$cmd
  rm -rf "$r"; mkdir -p "$r/ko-app" "$r/var/run/ko" "$r/etc/ssl/certs" "$r/tmp"
  cp "$here/bin/$cmd" "$r/ko-app/$cmd"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
  chmod 1777 "$r/tmp"
  name=gcr.io/knative-releases/knative.dev/serving/cmd/$cmd:$release
  [ $cmd != kingress ] || name=box.local/knative/kingress:$release
  python3 "$here/../kubelet/mkimage.py" "$r" "$name" "$out/knative-$cmd.oci.tar" \
    --entrypoint "/ko-app/$cmd" --env KO_DATA_PATH=/var/run/ko \
    --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --user 65532:65532 --workdir /
  rm -rf "$r"
  echo "$name"
done
