"""The stock `kserve-torchserve` rounds of the runtime rehearsal: KServe's ClusterServingRuntime
(pytorch/torchserve-kfs:0.9.0) started as its image starts it (dockerd-entrypoint.sh: TorchServe
daemonised, then the kserve wrapper), with the environment KServe gives it, then probed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

from common import MODEL, MOUNT, log
from probes import cases, listeners, port_free, request


def setup_namespace(store: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if not MOUNT.exists():
        # a tmpfs over /mnt, visible only in this mount namespace, to hold the mount point
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(MOUNT.parent)], check=True
        )
        MOUNT.mkdir()
    subprocess.run(["mount", "--bind", str(store), str(MOUNT)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(MOUNT)], check=True)


def wait_for_both(
    front, model, first_request, started: float, timeout_s: float, what: str, processes: list
):
    """Seconds from `started` until each check first passed, and the answer to `first_request`
    sent the moment the front first says ready (in a thread: it may wait for the model)."""
    times: list[float | None] = [None, None]
    early: dict = {}
    thread = None
    while time.monotonic() - started < timeout_s and None in times:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: a server exited with code {process.returncode}")
        for i, check in enumerate((front, model)):
            try:
                if times[i] is None and check():
                    times[i] = round(time.monotonic() - started, 1)
            except OSError:
                pass
        if times[0] is not None and thread is None:
            thread = threading.Thread(target=lambda: early.update(answer=first_request()))
            thread.start()
        time.sleep(0.5)
    if thread is not None:
        thread.join()
    if None in times:
        raise RuntimeError(f"{what}: not ready within {timeout_s:.0f} s (front, model: {times})")
    return times, early.get("answer")


def model_ready() -> bool:
    status, text, _ = request("GET", 8083, f"/models/{MODEL}", timeout=5)
    if status != 200:
        return False
    return any(w.get("status") == "READY" for w in json.loads(text)[0].get("workers", []))


# TorchServe's management API (127.0.0.1:8083 in both packaged configs), asked from inside the pod
SECURITY = [
    ("describe the model (mgmt)", "GET", f"/models/{MODEL}"),
    ("register https MAR (mgmt)", "POST", "/models?url=https://example.com/x.mar"),
    ("register file outside store (mgmt)", "POST", "/models?url=file:///tmp/x.mar"),
]


# Last, as it removes the model: TorchServe 0.9.0 has no enable_model_api switch (0.11+), so only
# the loopback address keeps this from other pods.
UNREGISTER = ("unregister the model (mgmt, last)", "DELETE", f"/models/{MODEL}")


def run_round(name: str, plan: dict, work: Path) -> dict:
    kfs_bin = Path(plan["kfs_venv"]) / "bin"
    home = Path(plan["home"])
    tmp = work / f"tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # the image's environment: its venv first on PATH, TEMP=/home/model-server/tmp (TorchServe's
    # pid file and the JVM's tmpdir), cwd /home/model-server (logs in ./logs)
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "TMPDIR", "TMP", "LOG_LOCATION", "METRICS_LOCATION")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"PATH": f"{kfs_bin}{os.pathsep}{env['PATH']}", "TEMP": str(tmp)}
    env["PYTHONUNBUFFERED"] = "TRUE"
    shutil.rmtree(home / "logs", ignore_errors=True)
    processes, started = [], time.monotonic()
    logs = open(work / f"{name}.log", "wb")
    round_result = {"name": name}
    try:
        if True:  # the stock runtime (the project's own runs as a pod: podround.py)
            protocol = name.split("-")[1]
            env |= {
                "PROTOCOL_VERSION": protocol,
                "TS_SERVICE_ENVELOPE": "kserve" if protocol == "v1" else "kservev2",
            }
            args = plan["stock_args"]
            # dockerd-entrypoint.sh: eval "$@" (torchserve --start returns once launched) ...
            subprocess.run(
                [str(kfs_bin / args[0]), *args[1:]],
                cwd=home,
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
                check=True,
            )
            # ... then python /home/model-server/kserve_wrapper/__main__.py
            wrapper = subprocess.Popen(
                [str(kfs_bin / "python"), str(home / "kserve_wrapper" / "__main__.py")],
                cwd=home,
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(wrapper)
            port, described = 8080, "kserve wrapper :8080 -> TorchServe :8085"
            round_result["command"] = " ".join(args) + " ; python kserve_wrapper/__main__.py"
        round_result["env"] = {
            k: env[k] for k in ("PROTOCOL_VERSION", "TS_SERVICE_ENVELOPE") if k in env
        }
        round_result["serving"] = described
        ready_path = "/v1/models/imagelingo" if name != "stock-v2" else "/v2/health/ready"
        round_result["ready_path"] = ready_path
        # both clocks from the launch: when the front (what KServe's readiness sees) first says
        # ready, and when TorchServe's model first has a READY worker
        images = plan["images_b64"]
        early_v2 = name == "stock-v2"
        path = f"/v2/models/{MODEL}/infer" if early_v2 else f"/v1/models/{MODEL}:predict"
        body = (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": images[:1]}]}
            if early_v2
            else {"instances": [{"data": images[0]}]}
        )
        first_request = partial(request, "POST", port, path, json.dumps(body).encode())
        (front, model), early = wait_for_both(
            lambda: request("GET", port, ready_path, timeout=5)[0] == 200,
            model_ready,
            first_request,
            started,
            300,
            name,
            processes,
        )
        round_result["front_ready_s"], round_result["model_ready_s"] = front, model
        round_result["first_request"] = {"status": early[0], "body": early[1], "s": early[2]}
        round_result["listeners"] = listeners()
        probes, t = [], time.monotonic()
        for case, method, path, body in cases(images):
            status, text, seconds = request(method, port, path, body)
            probes.append({"case": case, "status": status, "body": text, "s": seconds})
            log(f"{name}: {case}: {status} {text[:100]!r}")
        for case, method, path in SECURITY:
            status, text, seconds = request(method, 8083, path)
            probes.append({"case": case, "status": status, "body": text, "s": seconds})
            log(f"{name}: {case}: {status} {text[:100]!r}")
        status, text, _ = request(
            "POST",
            port,
            f"/v1/models/{MODEL}:predict",
            json.dumps({"instances": [{"data": images[0]}]}).encode(),
        )
        probes.append(
            {
                "case": "v1 good JPEG again, after all the above",
                "status": status,
                "body": text,
                "s": 0,
            }
        )
        case, method, path = UNREGISTER
        status, text, seconds = request(method, 8083, path)
        probes.append({"case": case, "status": status, "body": text, "s": seconds})
        round_result["probes"] = probes
        round_result["probe_s"] = round(time.monotonic() - t, 1)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if name.startswith("stock"):  # the daemonised TorchServe of `torchserve --start`
            subprocess.run(
                [str(kfs_bin / "torchserve"), "--stop"],
                cwd=home,
                env=env,
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            port_free(p) for p in (8080, 8081, 8082, 8083, 8085, 7070, 7071)
        ):
            time.sleep(1)
        logs.close()
        if (home / "logs").is_dir():
            shutil.rmtree(work / f"logs-{name}", ignore_errors=True)
            shutil.move(home / "logs", work / f"logs-{name}")
        round_result["round_s"] = round(time.monotonic() - started, 1)
    return round_result
