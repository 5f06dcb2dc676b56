"""Build an OCI image archive (oci-layout + index.json + blobs, as a tar) from a folder, with no
registry and no container engine, for `ctr -n k8s.io images import --all-platforms FILE`.

    python3 mkimage.py ROOTFS_DIR NAME:TAG OUT.tar [--entrypoint CMD ...] [--env K=V ...]
        [--workdir DIR] [--user UID] [--layer DIR:/DEST ...] [--uncompressed]

Layers (gzip level 1, or plain tar with --uncompressed): the folder's tree, then each --layer,
all owned by root (uid/gid 0), mtimes kept, file capabilities (xattr security.capability, as
`setcap` leaves them) kept as PAX SCHILY.xattr records. Formats: OCI image spec
v1.0 (image-layout.md: oci-layout, index.json, blobs/sha256/; manifest.md; config.md). The
annotation org.opencontainers.image.ref.name on the index entry gives containerd the name
(containerd 1.6 pkg/images/archive/importer.go reads it, io.containerd.image.name too).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import time


class _Digest:
    """A write-only file that hashes what passes through it to `out`."""

    def __init__(self, out) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data) if self.out else len(data)

    def flush(self) -> None:
        pass


def _layer(rootfs: str, path: str, compress: bool, dest: str = "") -> tuple[str, str, int]:
    """Writes the layer to `path` streaming (a venv of GBs never sits in memory); returns
    (diff_id, digest, size): diff_id of the tar, digest and size of what is stored."""
    with open(path, "wb") as f:
        stored = _Digest(f)
        gz = None
        if compress:
            gz = gzip.GzipFile(fileobj=stored, mode="wb", compresslevel=1, mtime=0)
        raw = _Digest(gz or stored)
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            parts = [p for p in dest.split("/") if p]
            for i in range(len(parts)):  # the folders that hold DEST
                info = tarfile.TarInfo("/".join(parts[: i + 1]))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for top, dirs, files in os.walk(rootfs):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    full = os.path.join(top, name)
                    info = tar.gettarinfo(
                        full, arcname=os.path.join(*parts, os.path.relpath(full, rootfs))
                    )
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    try:  # e.g. CoreDNS's Dockerfile: setcap cap_net_bind_service=+ep /coredns
                        cap = os.getxattr(full, "security.capability", follow_symlinks=False)
                        info.pax_headers["SCHILY.xattr.security.capability"] = cap.decode(
                            "utf-8", "surrogateescape"
                        )
                    except OSError:
                        pass
                    if info.isfile():
                        with open(full, "rb") as data:
                            tar.addfile(info, data)
                    else:
                        tar.addfile(info)
        if gz:
            gz.close()
    return ("sha256:" + raw.sha.hexdigest(), "sha256:" + stored.sha.hexdigest(), stored.size)


def build(
    rootfs: str,
    ref: str,
    out: str,
    entrypoint: list[str],
    env: list[str],
    workdir: str,
    user: str,
    compress: bool = True,
    extra: list[str] = (),
) -> None:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    layers, diff_ids = [], []  # (path, digest), base first
    for i, spec in enumerate([rootfs + ":/", *extra]):
        folder, dest = spec.rsplit(":", 1)
        layer_path = f"{out}.layer{i}"
        diff_id, digest, size = _layer(folder, layer_path, compress, dest)
        layers.append((layer_path, {"mediaType": media, "digest": digest, "size": size}))
        diff_ids.append(diff_id)
    config = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint or None,
            "Env": env or None,
            "WorkingDir": workdir,
            "User": user,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor for _, descriptor in layers],
    }
    entry = blob(json.dumps(manifest).encode(), manifest["mediaType"])
    entry["annotations"] = {
        "org.opencontainers.image.ref.name": ref,
        "io.containerd.image.name": ref,
    }
    entry["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "manifests": [entry]}
    with tarfile.open(out, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":")[1], data)
        for layer_path, descriptor in layers:
            tar.add(layer_path, "blobs/sha256/" + descriptor["digest"].split(":")[1])
            os.unlink(layer_path)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ("rootfs", "ref", "out"):
        p.add_argument(name)
    p.add_argument("--entrypoint", nargs="*", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--user", default="")
    p.add_argument("--uncompressed", action="store_true", help="tar layers, no gzip (faster)")
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="DIR:/DEST",
        help="one more layer: DIR's tree at DEST (e.g. a venv at /opt/venv)",
    )
    a = p.parse_args()
    build(
        a.rootfs, a.ref, a.out, a.entrypoint, a.env, a.workdir, a.user, not a.uncompressed, a.layer
    )
