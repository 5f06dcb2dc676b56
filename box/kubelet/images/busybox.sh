#!/usr/bin/env bash
# box.local/busybox:1.35 from Debian's busybox-static (1:1.35.0): /bin/<applet> links, an
# /etc/passwd with root and nobody, a /www/index.html for `httpd -f -h /www`. Args: BIN OUTDIR.
set -euo pipefail
out=$2; r=$out/busybox; rm -rf "$r"; mkdir -p "$r"/{bin,etc,tmp,www,root}
cp /bin/busybox "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
chmod 1777 "$r/tmp"; echo "hello from busybox" > "$r/www/index.html"
python3 "$(dirname "$0")/../mkimage.py" "$r" box.local/busybox:1.35 "$out/busybox.oci.tar" \
  --entrypoint /bin/sh --env PATH=/bin
