"""The standalone serving image (serving/Dockerfile): it copies exactly what `imagelingo package`
writes, and that config, with the image's environment, starts a real TorchServe that captions."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imagelingo.config import REPO_ROOT
from imagelingo.data.dataset import load_records
from imagelingo.serving.client import caption_remote
from imagelingo.serving.process import ServerProcess
from imagelingo.serving.torchserve import free_port, read_properties

DOCKERFILE = (REPO_ROOT / "serving" / "Dockerfile").read_text()


def image_cmd() -> list[str]:
    text = DOCKERFILE.split("\nCMD ", 1)[1].replace("\\\n", " ")
    return json.loads(text[: text.index("]") + 1])


def image_env() -> dict[str, str]:
    block = DOCKERFILE.split("\nENV ", 1)[1].split("\nEXPOSE", 1)[0]
    return dict(re.findall(r"(TS_\w+)=(\S+)", block))


def test_image_copies_the_packaged_store_and_config_and_runs_it():
    copies = re.findall(r"^COPY \S+ \$\{MODEL_STORE\}/(\S+) (\S+)$", DOCKERFILE, flags=re.M)
    assert copies == [
        ("model-store", "/home/model-server/model-store"),
        ("config/config.properties", "/home/model-server/config.properties"),
    ]
    command = image_cmd()
    assert command[0] == "torchserve" and "--foreground" in command
    assert command[command.index("--ts-config") + 1] == "/home/model-server/config.properties"
    assert command[command.index("--model-store") + 1] == "/home/model-server/model-store"
    assert image_env()["TS_INFERENCE_ADDRESS"].endswith(":8080")


def test_packaged_properties_let_the_environment_override_every_key_the_image_sets(model_store):
    properties = read_properties(model_store / "config" / "config.properties")
    assert properties["enable_envvars_config"] == "true"
    for name in image_env():
        assert name[3:].lower() in properties, name


@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java")
def test_packaged_config_with_the_image_environment_serves(model_store, pipeline_dirs, tmp_path):
    port = free_port()
    env = {**os.environ, **image_env()}
    env |= {  # the image's settings, bound to 127.0.0.1 on free ports for the test
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{port}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{free_port()}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{free_port()}",
        "TS_GRPC_INFERENCE_ADDRESS": "127.0.0.1",
        "TS_GRPC_INFERENCE_PORT": str(free_port()),
        "TS_GRPC_MANAGEMENT_ADDRESS": "127.0.0.1",
        "TS_GRPC_MANAGEMENT_PORT": str(free_port()),
        "LOG_LOCATION": str(tmp_path / "logs"),
        "METRICS_LOCATION": str(tmp_path / "logs"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    server = ServerProcess()
    server.log = open(tmp_path / "torchserve.log", "wb")
    # the image's CMD, with its paths mapped to the packaged store
    paths = {
        "/home/model-server/config.properties": str(model_store / "config" / "config.properties"),
        "/home/model-server/model-store": str(model_store / "model-store"),
        "torchserve": str(Path(sys.executable).parent / "torchserve"),
    }
    server.process = subprocess.Popen(
        [paths.get(arg, arg) for arg in image_cmd()],
        cwd=tmp_path,
        env=env,
        stdout=server.log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = (pipeline_dirs["dataset"] / "images" / record.image).read_bytes()
    try:
        deadline, caption = time.monotonic() + 120, None
        while caption is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    caption = caption_remote(url, [image])[0]["caption"]
            except Exception:
                time.sleep(1)
        assert caption, (tmp_path / "torchserve.log").read_text()[-3000:]
    finally:
        server.stop()
