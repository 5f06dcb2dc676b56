#!/usr/bin/env bash
# registry.k8s.io/coredns/coredns:v<ver> as upstream's Dockerfile makes it: /coredns with
# cap_net_bind_service=+ep (setcap, libcap2-bin), the CA bundle, USER nonroot:nonroot (65532 in
# distroless), ENTRYPOINT ["/coredns"]. Args: BIN OUTDIR.
set -euo pipefail
bin=$1 out=$2; r=$out/coredns; rm -rf "$r"; mkdir -p "$r/etc/ssl/certs" "$r/tmp"
ver=$("$bin/coredns" -version | sed -n 's/^CoreDNS-//p')
cp "$bin/coredns" "$r/coredns"; setcap cap_net_bind_service=+ep "$r/coredns"
cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
python3 "$(dirname "$0")/../mkimage.py" "$r" "registry.k8s.io/coredns/coredns:v$ver" \
  "$out/coredns.oci.tar" --entrypoint /coredns --user nonroot:nonroot --workdir /
