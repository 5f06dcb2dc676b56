"""Shared fixtures: a small synthetic dataset taken through ingest -> vocab -> features once per
session, an MLflow sqlite store in a temporary folder, a real MLflow server for the tests that
need one, and the path of the real Flickr8k copy. Also the `slow` mark of the tests that use a
fixture training a model or starting a server (tests/tiers.py), and the guard against a test
that does so inline without the mark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiers import SLOW_FIXTURES, WALKTHROUGH_FIXTURES, unmarked_work

from imagelingo.data.synthetic import generate_synthetic
from imagelingo.features import FeaturesConfig, extract_features
from imagelingo.ingest import ingest
from imagelingo.serving.torchserve import free_port
from imagelingo.train import TrainConfig, train
from imagelingo.vocab import build_vocab_stage

FLICKR8K = Path(
    os.environ.get("FLICKR8K_DIR", Path(__file__).resolve().parents[2] / "shared" / "flickr8k")
)
needs_flickr8k = pytest.mark.skipif(
    not (FLICKR8K / "Flickr8k.token.txt").is_file(),
    reason=f"real Flickr8k copy not found at {FLICKR8K}",
)
SYNTHETIC_IMAGES = 240
# tests/cluster rehearses the component images: it builds two fresh environments (minutes), so
# `make test` leaves it out and `make cluster-check` (which .ci/run runs after it) runs it. A
# second conftest.py there would shadow this one as the `conftest` module the tests import.
if os.environ.get("IMAGELINGO_CLUSTER_CHECK") != "1":
    collect_ignore_glob = ["cluster/*"]


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test using a fixture of SLOW_FIXTURES; refuse to run a test that trains
    or serves without the mark (it would run in `make test-fast`)."""
    unmarked = []
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if WALKTHROUGH_FIXTURES.keys() & fixtures:
            item.add_marker(pytest.mark.walkthrough)
        if SLOW_FIXTURES.keys() & fixtures:
            item.add_marker(pytest.mark.slow)
        elif not item.get_closest_marker("slow") and (work := unmarked_work(item)):
            unmarked.append(f"  {item.nodeid}: {work}")
    if unmarked:
        raise pytest.UsageError(
            "tests that train a model or start a server must be marked slow: add "
            "@pytest.mark.slow, or list the fixture in SLOW_FIXTURES (tests/tiers.py)\n"
            + "\n".join(unmarked)
        )


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory) -> str:
    """Every MLflow write in the tests goes to a throw-away sqlite store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory) -> Path:
    """A synthetic dataset in the raw Flickr8k layout (images/, token file, split files)."""
    return generate_synthetic(
        tmp_path_factory.mktemp("raw") / "synthetic", SYNTHETIC_IMAGES, seed=0
    )


@pytest.fixture(scope="session")
def pipeline_dirs(tmp_path_factory, synthetic_source) -> dict[str, Path]:
    """ingest -> vocab -> features on the synthetic data, shared by the training tests."""
    root = tmp_path_factory.mktemp("pipeline")
    dirs = {name: root / name for name in ("dataset", "vocab", "features")}
    ingest(str(synthetic_source), dirs["dataset"], root / "cache")
    build_vocab_stage(dirs["dataset"], dirs["vocab"], min_freq=1)
    extract_features(
        dirs["dataset"], dirs["features"], FeaturesConfig(batch_size=16, num_workers=0)
    )
    dirs["vocab_file"] = dirs["vocab"] / "vocab.json"
    return dirs


@pytest.fixture(scope="session")
def trained_model(pipeline_dirs, tmp_path_factory) -> Path:
    """A decoder trained briefly (6 short epochs, about 20 s) on the synthetic scenes."""
    out = tmp_path_factory.mktemp("model")
    brief = TrainConfig(epochs=6, batch_size=32, lr=1e-3, lr_decay=1.0, patience=6, scst_epochs=0)
    train(
        pipeline_dirs["dataset"], pipeline_dirs["vocab_file"], pipeline_dirs["features"], out, brief
    )
    return out


@pytest.fixture(scope="session")
def model_store(trained_model, tmp_path_factory) -> Path:
    """The briefly trained model packaged as a KServe model store (MAR + config.properties)."""
    from imagelingo.serving.package import ServingConfig, package_model

    out = tmp_path_factory.mktemp("store")
    package_model(trained_model, out, ServingConfig(batch_size=8, max_batch_delay_ms=50))
    return out


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 API on 127.0.0.1, with throw-away credentials."""
    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def bucket(s3_server):
    """A `models` bucket on moto for deploy's model stores; its storage URI."""
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="models")
    return "s3://models/imagelingo"


@pytest.fixture
def uploaded(s3_server, bucket):
    """What is in the `models` bucket now, key by key."""
    import boto3

    def keys() -> list[str]:
        listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="models")
        return [o["Key"] for o in listed.get("Contents", [])]

    return keys


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend, proxied artifact store); the
    registry tests and the component-image environments (tests/cluster) talk to it over HTTP."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"MLflow server not healthy: {(root / 'server.log').read_text()[-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()
