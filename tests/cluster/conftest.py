"""`make cluster-check`: the component images rehearsed in virtual environments (see
image_envs.py). These tests build two fresh environments (~2-3 minutes), so `make test` leaves
them out and `make cluster-check` (which .ci/run runs after `make test`) runs them."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imagelingo.serving.torchserve import free_port

if os.environ.get("IMAGELINGO_CLUSTER_CHECK") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend, proxied artifact store),
    started from the test venv: the component environments only talk to it over HTTP."""
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
