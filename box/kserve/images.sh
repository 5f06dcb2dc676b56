#!/usr/bin/env bash
# The images a predictor Pod names, made here with no registry (box/kubelet/mkimage.py), for the
# real kubelet to run: pytorch/torchserve-kfs:0.9.0 (our ServingRuntime's image) and
# kserve/storage-initializer:<KSERVE> (the init container KServe adds). Cached: an archive that
# exists is not made again (box/up.sh deletes them once imported).
#   box/kserve/images.sh v0.15.2 [OUTDIR]   (default /var/cache/box/images/kserve-v0.15.2)
#
# What each image holds, and how it differs from upstream's:
# - base: Debian 12 made by mmdebstrap from Debian's packages with openjdk-17-jre-headless
#   (torchserve-kfs v0.9.0 docker/Dockerfile installs openjdk-17 from apt on Ubuntu 20.04).
# - Python 3.9.18 (pyenv's build on this machine, at its own prefix: its RUNPATH is absolute)
#   and the rehearsal's venvs (`make runtime-rehearsal`: .venv-kfs = torch 2.1 + TorchServe 0.9.0
#   as the runtime image pins, .venv-storage = kserve 0.15.2's storage code; for KServe 0.20,
#   kserve-storage 0.20.0 on Python 3.11 from the tag's lock: storage-venv.sh), each put where
#   upstream's image has its venv: /home/venv (torchserve-kfs Dockerfile:122, PATH and
#   PYTHONUNBUFFERED, WORKDIR /home/model-server, user model-server = 1000) and /prod_venv
#   (kserve python/storage-initializer.Dockerfile:19-22, USER 1000, WORKDIR /work, ENTRYPOINT
#   /storage-initializer/scripts/initializer-entrypoint, copied from the kserve module at the
#   tag). The venvs' scripts get their `#!` line rewritten to the new place (a layer on top).
# - Differences: upstream's storage-initializer runs Python 3.11 (0.15's here 3.9: the only
#   kserve 0.15 venv here); the images' /etc/passwd has the users, owned by root like every file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
repo=$(dirname "$box")
kv=${1:?usage: images.sh KSERVE_VERSION [OUTDIR]}
out=${2:-/var/cache/box/images/kserve-$kv}
cache=${BOX_IMAGE_CACHE:-/var/cache/box}
kfs=${KFS_VENV:-$repo/.venv-kfs} storage=${STORAGE_VENV:-$repo/.venv-storage}
base=$cache/debian-bookworm-jre17
mkdir -p "$out"
# From KServe 0.16 the storage-initializer is its own package, kserve_storage (0.20's entrypoint
# imports it; on 0.15.2's venv it fails "No module named 'kserve_storage'", seen on the box): its
# venv is made from the tag's python/storage and uv.lock, on Python 3.11 as upstream's image
mod=$(go env GOMODCACHE)/github.com/kserve/kserve@$kv
[ -d "$mod" ] || go mod download "github.com/kserve/kserve@$kv"
if [ -z "${STORAGE_VENV:-}" ] && [ -f "$mod/python/storage/uv.lock" ]; then
  storage=$cache/storage-venv-$kv
  "$here/storage-venv.sh" "$kv" "$storage"
fi
for v in "$kfs" "$storage"; do
  [ -f "$v/pyvenv.cfg" ] || { echo "no venv $v: run make runtime-rehearsal once" >&2; exit 1; }
done
home() { dirname "$(sed -n 's/^home = //p' "$1/pyvenv.cfg")"; }   # .../versions/3.9.18
python_home=$(home "$kfs") storage_python_home=$(home "$storage")
if [ ! -f "$base/.box-complete" ]; then   # (a stamp: the base's /usr/bin/java links out of it)
  command -v mmdebstrap >/dev/null || apt-get install -y --no-install-recommends mmdebstrap
  rm -rf "$base.tmp" "$base"
  nice -n 19 mmdebstrap --variant=apt --include=openjdk-17-jre-headless --mode=root bookworm \
    "$base.tmp" http://deb.debian.org/debian
  mv "$base.tmp" "$base" && touch "$base/.box-complete"
fi

scripts() { # VENV NEWPATH DIR: the venv's bin/ scripts with their #! line pointing at NEWPATH
  python3 - "$@" <<'PY'
import os, sys
venv, new, out = sys.argv[1:]
os.makedirs(f"{out}/bin", exist_ok=True)
for name in os.listdir(f"{venv}/bin"):
    src = f"{venv}/bin/{name}"
    if os.path.islink(src) or not os.path.isfile(src):
        continue
    data = open(src, "rb").read()
    if data.startswith(f"#!{venv}/bin/".encode()):
        open(f"{out}/bin/{name}", "wb").write(data.replace(venv.encode(), new.encode(), 1))
        os.chmod(f"{out}/bin/{name}", os.stat(src).st_mode & 0o7777)
PY
}
etc() { # DIR USER HOME: /etc/passwd and /etc/group of the base plus USER (uid 1000)
  mkdir -p "$1/etc"
  { cat "$base/etc/passwd"; echo "$2:x:1000:1000::$3:/bin/sh"; } > "$1/etc/passwd"
  { cat "$base/etc/group"; echo "$2:x:1000:"; } > "$1/etc/group"
}
work=$(mktemp -d /tmp/box-images.XXXXXX); trap 'rm -rf "$work"' EXIT
t0=$(date +%s)

tar_=$out/torchserve-kfs.oci.tar
if [ ! -f "$tar_" ]; then
  scripts "$kfs" /home/venv "$work/kfs"; etc "$work/kfs" model-server /home/model-server
  mkdir -p "$work/kfs/home/model-server/tmp"
  nice -n 10 python3 "$box/kubelet/mkimage.py" "$base" docker.io/pytorch/torchserve-kfs:0.9.0 "$tar_.tmp" \
    --uncompressed --layer "$python_home:$python_home" --layer "$kfs:/home/venv" \
    --layer "$work/kfs/bin:/home/venv/bin" --layer "$work/kfs/etc:/etc" \
    --layer "$work/kfs/home:/home" --user 1000 --workdir /home/model-server \
    --env PATH=/home/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PYTHONUNBUFFERED=TRUE --env TEMP=/home/model-server/tmp
  mv "$tar_.tmp" "$tar_"
fi
tar_=$out/storage-initializer.oci.tar
if [ ! -f "$tar_" ]; then
  scripts "$storage" /prod_venv "$work/si"; etc "$work/si" kserve /home/kserve
  mkdir -p "$work/si/entry/scripts" "$work/si/work"
  cp "$mod/python/storage-initializer/scripts/initializer-entrypoint" "$work/si/entry/scripts/"
  chmod 755 "$work/si/entry/scripts/initializer-entrypoint"
  nice -n 10 python3 "$box/kubelet/mkimage.py" "$base" "docker.io/kserve/storage-initializer:$kv" "$tar_.tmp" \
    --uncompressed --layer "$storage_python_home:$storage_python_home" --layer "$storage:/prod_venv" \
    --layer "$work/si/bin:/prod_venv/bin" --layer "$work/si/etc:/etc" \
    --layer "$work/si/entry:/storage-initializer" --user 1000 --workdir /work \
    --entrypoint /storage-initializer/scripts/initializer-entrypoint \
    --env PATH=/prod_venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env VIRTUAL_ENV=/prod_venv
  mv "$tar_.tmp" "$tar_"
fi
echo "images in $out ($(( $(date +%s) - t0 )) s): $(du -sh "$out"/*.oci.tar | awk '{print $2 "=" $1}' | xargs)"
