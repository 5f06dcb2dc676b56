"""The runtime rehearsal's inputs, prepared outside the namespaces: the runtime environment's
versions, the kserve wrapper as the stock image holds it, the model, the probe images."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import FLICKR8K, PROTO, REPO, STOCK_RUNTIME, WRAPPER, log


def kfs_versions(python: Path) -> dict[str, str]:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "names = ['torch', 'torchvision', 'torchserve', 'kserve', 'grpcio', 'grpcio-tools',"
        " 'protobuf', 'pillow', 'numpy', 'fastapi', 'uvicorn', 'httpx']\n"
        "v = {n: m.version(n) for n in names}\n"
        "v['python'] = sys.version.split()[0]\n"
        "print(json.dumps(v))\n"
    )
    versions = json.loads(subprocess.check_output([str(python), "-c", code], text=True))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    versions["java"] = java.splitlines()[0] if java else "?"
    return versions


def prepare_wrapper(python: Path, home: Path) -> dict:
    """/home/model-server/kserve_wrapper as the image's Dockerfile builds it."""
    target = home / "kserve_wrapper"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for source in sorted(WRAPPER.glob("*.py")):
        shutil.copy2(source, target / source.name)
    shutil.copy2(PROTO, target / PROTO.name)
    # The Dockerfile also compiles management.proto, which this reference does not hold: no
    # wrapper module imports management_pb2*, so the stubs of inference.proto are all it uses.
    imports = sorted(
        set(re.findall(r"^\s*(?:from|import)\s+(\w+_pb2\w*)", _read_all(target), flags=re.M))
    )
    if any(name.startswith("management") for name in imports):
        raise SystemExit(f"the wrapper imports {imports}: management.proto is needed")
    started = time.monotonic()
    subprocess.run(
        [
            str(python),
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={target}",
            f"--python_out={target}",
            f"--grpc_python_out={target}",
            str(target / PROTO.name),
        ],
        check=True,
    )
    return {"pb2_imports": imports, "protoc_s": round(time.monotonic() - started, 1)}


def _read_all(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob("*.py")))


def choose_model(explicit: Path | None, work: Path) -> tuple[Path, str]:
    if explicit:
        return explicit, f"given: {explicit}"
    # metadata.json is written when training ends (config.json already after the first epoch)
    for candidate in sorted(REPO.glob("runs/*/model/metadata.json")):
        if (candidate.parent / "config.json").is_file():
            return candidate.parent, f"trained model {candidate.parent.relative_to(REPO)}"
    return train_small_model(work / "synthetic"), "small model trained here on synthetic data"


def train_small_model(root: Path) -> Path:
    """No trained model under runs/: a brief one on generated scenes (about a minute)."""
    sys.path.insert(0, str(REPO / "src"))
    from imagelingo.data.synthetic import generate_synthetic
    from imagelingo.features import FeaturesConfig, extract_features
    from imagelingo.ingest import ingest
    from imagelingo.train import TrainConfig, train
    from imagelingo.vocab import build_vocab_stage

    model = root / "model"
    if (model / "config.json").is_file():
        return model
    log("no trained model under runs/: training a small one on synthetic data")
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # not ./mlflow.db
    source = generate_synthetic(root / "raw", 240, seed=0)
    ingest(str(source), root / "dataset", root / "cache")
    build_vocab_stage(root / "dataset", root / "vocab", min_freq=1)
    extract_features(
        root / "dataset", root / "features", FeaturesConfig(batch_size=16, num_workers=0)
    )
    brief = TrainConfig(epochs=6, batch_size=32, lr=1e-3, lr_decay=1.0, patience=6)
    train(root / "dataset", root / "vocab" / "vocab.json", root / "features", model, brief)
    return model


def probe_images(work: Path) -> tuple[list[bytes], str]:
    test_list = FLICKR8K / "Flickr_8k.testImages.txt"
    if test_list.is_file():
        names = test_list.read_text().split()[:2]
        return [(FLICKR8K / "images" / n).read_bytes() for n in names], f"Flickr8k test {names}"
    from PIL import Image

    images = []
    for colour in ("red", "navy"):
        buffer = io.BytesIO()
        Image.new("RGB", (224, 224), colour).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    return images, "generated 224x224 JPEGs (no Flickr8k copy found)"


def stock_runtime_args() -> list[str]:
    import yaml

    runtime = yaml.safe_load(STOCK_RUNTIME.read_text())
    return list(runtime["spec"]["containers"][0]["args"])


def mix_images(count: int = 200) -> tuple[list[bytes], str]:
    """The images the pod rounds caption alone and in batch mixes (issue 30): the first `count`
    Flickr8k test images, else generated ones (colours and noise, each different)."""
    test_list = FLICKR8K / "Flickr_8k.testImages.txt"
    if test_list.is_file():
        names = test_list.read_text().split()[:count]
        return [(FLICKR8K / "images" / n).read_bytes() for n in names], f"{count} Flickr8k test"
    import random

    from PIL import Image

    rng = random.Random(0)
    images = []
    for _ in range(24):
        buffer = io.BytesIO()
        pixels = bytes(rng.randrange(256) for _ in range(64 * 64 * 3))
        Image.frombytes("RGB", (64, 64), pixels).resize((224, 224)).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    return images, "24 generated noise JPEGs (no Flickr8k copy found)"
