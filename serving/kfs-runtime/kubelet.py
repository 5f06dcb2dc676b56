"""Runs a pod spec (pod.py) the way a kubelet would, on this machine, in the caller's network
namespace (the pod's: every container of a pod shares it):

- emptyDir volumes as fresh folders, mode 0777 as the kubelet creates them;
- init containers first, each to completion (a non-zero exit fails the pod);
- then the container as PID 1 of its own PID and mount namespaces (src/imagelingo/serving/
  sandbox.py), as its runAsUser, its volumeMounts bind-mounted (readOnly ones read-only), its
  env with secretKeyRefs resolved from the given Secret data;
- its readiness probe every periodSeconds (exec run inside the container as its user, httpGet
  and tcpSocket against 127.0.0.1), Ready after one success, NotReady after failureThreshold
  failures in a row; in Knative mode also queue-proxy's TCP check of the port (knative/serving
  knative-v1.16.2 pkg/reconciler/revision/resources/queue.go:487-494);
- at the end SIGTERM to PID 1 and SIGKILL after terminationGracePeriodSeconds.

What an image holds is not rebuilt: IMAGES says how each image's command runs here (which
environment stands in for the image's Python, the image's ENV and WORKDIR). Not emulated: a
read-only root filesystem (the container writes only where this machine's permissions let its
user: its emptyDirs, /dev/shm), resource limits, the image's own /etc/passwd.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from imagelingo.serving.sandbox import Mount, Sandbox, Spec


@dataclass
class Image:
    """How a container image's process runs here."""

    path: list[str]  # folders put first on PATH (the image's Python environment)
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV
    workdir: str = "/"  # the image's WORKDIR
    entrypoint: list[str] = field(default_factory=list)  # used when the container has no command


def container_spec(
    container: dict, pod: dict, image: Image, volumes: dict[str, Path], secret: dict
) -> Spec:
    env = {"PATH": ":".join([*image.path, "/usr/local/bin", "/usr/bin", "/bin"]), **image.env}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret[ref["key"]]
    command = list(container.get("command") or image.entrypoint) + list(container.get("args", []))
    mounts = [
        Mount(m["mountPath"], str(volumes[m["name"]]), bool(m.get("readOnly")))
        for m in container.get("volumeMounts", [])
    ]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    uid = context.get("runAsUser")
    return Spec(
        command,
        mounts,
        env,
        container.get("workingDir") or image.workdir,
        uid,
        context.get("runAsGroup", uid),
    )


class Kubelet:
    def __init__(self, pod: dict, images: dict[str, Image], secret: dict, root: Path) -> None:
        self.pod, self.images, self.secret, self.root = pod, images, secret, Path(root)
        self.events: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.volumes = {}
        for volume in pod["volumes"]:
            if "emptyDir" not in volume:
                raise SystemExit(f"volume {volume['name']}: only emptyDir is emulated")
            folder = self.root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
            self.volumes[volume["name"]] = folder
        self.ready = False
        self.last_probe = ""
        self._stop_probing = threading.Event()

    def event(self, text: str) -> None:
        self.events.append((round(time.monotonic() - self.started, 1), text))
        print(f"[kubelet {self.events[-1][0]:7.1f} s] {text}", flush=True)

    def spec(self, container: dict) -> Spec:
        image = self.images[container["image"]]
        return container_spec(container, self.pod, image, self.volumes, self.secret)

    def run_init_containers(self) -> None:
        for container in self.pod.get("initContainers", []):
            self.event(f"init container {container['name']} started")
            sandbox = Sandbox(self.spec(container), self.root / f"{container['name']}.log")
            sandbox.start()
            sandbox.process.wait()
            code = sandbox.process.returncode
            sandbox.stop()
            self.event(f"init container {container['name']} exited {code}")
            if code != 0:
                log = (self.root / f"{container['name']}.log").read_text()[-2000:]
                raise RuntimeError(f"init container {container['name']} failed ({code}): {log}")

    def start(self) -> Sandbox:
        (container,) = self.pod["containers"]
        self.container = container
        self.sandbox = Sandbox(self.spec(container), self.root / f"{container['name']}.log")
        self.sandbox.start()
        self.event(f"container {container['name']} started as PID 1 (pid {self.sandbox.pid} here)")
        self.prober = threading.Thread(target=self._probe_loop, daemon=True)
        self.prober.start()
        return self.sandbox

    def probe_once(self) -> tuple[bool, str]:
        probe = self.container["readinessProbe"]
        if "exec" in probe:
            result = self.sandbox.exec(
                probe["exec"]["command"], timeout=probe.get("timeoutSeconds", 1) + 5
            )
            passed, why = result.returncode == 0, (result.stdout + result.stderr).strip()[-200:]
        elif "httpGet" in probe:
            import http.client

            try:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", probe["httpGet"]["port"], timeout=probe.get("timeoutSeconds", 1)
                )
                connection.request("GET", probe["httpGet"].get("path", "/"))
                status = connection.getresponse().status
                passed, why = 200 <= status < 400, f"HTTP {status}"
            except OSError as exc:
                passed, why = False, str(exc)
        else:
            passed, why = tcp_open(probe["tcpSocket"]["port"]), "tcp"
        if passed and self.pod["mode"] == "Knative":  # queue-proxy's own check of the port
            port = self.container["ports"][0]["containerPort"]
            if not tcp_open(port):
                passed, why = False, f"queue-proxy: port {port} closed"
        return passed, why

    def _probe_loop(self) -> None:
        probe = self.container["readinessProbe"]
        period, threshold = probe.get("periodSeconds", 10), probe.get("failureThreshold", 3)
        time.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while not self._stop_probing.is_set() and self.sandbox.running():
            passed, why = self.probe_once()
            self.last_probe = why
            failures = 0 if passed else failures + 1
            if passed and not self.ready:
                self.ready = True
                self.event("Ready (readiness probe passed)")
            elif not passed and self.ready and failures >= threshold:
                self.ready = False
                self.event(f"NotReady after {failures} failed probes: {why}")
            self._stop_probing.wait(period)

    def wait_ready(self, ready: bool, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.sandbox.running():
            if self.ready == ready:
                return round(time.monotonic() - self.started, 1)
            time.sleep(0.2)
        return None

    def terminate(self) -> dict:
        """SIGTERM to PID 1, SIGKILL after the pod's grace period (as the kubelet does)."""
        self._stop_probing.set()
        grace = self.pod["terminationGracePeriodSeconds"]
        self.event(f"SIGTERM to PID 1 (grace period {grace} s)")
        seconds = self.sandbox.terminate(grace_s=grace)
        self.event(f"container gone after {seconds} s{' (SIGKILL)' if self.sandbox.killed else ''}")
        self.sandbox.stop()
        return {"stop_s": seconds, "killed": self.sandbox.killed, "grace_s": grace}


def tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_in_netns(command: list[str]) -> int:
    """Re-run `command` in a new network and mount namespace (the pod's network)."""
    return subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", *command], env=os.environ
    ).returncode
