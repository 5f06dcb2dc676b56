#!/usr/bin/env bash
# The venv of KServe's storage-initializer image from KServe 0.16 on, where it is its own package
# (`kserve_storage`, the kserve module's python/storage at the tag; the entrypoint imports it):
# as python/storage-initializer.Dockerfile builds /prod_venv (PYTHON_VERSION=3.11; `uv sync
# --extra confidential` from storage/uv.lock, then the package itself), made with pyenv's 3.11
# and the lock exported by uv (PyPI). Left out: the Dockerfile's kerberos/HDFS extras
# (krbcontext, hdfs, requests-kerberos need gcc and libkrb5-dev; the box reads S3 only).
#   box/kserve/storage-venv.sh v0.20.0 OUT   (box/kserve/images.sh calls it; ~1 min, once)
set -euo pipefail
kv=${1:?usage: storage-venv.sh KSERVE_VERSION OUT} out=${2:?OUT}
[ ! -f "$out/.box-complete" ] || exit 0
src=$(go env GOMODCACHE)/github.com/kserve/kserve@$kv/python/storage
[ -f "$src/uv.lock" ] || go mod download "github.com/kserve/kserve@$kv"
[ -f "$src/uv.lock" ] || { echo "$src/uv.lock: KServe $kv has no storage package" >&2; exit 1; }
py=${PYTHON311:-$(pyenv root 2>/dev/null)/versions/3.11.7/bin/python3.11}
[ -x "$py" ] || { echo "no Python 3.11 at $py (PYTHON311=...)" >&2; exit 1; }
work=$(mktemp -d /tmp/box-storage-venv.XXXXXX); trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/storage" && chmod -R u+w "$work/storage"   # the module cache is read-only
python3 -m venv "$work/uv" && "$work/uv/bin/pip" install -q uv
(cd "$work/storage" && "$work/uv/bin/uv" export --frozen --extra confidential --no-hashes \
  --no-emit-project > "$work/locked.txt")
rm -rf "$out" && "$py" -m venv "$out"
"$out/bin/pip" install -q --disable-pip-version-check -r "$work/locked.txt"
"$out/bin/pip" install -q --disable-pip-version-check --no-deps "$work/storage[confidential]"
"$out/bin/python" -c 'import kserve_storage, importlib.metadata as m; print("kserve-storage", m.version("kserve-storage"))'
touch "$out/.box-complete"
