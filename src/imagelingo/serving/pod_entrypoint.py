"""PID 1 of the imagelingo-torchserve container, and its readiness probe.

`imagelingo package` copies this file into the model store as config/entrypoint.py, so it runs in
the runtime image's own Python (pytorch/torchserve-kfs:0.9.0: Python 3.9, `python` on PATH from
/home/venv/bin, torchserve-kfs/v0.9.0/docker/Dockerfile:122) with the standard library only.

    python entrypoint.py serve --model-name=<InferenceService name> --model-store=DIR --ts-config=F
    python entrypoint.py ready

Why it exists (paths under ../shared/cluster-reference/ unless said otherwise):

- Graceful stop. `torchserve --start --foreground` as PID 1 is TorchServe 0.9.0's model_server.py
  starting the JVM and waiting on it (torchserve-kfs/v0.9.0/ts/model_server.py:197-203); it sets
  no signal handler, and the kernel drops signals with the default action sent to a PID
  namespace's init, so SIGTERM is ignored and the pod ends in SIGKILL after the grace period
  (Knative: the revision timeout, 300 s). Here SIGTERM stops the JVM and its workers, SIGKILL
  after `--stop-timeout` seconds, and this process exits: within 10 s in all. Knative delays the
  SIGTERM until queue-proxy has drained (knative/serving knative-v1.16.2
  pkg/reconciler/revision/resources/deploy.go:103-114,266, the preStop hook on the user container).
  As PID 1 it also reaps the orphans it inherits (a worker whose JVM died).
- Readiness. TorchServe's /ping says Healthy with no model registered, so `ready` asks the
  management API (loopback only) for the model and passes only while a worker is READY: false
  until the model has loaded, false for a MAR that never loads, false again once the model is
  unregistered. Knative runs exec readiness probes through the kubelet and adds its own TCP
  probe of the port (knative-v1.16.2 deploy.go:276-282, queue.go:487-494).
- The URL's model name. TorchServe serves the model under its model_snapshot key. KServe
  replaces {{.Name}} in the runtime container with the InferenceService's name
  (kserve v0.15.2 pkg/controller/v1beta1/inferenceservice/utils/utils.go:286-298, called at
  components/predictor.go:366), and `serve` registers the model under that name, so
  /v1/models/<InferenceService name>:predict is what answers, whatever the store was packaged as.
  The packaged file on /mnt/models (read-only) is not changed: a copy goes to the workdir.
- The protocol's other routes. TorchServe answers inference but no health or metadata route of
  the Open Inference Protocol, and no binary tensor data: this process listens on the packaged
  inference_address itself (pod_front.py) and TorchServe on a loopback port behind it.
"""

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

EFFECTIVE = "imagelingo-torchserve.properties"
PR_SET_CHILD_SUBREAPER = 36


def log(message):
    print(f"[entrypoint] {message}", flush=True)


def default_workdir():
    # TEMP is the image's (Dockerfile:136), an emptyDir in the ServingRuntime: writable under a
    # read-only root; TorchServe keeps its pid file and the unpacked MAR there too.
    return os.environ.get("TEMP") or tempfile.gettempdir()


def read_properties(path):
    properties = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                properties[key.strip()] = value.strip()
    return properties


def only_model(properties, path):
    models = json.loads(properties["model_snapshot"])["models"]
    if len(models) != 1:
        raise SystemExit(f"{path}: model_snapshot must hold exactly one model, has {list(models)}")
    return next(iter(models))


def effective_config(ts_config, model_name, workdir, backend_address=""):
    """The packaged config with the snapshot's one model renamed to `model_name` (if given) and
    TorchServe's inference API moved to `backend_address` (if given, behind the front), written
    to the workdir; every other line as packaged."""
    properties = read_properties(ts_config)
    packaged = only_model(properties, ts_config)
    lines = []
    with open(ts_config) as f:
        for line in f:
            key = line.split("=", 1)[0].strip()
            if model_name and key == "model_snapshot":
                snapshot = json.loads(properties["model_snapshot"])
                snapshot["models"] = {model_name: snapshot["models"][packaged]}
                line = f"model_snapshot={json.dumps(snapshot)}\n"
            elif backend_address and key == "inference_address":
                line = f"inference_address={backend_address}\n"
            lines.append(line)
    path = os.path.join(workdir, EFFECTIVE)
    with open(path, "w") as f:
        f.writelines(lines)
    return path, model_name or packaged


def reap(child_pid):
    """Collect every exited child (PID 1 inherits orphans); the exit code of `child_pid` if it
    was among them, else None."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child_pid:
            code = os.waitstatus_to_exitcode(status)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(pgid, child_pid, timeout_s):
    """SIGTERM to TorchServe's process group (model_server.py, the JVM, its workers), SIGKILL
    to what is left after timeout_s."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reap(child_pid)
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    log(f"TorchServe still running {timeout_s:.0f} s after SIGTERM: SIGKILL")
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while group_alive(pgid) and time.monotonic() < deadline + 2:
        reap(child_pid)
        time.sleep(0.05)


def loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_front(ts_config, effective, name, backend):
    """The protocol's front on the packaged inference_address (pod_front.py)."""
    try:
        from imagelingo.serving import pod_front
    except ImportError:  # in the model store: copied beside this file by `imagelingo package`
        import pod_front
    properties = read_properties(ts_config)
    address = urllib.parse.urlsplit(properties["inference_address"])
    # TorchServe's own cap (max_request_size) stays the outer one: bodies under it reach the
    # handler, which answers the documented limit with a JSON 413
    max_body = int(properties.get("max_request_size", 6553500))
    version = "unknown"
    with contextlib.suppress(Exception):
        from importlib.metadata import version as installed

        version = installed("torchserve")
    front = pod_front.start_front(
        address.hostname,
        address.port,
        backend,
        name,
        lambda: worker_ready(effective)[0],
        max_body,
        version,
    )
    log(f"front on {properties['inference_address']}, TorchServe behind it on {backend}")
    return front


def serve(args):
    workdir = args.workdir or default_workdir()
    backend = f"http://127.0.0.1:{args.backend_port or loopback_port()}"
    config, name = effective_config(args.ts_config, args.model_name, workdir, backend)
    log(f"serving model {name!r} with {config}")
    start_front(args.ts_config, config, name, backend)
    # orphans come to this process even where it is not PID 1 (tests, docker --init)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    received = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: received.append(number))
    command = [
        "torchserve",
        "--start",
        "--foreground",
        f"--model-store={args.model_store}",
        f"--ts-config={config}",
    ]
    if args.no_config_snapshots:
        command.append("--ncs")
    # its own session: one signal reaches model_server.py, the JVM and the workers
    child = subprocess.Popen(command, start_new_session=True)
    while True:
        code = reap(child.pid)
        if received:
            started = time.monotonic()
            log(f"signal {received[0]}: stopping TorchServe")
            stop_group(child.pid, child.pid, args.stop_timeout)
            log(f"stopped in {time.monotonic() - started:.1f} s")
            return 0
        if code is not None:  # TorchServe ended by itself: let the kubelet restart the pod
            stop_group(child.pid, child.pid, args.stop_timeout)
            log(f"TorchServe exited with code {code}")
            return code or 1
        time.sleep(0.1)


def worker_ready(path, timeout=2.0):
    """(True, "") while the model of the effective config at `path` has a READY worker, else
    (False, the reason)."""
    try:
        properties = read_properties(path)
    except OSError as exc:
        return False, f"{path} not written yet ({exc.strerror})"
    name = only_model(properties, path)
    url = f"{properties['management_address'].rstrip('/')}/models/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            described = json.load(response)
    except urllib.error.HTTPError as exc:
        return False, f"GET {url}: {exc.code} {exc.read()[:200]!r}"
    except (OSError, ValueError) as exc:
        return False, f"GET {url}: {exc}"
    workers = [w.get("status") for entry in described for w in entry.get("workers", [])]
    if "READY" in workers:
        return True, ""
    return False, f"model {name} workers {workers}"


def ready(args):
    """Exit 0 while the model has a READY worker, 1 with the reason otherwise."""
    is_ready, reason = worker_ready(
        os.path.join(args.workdir or default_workdir(), EFFECTIVE), args.timeout
    )
    if not is_ready:
        print(f"not ready: {reason}")
    return 0 if is_ready else 1


def parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("serve", help="start TorchServe and stop it on SIGTERM")
    start.add_argument("--model-name", default="", help="register the model under this name")
    start.add_argument("--model-store", required=True)
    start.add_argument("--ts-config", required=True)
    start.add_argument("--stop-timeout", type=float, default=7.0)
    start.add_argument(
        "--backend-port", type=int, default=0, help="TorchServe's loopback port; default: free"
    )
    start.add_argument(
        "--no-config-snapshots", action="store_true", help="TorchServe's --ncs (local servers)"
    )
    probe = commands.add_parser("ready", help="exit 0 while the model has a READY worker")
    probe.add_argument("--timeout", type=float, default=2.0)
    for sub in (start, probe):
        sub.add_argument("--workdir", help="writable; default $TEMP")
    return parser


def main(argv=None):
    args = parser().parse_args(argv)
    return serve(args) if args.command == "serve" else ready(args)


if __name__ == "__main__":
    sys.exit(main())
