"""Start a served model on 127.0.0.1 and wait until it answers: TorchServe or the kserve SDK.

Both come back as an object with `.url` (the KServe REST base URL) and `.stop()`, and work as
context managers. Used by `imagelingo serve`, the demo, the tests and the serving benchmark.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from imagelingo.errors import ImageLingoError
from imagelingo.serving.process import ServerProcess
from imagelingo.serving.torchserve import LocalTorchServe, free_port

RUNTIMES = ("torchserve", "kserve")


class LocalKServe(ServerProcess):
    """The native predictor (`imagelingo serve --runtime kserve`) in a child process."""

    def __init__(self, store_dir: Path, workdir: Path, port: int | None = None) -> None:
        self.store_dir, self.workdir = Path(store_dir).resolve(), Path(workdir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> LocalKServe:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "imagelingo.cli", "serve", "--runtime", "kserve"]
        command += [str(self.store_dir), "--port", str(self.port), "--workdir", str(self.workdir)]
        self.log = open(self.workdir / "kserve.log", "wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ImageLingoError(
                    f"kserve predictor exited with code {self.process.returncode}; "
                    f"see {self.workdir / 'kserve.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ImageLingoError(f"kserve predictor not ready within {timeout_s:.0f} s")


def local_server(
    runtime: str, store_dir: Path, workdir: Path, port: int | None = None
) -> LocalTorchServe | LocalKServe:
    """An unstarted local server of the given runtime over a packaged model store."""
    if runtime == "torchserve":
        return LocalTorchServe(store_dir, Path(workdir) / "torchserve", port)
    if runtime == "torchserve-direct":  # no protocol front: for the serving benchmark only
        return LocalTorchServe(store_dir, Path(workdir) / "torchserve", port, front=False)
    if runtime == "kserve":
        return LocalKServe(store_dir, Path(workdir) / "kserve", port)
    raise ImageLingoError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
