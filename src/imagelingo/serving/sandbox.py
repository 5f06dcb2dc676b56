"""A container as a kubelet's runtime starts it, on this machine: its command as PID 1 of a new
PID namespace (so signals reach it as they reach a container's PID 1: the kernel drops those
whose action is the default), with its own mount namespace in which volumes are bind-mounted
(read-only where the pod spec says so), under its runAsUser, in its workingDir, with its env.
Optionally a network namespace of its own (only loopback); otherwise it shares the caller's, as
the containers of one pod share theirs. Used by the runtime rehearsal (serving/kfs-runtime) and
the tests of the runtime's PID 1 (tests/test_pod_runtime.py). Needs root (unshare, mount).

    with Sandbox(["python", "x.py"], mounts=[Mount("/mnt/models", store, read_only=True)]) as c:
        c.exec(["python", "x.py", "ready"])        # what `kubectl exec` / an exec probe runs
        c.terminate()                                 # SIGTERM to PID 1, as the kubelet sends it
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imagelingo.errors import ImageLingoError

# Folders a tmpfs may cover (in the container's mount namespace only) to hold mount points that
# do not exist on this machine: /mnt/models, /home/model-server/...
TMPFS_HOLDERS = ("/mnt", "/home")


@dataclass
class Mount:
    target: str
    source: str
    read_only: bool = False


@dataclass
class Spec:
    command: list[str]
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int | None = None
    gid: int | None = None


def available() -> str | None:
    """None if containers can be run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (unshare --pid/--mount, mount --bind)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    return None


class Sandbox:
    """Start with `start()` (or `with`); `pid` is PID 1's process id on this machine."""

    def __init__(self, spec: Spec, log_path: Path, private_network: bool = False) -> None:
        self.spec, self.log_path, self.private_network = spec, Path(log_path), private_network
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.killed = False  # SIGKILL was needed: PID 1 outlived the grace period
        self.log = None

    def start(self) -> Sandbox:
        why = available()
        if why:
            raise ImageLingoError(f"cannot run a container here: {why}")
        unshare = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]
        unshare += ["--propagation", "private"] + (["--net"] if self.private_network else [])
        setup = [sys.executable, "-m", "imagelingo.serving.sandbox", json.dumps(asdict(self.spec))]
        self.log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.process = subprocess.Popen(
            unshare + setup, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 10
        while self.pid is None and time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            try:
                found = children.read_text().split()
            except OSError:
                found = []
            if found:
                self.pid = int(found[0])
            elif self.process.poll() is not None:
                raise ImageLingoError(f"container did not start; see {self.log_path}")
            else:
                time.sleep(0.01)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exec(self, command: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run `command` in the container's namespaces, user, env and cwd (an exec probe)."""
        user = []
        if self.spec.uid is not None:
            user = [f"--setuid={self.spec.uid}", f"--setgid={self.spec.gid or self.spec.uid}"]
        enter = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--net", *user]
        enter += ["--wd", "env", "-i"]  # --wd alone: the cwd of PID 1
        enter += [f"{k}={v}" for k, v in self.spec.env.items()]
        return subprocess.run(
            enter + command, capture_output=True, text=True, timeout=timeout, check=False
        )

    def terminate(self, grace_s: float) -> float:
        """SIGTERM to PID 1, SIGKILL after grace_s as the kubelet does; seconds until PID 1 (and
        so the whole PID namespace) was gone."""
        started = time.monotonic()
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                self.process.wait()
        self.exit_code = self.process.returncode
        return round(time.monotonic() - started, 2)

    def stop(self) -> None:
        if self.running():
            self.terminate(grace_s=0)
        if self.log:
            self.log.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _expose_pyenv() -> None:
    """/root is mode 700 on this machine, and the interpreters of pyenv that venvs link to live
    under it: in this mount namespace only, a tmpfs (mode 711) covers /root, with /root/.pyenv
    bound back, so that another user can run them (ENVIRONMENT.md)."""
    pyenv = Path("/root/.pyenv")
    if not pyenv.is_dir():
        return
    stash = Path(tempfile.mkdtemp(prefix="sandbox-pyenv-"))
    subprocess.run(["mount", "--bind", str(pyenv), str(stash)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=711", "tmpfs", "/root"], check=True)
    pyenv.mkdir()
    subprocess.run(["mount", "--move", str(stash), str(pyenv)], check=True)
    stash.rmdir()


def _setup_and_exec(spec: Spec) -> None:
    """Inside the new namespaces: loopback up, volumes mounted, user dropped, then exec the
    command, which so becomes PID 1."""
    if Path("/proc/self/net/dev").read_text().count(":") == 1:  # a fresh network namespace
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if spec.uid not in (None, 0) and not os.stat("/root").st_mode & 0o001:
        _expose_pyenv()
    # each source held open first: a mount over /tmp must not hide a source that lives there
    sources = [os.open(m.source, os.O_PATH | os.O_DIRECTORY) for m in spec.mounts]
    covered: set[Path] = set()
    for mount, source in zip(spec.mounts, sources, strict=True):
        target = Path(mount.target)
        if not target.exists():
            holder = next(p for p in target.parents if p.exists())
            if not covered & {holder, *holder.parents}:
                # a tmpfs over it holds the mount points, visible only in this mount namespace;
                # only where the image's own folders go, never over what the host runs from
                if str(holder) not in TMPFS_HOLDERS:
                    raise ImageLingoError(f"cannot create {target}: {holder} is not a holder")
                subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(holder)])
                covered.add(holder)
            target.mkdir(parents=True)
        held = f"/proc/{os.getpid()}/fd/{source}"
        subprocess.run(["mount", "--bind", held, str(target)], check=True, pass_fds=(source,))
        if mount.read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    for source in sources:
        os.close(source)
    os.chdir(spec.cwd)
    if spec.uid is not None:
        os.setgroups([])
        os.setgid(spec.gid if spec.gid is not None else spec.uid)
        os.setuid(spec.uid)
    os.execvpe(spec.command[0], spec.command, spec.env)


if __name__ == "__main__":
    raw = json.loads(sys.argv[1])
    raw["mounts"] = [Mount(**m) for m in raw["mounts"]]
    _setup_and_exec(Spec(**raw))
