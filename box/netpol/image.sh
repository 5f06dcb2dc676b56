#!/usr/bin/env bash
# registry.k8s.io/networking/kube-network-policies:v0.8.0 as upstream's Dockerfile makes it
# (distroless/static-debian12 + /bin/netpol; CMD left out, the DaemonSet's args name /bin/netpol):
# the binary built from box/netpol/go.mod, the CA bundle, a passwd with root and nonroot.
# Args: BIN OUTDIR.
set -euo pipefail
bin=$1 out=$2; r=$out/netpol-root; rm -rf "$r"; mkdir -p "$r/bin" "$r/etc/ssl/certs" "$r/tmp"
cp "$bin/kube-network-policies" "$r/bin/netpol"
cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
python3 "$(dirname "$0")/../kubelet/mkimage.py" "$r" registry.k8s.io/networking/kube-network-policies:v0.8.0 \
  "$out/kube-network-policies.oci.tar" --workdir /   # no ENTRYPOINT: the DaemonSet's args begin with /bin/netpol
