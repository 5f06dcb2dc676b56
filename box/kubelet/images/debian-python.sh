#!/usr/bin/env bash
# box.local/debian-python:bookworm: a Debian 12 base made from Debian's packages by mmdebstrap
# (apt's own mirror, no registry) with python3 3.11; ENTRYPOINT python3. The root folder is built
# once (~4 min) into $BOX_IMAGE_CACHE (default /var/cache/box); the archive is an uncompressed
# layer (~9 s to write, 215 MB). Args: BIN OUTDIR.
set -euo pipefail
out=$2; cache=${BOX_IMAGE_CACHE:-/var/cache/box}; r=$cache/debian-bookworm-python3
if [ ! -x "$r/usr/bin/python3" ]; then
  command -v mmdebstrap >/dev/null || apt-get install -y --no-install-recommends mmdebstrap
  mkdir -p "$cache"; rm -rf "$r.tmp"
  nice -n 19 mmdebstrap --variant=apt --include=python3-minimal,python3 --mode=root bookworm \
    "$r.tmp" http://deb.debian.org/debian
  mv "$r.tmp" "$r"
fi
python3 "$(dirname "$0")/../mkimage.py" "$r" box.local/debian-python:bookworm \
  "$out/debian-python.oci.tar" --entrypoint python3 --uncompressed \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
