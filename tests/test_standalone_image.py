"""The standalone serving image (serving/Dockerfile): it copies exactly what `imagelingo package`
writes, laid out as KServe mounts it, and starts TorchServe as the imagelingo-torchserve
ServingRuntime does. That config, with TS_* variables in the environment that would break it if
they were honoured, starts a real TorchServe that captions and refuses model registration."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from imagelingo.config import REPO_ROOT
from imagelingo.data.dataset import load_records
from imagelingo.serving.client import caption_remote
from imagelingo.serving.process import ServerProcess
from imagelingo.serving.store import read_properties
from imagelingo.serving.torchserve import free_port

DOCKERFILE = (REPO_ROOT / "serving" / "Dockerfile").read_text()
MOUNT = "/mnt/models"


def image_cmd() -> list[str]:
    text = DOCKERFILE.split("\nCMD ", 1)[1].replace("\\\n", " ")
    return json.loads(text[: text.index("]") + 1])


def option(command: list[str], name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}="))


def test_image_copies_the_packaged_store_and_direct_config_and_runs_it():
    copies = re.findall(r"^COPY \S+ \$\{MODEL_STORE\}/(\S+) (\S+)$", DOCKERFILE, flags=re.M)
    assert copies == [
        ("model-store", f"{MOUNT}/model-store"),
        ("config/direct.properties", f"{MOUNT}/config/direct.properties"),
        ("config/entrypoint.py", f"{MOUNT}/config/entrypoint.py"),
        # the entrypoint's protocol front and the module it imports (serving/pod_front.py)
        ("config/pod_front.py", f"{MOUNT}/config/pod_front.py"),
        ("config/oip.py", f"{MOUNT}/config/oip.py"),
    ]
    command = image_cmd()
    # the imagelingo-torchserve ServingRuntime's command + args, less the InferenceService name
    assert command == [
        "python",
        f"{MOUNT}/config/entrypoint.py",
        "serve",
        f"--model-store={MOUNT}/model-store",
        f"--ts-config={MOUNT}/config/direct.properties",
    ]
    assert not re.search(r"^ENV ", DOCKERFILE, flags=re.M)  # the config ignores TS_* anyway


def test_image_starts_torchserve_as_the_serving_runtime_does():
    runtime = yaml.safe_load((REPO_ROOT / "manifests" / "base" / "servingruntime.yaml").read_text())
    assert runtime["metadata"]["name"] == "imagelingo-torchserve"
    container = runtime["spec"]["containers"][0]
    # KServe names the model after the InferenceService ({{.Name}}); the image keeps the
    # packaged name
    runtime_command = container["command"] + container["args"]
    assert [a for a in runtime_command if a != "--model-name={{.Name}}"] == image_cmd()


def test_direct_config_serves_on_the_exposed_port(model_store):
    properties = read_properties(model_store / "config" / "direct.properties")
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["model_store"] == f"{MOUNT}/model-store"
    assert re.search(r"^EXPOSE 8080 8082$", DOCKERFILE, flags=re.M)
    assert properties["metrics_address"].endswith(":8082")


ADDRESSES = ("inference_address", "management_address", "metrics_address")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java")
def test_direct_config_serves_and_ignores_the_environment(model_store, pipeline_dirs, tmp_path):
    # direct.properties as packaged, with only its listeners moved to free ports on 127.0.0.1
    ports = {key: free_port() for key in ADDRESSES}
    text = (model_store / "config" / "direct.properties").read_text()
    for key, port in ports.items():
        text, count = re.subn(
            rf"^{key}=http://[\d.]+:\d+$", f"{key}=http://127.0.0.1:{port}", text, flags=re.M
        )
        assert count == 1, key
    for key in ("grpc_inference_port", "grpc_management_port"):
        text = re.sub(rf"^{key}=\d+$", f"{key}={free_port()}", text, flags=re.M)
    config = tmp_path / "direct.properties"
    config.write_text(text)
    decoy = free_port()
    env = {
        **os.environ,
        # what KServe sets on a TorchServe predictor, and overrides that would break the test
        "TS_SERVICE_ENVELOPE": "kserve",
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{decoy}",
        "TS_ENABLE_MODEL_API": "true",
        "TS_ALLOWED_URLS": "https?://.*",
        "LOG_LOCATION": str(tmp_path / "logs"),
        "METRICS_LOCATION": str(tmp_path / "logs"),
        "TMPDIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    paths = {
        f"--ts-config={MOUNT}/config/direct.properties": f"--ts-config={config}",
        f"--model-store={MOUNT}/model-store": f"--model-store={model_store / 'model-store'}",
        "python": sys.executable,
        f"{MOUNT}/config/entrypoint.py": str(model_store / "config" / "entrypoint.py"),
    }
    server = ServerProcess()
    server.log = open(tmp_path / "torchserve.log", "wb")
    server.process = subprocess.Popen(
        [paths.get(arg, arg) for arg in image_cmd()],
        cwd=tmp_path,
        env=env,
        stdout=server.log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{ports['inference_address']}"
    management = f"http://127.0.0.1:{ports['management_address']}"
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
        # the handler got the raw body (no envelope): a wrong envelope is our 400, not a 500
        request = urllib.request.Request(
            f"{url}/v1/models/imagelingo:predict",
            data=json.dumps({"image": "x"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 400 and "instances" in error.value.read().decode()
        # Describe Model (what the 0.12 kserve wrapper polls) works; registering does not
        with urllib.request.urlopen(f"{management}/models/imagelingo", timeout=10) as response:
            assert json.load(response)[0]["modelName"] == "imagelingo"
        register = urllib.request.Request(
            f"{management}/models?url=https://example.com/evil.mar", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(register, timeout=10)
        assert error.value.code == 405
        with pytest.raises(OSError):  # TS_INFERENCE_ADDRESS was not honoured
            urllib.request.urlopen(f"http://127.0.0.1:{decoy}/ping", timeout=2)
    finally:
        server.stop()
