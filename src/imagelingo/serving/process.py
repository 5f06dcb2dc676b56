"""A server running as a child process group on 127.0.0.1: stop it and all its workers together."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import IO, Self


class ServerProcess:
    """Subclasses set `self.process` (started with start_new_session=True) and `self.log`."""

    process: subprocess.Popen | None = None
    log: IO[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
