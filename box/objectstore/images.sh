#!/usr/bin/env bash
# The image the release's object-store Deployment names, made here from the binary built from
# source (build.sh) on Debian's busybox-static (the upstream images are Alpine: busybox's sh, wget
# and seq are what the Deployment's postStart hook and the entrypoint use). No registry: an OCI
# archive for `ctr images import` (kubelet/up.sh BOX_IMAGE_DIRS).
# Usage: box/objectstore/images.sh seaweedfs|minio OUTDIR   -> OUTDIR/<store>.oci.tar; prints the name
#
# seaweedfs -> docker.io/chrislusf/seaweedfs:4.00 (Kubeflow 1.11.0's), laid out as the final stage
#   of SeaweedFS's docker/Dockerfile.go_build (module v0.0.0-20261109003541-7506e5f91cd6 = 4.53,
#   the version built; 4.00 is refused by the proxy): /usr/bin/weed (:85), /etc/seaweedfs/filer.toml
#   and /entrypoint.sh copied from the module's docker/ folder (:93-94), user seaweed 1000:1000
#   (:103), WORKDIR /data (:129), ENTRYPOINT /entrypoint.sh (:132; its 'server' case :116).
#   Every file is root's (kubelet/mkimage.py); /data is the Deployment's volume, made writable by
#   1000 in up.sh. Not carried: fuse, curl, su-exec (the Deployment runs as 1000, so the
#   entrypoint never switches user) and the Rust weed-volume/worker/vector binaries (empty
#   placeholders upstream too where not prebuilt; `server` runs Go's volume server).
# minio -> gcr.io/ml-pipeline/minio:RELEASE.2019-08-14T20-37-41Z-license-compliance (1.10.2's):
#   /usr/bin/minio (the 2019 tag's build where box/objectstore/bin has it, else build.sh's),
#   MINIO_UPDATE=off as the image sets it. ENTRYPOINT is minio itself: the image's
#   docker-entrypoint.sh prepends `minio` to the Deployment's args (`server /data`) and reads
#   Docker secret files, which a Kubernetes Pod does not have; its source at that tag is not
#   served here, so it is not copied.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
store=${1:?usage: images.sh seaweedfs|minio OUTDIR}
out=${2:?usage: images.sh seaweedfs|minio OUTDIR}
mkdir -p "$out"
r=$(mktemp -d /tmp/box-rootfs.XXXXXX)
trap 'rm -rf "$r"' EXIT
mkdir -p "$r"/{bin,etc/ssl/certs,tmp,usr/bin,data}
cp /bin/busybox "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
chmod 1777 "$r/tmp"
case $store in
seaweedfs)
  name=docker.io/chrislusf/seaweedfs:4.00
  src=$(cd "$here/seaweedfs" && go list -m -f '{{.Dir}}' github.com/seaweedfs/seaweedfs)
  cp "$here/bin/weed" "$r/usr/bin/weed"
  mkdir -p "$r/etc/seaweedfs" "$r/data/filerldb2"
  cp "$src/docker/filer.toml" "$r/etc/seaweedfs/filer.toml"
  install -m 755 "$src/docker/entrypoint.sh" "$r/entrypoint.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\nseaweed:x:1000:1000::/home/seaweed:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\nseaweed:x:1000:\n' > "$r/etc/group"
  set -- --entrypoint /entrypoint.sh --workdir /data
  ;;
minio)
  name=gcr.io/ml-pipeline/minio:RELEASE.2019-08-14T20-37-41Z-license-compliance
  binary=$here/bin/minio-RELEASE.2019-08-14T20-37-41Z
  [ -x "$binary" ] || binary=$here/bin/minio
  cp "$binary" "$r/usr/bin/minio"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\n' > "$r/etc/group"
  set -- --entrypoint /usr/bin/minio --env MINIO_UPDATE=off --workdir /
  ;;
*) echo "unknown store $store (seaweedfs, minio)" >&2; exit 2 ;;
esac
python3 "$here/../kubelet/mkimage.py" "$r" "$name" "$out/$store.oci.tar" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$@"
echo "$name"
