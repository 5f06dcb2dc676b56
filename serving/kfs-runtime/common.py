"""Paths and names every part of the runtime rehearsal (rehearse.py) shares."""

from __future__ import annotations

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


REFERENCE = Path(
    os.environ.get("IMAGELINGO_CLUSTER_REFERENCE", REPO.parent / "shared" / "cluster-reference")
)


TS_KFS = REFERENCE / "torchserve-kfs" / "v0.9.0"


WRAPPER = TS_KFS / "kubernetes" / "kserve" / "kserve_wrapper"


PROTO = TS_KFS / "frontend" / "server" / "src" / "main" / "resources" / "proto" / "inference.proto"


STOCK_RUNTIME = REFERENCE / "kserve-runtimes/v0.20.0/config/runtimes/kserve-torchserve.yaml"


FLICKR8K = Path(os.environ.get("FLICKR8K_DIR", REPO.parent / "shared" / "flickr8k"))


MOUNT = Path("/mnt/models")


MODEL = "imagelingo"


MANAGEMENT = "http://127.0.0.1:8083"  # both packaged configs (serving/package.py)


OVERSIZE_BYTES = 11 * 1024 * 1024  # over the documented 10 MiB (protocol.MAX_REQUEST_BYTES)


def log(message: str) -> None:
    print(f"[rehearsal {time.strftime('%H:%M:%S')}] {message}", flush=True)
