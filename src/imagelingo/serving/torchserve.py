"""A local TorchServe over a packaged model store, bound to 127.0.0.1 (`imagelingo serve`, tests).

It runs the pod's PID 1 (pod_entrypoint.py: the protocol's front, TorchServe behind it) and
reuses the packaged config/config.properties (batching, workers, limits); it only swaps the
addresses, ports and model store path for local ones.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from imagelingo.errors import ImageLingoError
from imagelingo.serving.process import ServerProcess
from imagelingo.serving.store import model_names, store_properties

POD_ENTRYPOINT = Path(__file__).with_name("pod_entrypoint.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalTorchServe(ServerProcess):
    """Start with `start()` (returns when every model has a ready worker), stop with `stop()`."""

    def __init__(
        self, store_dir: Path, workdir: Path, port: int | None = None, front: bool = True
    ) -> None:
        """`front=False`: TorchServe alone on the port, without the protocol front (the
        serving benchmark's measure of what the front costs)."""
        self.store_dir, self.workdir = Path(store_dir).resolve(), Path(workdir).resolve()
        self.front = front
        self.properties = store_properties(self.store_dir)
        self.models = model_names(self.properties)
        self.port = port or free_port()
        self.management_port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.process: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        local = {
            **self.properties,
            "inference_address": self.url,
            "management_address": self.management_url,
            "metrics_address": f"http://127.0.0.1:{self.metrics_port}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_inference_port": str(free_port()),
            "grpc_management_address": "127.0.0.1",
            "grpc_management_port": str(free_port()),
            "model_store": str(self.store_dir / "model-store"),
        }
        path = self.workdir / "config.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in local.items()))
        return path

    def start(self, timeout_s: float = 120.0) -> LocalTorchServe:
        if shutil.which("java") is None:
            raise ImageLingoError("TorchServe needs Java 17+ on PATH (`java` not found)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        # the pod's PID 1 (pod_entrypoint.py): the protocol's front on self.url, TorchServe
        # behind it on a loopback port, as in the runtime pod and the standalone image
        command = [sys.executable, str(POD_ENTRYPOINT), "serve", "--no-config-snapshots"]
        command += [f"--ts-config={config}", f"--model-store={self.store_dir / 'model-store'}"]
        command += [f"--workdir={self.workdir}"]
        if not self.front:
            torchserve = Path(sys.executable).parent / "torchserve"
            command = [str(torchserve), "--start", "--foreground", "--ncs", "--ts-config"]
            command += [str(config), "--model-store", str(self.store_dir / "model-store")]
        env = {**os.environ, "LOG_LOCATION": str(self.workdir / "logs")}
        env["METRICS_LOCATION"] = str(self.workdir / "logs")
        # TorchServe keeps one pid file in the temp dir and refuses to start while it names a
        # live server: a temp dir per server lets several run side by side.
        (self.workdir / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(self.workdir / "tmp")
        # The Python workers must find this interpreter's torch first.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.log = open(self.workdir / "torchserve.log", "wb")
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stop() can end the Java frontend and its workers together
        )
        self.wait_ready(timeout_s)
        return self

    def _ready(self) -> bool:
        for model in self.models:
            try:
                url = f"{self.management_url}/models/{model}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    workers = json.load(response)[0].get("workers", [])
            except (OSError, ValueError, IndexError):
                return False
            if not any(w.get("status") == "READY" for w in workers):
                return False
        return True

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ImageLingoError(
                    f"TorchServe exited with code {self.process.returncode}; "
                    f"see {self.workdir / 'torchserve.log'} and {self.workdir / 'logs'}"
                )
            if self._ready():
                return
            time.sleep(0.5)
        self.stop()
        raise ImageLingoError(
            f"TorchServe was not ready within {timeout_s:.0f} s; see {self.workdir / 'logs'}"
        )
