"""The imagelingo-torchserve container's PID 1 and readiness probe (serving/pod_entrypoint.py,
shipped in the model store as config/entrypoint.py), run as a container runtime runs them: PID 1
of a PID namespace of their own (serving/sandbox.py), the store read-only at /mnt/models.

- TorchServe as PID 1 ignores SIGTERM (the issue-22 bug, shown on the real server); the
  entrypoint stops it within 10 s.
- The probe is false until the model's worker is READY, false again once the model is
  unregistered, never true for a MAR that cannot load.
- The model answers under the InferenceService's name that KServe writes into the runtime's
  args ({{.Name}}), whatever name the store was packaged with.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from imagelingo.config import REPO_ROOT
from imagelingo.serving import pod_entrypoint, sandbox
from imagelingo.serving.package import (
    DIRECT_PROPERTIES,
    ENTRYPOINT,
    MOUNT,
    POD_ENTRYPOINT,
    ServingConfig,
    direct_properties,
    write_properties,
)

RUNTIME = REPO_ROOT / "manifests" / "base" / "servingruntime.yaml"
VERMIN = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
KFS_BIN = REPO_ROOT / ".venv-kfs" / "bin"
# TorchServe 0.9.0 in the runtime's Python 3.9 where `make runtime-rehearsal` built it, else the
# venv's 0.12 (same model_server.py wait, ts/model_server.py:212-217 at v0.12.0)
TS_BIN = KFS_BIN if (KFS_BIN / "torchserve").is_file() else Path(sys.executable).parent
no_sandbox = pytest.mark.skipif(bool(sandbox.available()), reason=str(sandbox.available()))


def runtime_container() -> dict:
    (container,) = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"]
    return container


def replace_placeholders(value, name: str):
    """KServe's ReplacePlaceholders (kserve v0.15.2 pkg/controller/v1beta1/inferenceservice/utils/
    utils.go:286-298): the container as a Go template over the InferenceService's metadata."""
    return json.loads(json.dumps(value).replace("{{.Name}}", name))


def test_entrypoint_needs_only_python_3_9_and_the_standard_library():
    result = subprocess.run(
        [VERMIN, "--no-tips", "--violations", "--eval-annotations", "-t=3.9-", str(POD_ENTRYPOINT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tree = ast.parse(POD_ENTRYPOINT.read_text())
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def test_package_writes_the_entrypoint_beside_the_configs(tmp_path):
    write_properties(tmp_path, ServingConfig())
    assert (tmp_path / "config" / ENTRYPOINT).read_bytes() == POD_ENTRYPOINT.read_bytes()


def test_the_model_is_served_under_the_name_given_and_nothing_else_changes(tmp_path):
    packaged = tmp_path / DIRECT_PROPERTIES
    packaged.write_text(direct_properties(ServingConfig(model_name="imagelingo")))
    path, name = pod_entrypoint.effective_config(str(packaged), "captions-prod", str(tmp_path))
    assert name == "captions-prod"
    before, after = packaged.read_text().splitlines(), Path(path).read_text().splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("=")[0] for b, _ in changed] == ["model_snapshot"]
    models = json.loads(after[[line.split("=")[0] for line in after].index("model_snapshot")][15:])
    assert list(models["models"]) == ["captions-prod"]
    assert models["models"]["captions-prod"]["1.0"]["marName"] == "imagelingo.mar"
    # no name given (the standalone image): the packaged name
    path, name = pod_entrypoint.effective_config(str(packaged), "", str(tmp_path))
    assert name == "imagelingo" and Path(path).read_text() == packaged.read_text()


def test_the_runtime_starts_the_store_entrypoint_under_the_service_name():
    """What replaced `torchserve --start --foreground` (PID 1 that ignored SIGTERM) and the /ping
    probe (healthy with no model): the args KServe renders reach the entrypoint's parser."""
    container = runtime_container()
    entry = f"{MOUNT}/config/{ENTRYPOINT}"
    assert container["command"] == ["python", entry]
    rendered = replace_placeholders(container, "captions-prod")
    parsed = pod_entrypoint.parser().parse_args(rendered["args"])
    assert parsed.command == "serve" and parsed.model_name == "captions-prod"
    assert parsed.ts_config == f"{MOUNT}/config/{DIRECT_PROPERTIES}"
    assert parsed.model_store == f"{MOUNT}/model-store"
    probe = container["readinessProbe"]
    assert set(probe) >= {"exec", "periodSeconds", "failureThreshold"} and "httpGet" not in probe
    assert probe["exec"]["command"] == ["python", entry, "ready"]
    port = int(
        re.search(r":(\d+)$", dict_of(direct_properties(ServingConfig()))["inference_address"])[1]
    )
    assert container["ports"] == [{"containerPort": port, "protocol": "TCP"}]


def dict_of(properties: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in properties.splitlines() if line)


def test_the_probe_is_not_ready_before_the_entrypoint_wrote_its_config(tmp_path, capsys):
    assert pod_entrypoint.main(["ready", "--workdir", str(tmp_path)]) == 1
    assert "not written yet" in capsys.readouterr().out


# --- the real server as PID 1 (slow: TorchServe, and a trained model for the store) ------------


def container_spec(store: Path, tmp_path: Path, command: list[str]) -> sandbox.Spec:
    """The runtime container of servingruntime.yaml, as far as it matters here: the store
    read-only at /mnt/models, $TEMP and the logs on writable volumes."""
    for folder in ("tmp", "logs"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return sandbox.Spec(
        command=command,
        mounts=[sandbox.Mount(MOUNT, str(store), read_only=True)],
        env={
            "PATH": f"{TS_BIN}:/usr/local/bin:/usr/bin:/bin",
            "TEMP": str(tmp_path / "tmp"),
            "LOG_LOCATION": str(tmp_path / "logs"),
            "METRICS_LOCATION": str(tmp_path / "logs"),
        },
        cwd=str(tmp_path),
    )


def store_copy(model_store: Path, tmp_path: Path, break_mar: bool = False) -> Path:
    """A copy of the packaged store whose model API is on (TorchServe 0.11+ refuses DELETE
    otherwise; 0.9.0 has no such switch) and, if asked, whose MAR cannot be loaded."""
    store = tmp_path / "store"
    shutil.copytree(model_store, store)
    config = store / "config" / DIRECT_PROPERTIES
    config.write_text(config.read_text().replace("enable_model_api=false", "enable_model_api=true"))
    if break_mar:
        (store / "model-store" / "imagelingo.mar").write_bytes(b"not a zip archive")
    return store


def probe(container: sandbox.Sandbox) -> subprocess.CompletedProcess:
    return container.exec(["python", f"{MOUNT}/config/{ENTRYPOINT}", "ready"])


def http(container: sandbox.Sandbox, method: str, url: str, body: dict | None = None) -> tuple:
    """A request from inside the pod's network namespace: (status, JSON body)."""
    code = (
        "import json, sys, urllib.request, urllib.error\n"
        "m, u, b = sys.argv[1:4]\n"
        "r = urllib.request.Request(u, data=b.encode() if b else None, method=m,"
        " headers={'Content-Type': 'application/json'})\n"
        "try:\n    a = urllib.request.urlopen(r, timeout=60)\n"
        "except urllib.error.HTTPError as e:\n    a = e\n"
        "print(json.dumps([a.status, json.loads(a.read() or b'null')]))\n"
    )
    result = container.exec(["python", "-c", code, method, url, json.dumps(body) if body else ""])
    assert result.returncode == 0, result.stderr
    return tuple(json.loads(result.stdout))


def wait_ready(container: sandbox.Sandbox, timeout_s: float) -> tuple[float | None, list]:
    """Poll the probe every second as the kubelet would: (seconds to the first pass, failures)."""
    started, failures = time.monotonic(), []
    while time.monotonic() - started < timeout_s and container.running():
        result = probe(container)
        if result.returncode == 0:
            return round(time.monotonic() - started, 1), failures
        failures.append(result.stdout.strip())
        time.sleep(1)
    return None, failures


@no_sandbox
@pytest.mark.slow
def test_torchserve_as_pid_1_ignores_sigterm(tmp_path):
    """The bug the entrypoint fixes, on the real server: `torchserve --start --foreground` as
    PID 1 (the runtime's old command) is still running 6 s after SIGTERM."""
    (tmp_path / "store" / "model-store").mkdir(parents=True)
    config = tmp_path / "store" / "ts.properties"
    config.write_text(
        "inference_address=http://127.0.0.1:8080\nmanagement_address=http://127.0.0.1:8083\n"
    )
    command = ["torchserve", "--start", "--foreground", f"--model-store={MOUNT}/model-store"]
    command.append(f"--ts-config={MOUNT}/ts.properties")
    spec = container_spec(tmp_path / "store", tmp_path, command)
    with sandbox.Sandbox(spec, tmp_path / "container.log", private_network=True) as container:
        deadline = time.monotonic() + 60
        while "Model server started" not in (tmp_path / "container.log").read_text():
            assert time.monotonic() < deadline and container.running()
            time.sleep(0.5)
        stopped_in = container.terminate(grace_s=6)
    assert container.killed, f"exited {stopped_in} s after SIGTERM"


@no_sandbox
def test_the_entrypoint_as_pid_1_is_ready_with_the_model_only_and_stops_on_sigterm(
    model_store, tmp_path
):
    store = store_copy(model_store, tmp_path)
    container = runtime_container()
    args = replace_placeholders(container["args"], "captions-prod")
    spec = container_spec(store, tmp_path, container["command"] + args)
    with sandbox.Sandbox(spec, tmp_path / "container.log", private_network=True) as pod:
        ready_after, failures = wait_ready(pod, timeout_s=120)
        log = (tmp_path / "container.log").read_text()
        assert ready_after is not None, f"never ready: {failures[-3:]}\n{log[-3000:]}"
        assert failures, "ready at once: the probe cannot have waited for the model"
        url = "http://127.0.0.1:8080/v1/models/captions-prod:predict"
        status, body = http(pod, "POST", url, {"instances": [{"data": "aGVsbG8="}]})
        assert status == 400 and "not an image" in body["error"]  # the model answered it
        assert http(pod, "GET", "http://127.0.0.1:8080/ping")[0] == 200
        status, _ = http(pod, "DELETE", "http://127.0.0.1:8083/models/captions-prod")
        assert status == 200
        assert probe(pod).returncode == 1  # the model went away: not ready
        assert http(pod, "GET", "http://127.0.0.1:8080/ping")[0] == 200  # what /ping would say
        stopped_in = pod.terminate(grace_s=30)
    assert not pod.killed and stopped_in < 10, stopped_in
    assert pod.exit_code == 0, (tmp_path / "container.log").read_text()[-2000:]


@no_sandbox
def test_a_mar_that_cannot_load_is_never_ready(model_store, tmp_path):
    store = store_copy(model_store, tmp_path, break_mar=True)
    container = replace_placeholders(runtime_container(), "captions-prod")
    spec = container_spec(store, tmp_path, container["command"] + container["args"])
    with sandbox.Sandbox(spec, tmp_path / "container.log", private_network=True) as pod:
        ready_after, failures = wait_ready(pod, timeout_s=15)
        pod.terminate(grace_s=30)
    assert ready_after is None and failures


def test_the_rehearsed_pod_comes_from_the_manifests():
    """serving/kfs-runtime/pod.py builds the pod from the rendered InferenceService and the
    ServingRuntime, not from a copy: what the runtime says is what the pod runs."""
    sys.path.insert(0, str(REPO_ROOT / "serving" / "kfs-runtime"))
    import pod as podspec

    from imagelingo.deploy import DeployConfig, inference_service, with_overrides

    for mode, grace in (("Knative", 300), ("Standard", 30)):
        config = with_overrides(DeployConfig(), name="captions", mode=mode)
        isvc = inference_service(config, "s3://b/model-store/abc", "abc")
        runtime = yaml.safe_load(RUNTIME.read_text())
        annotations = {
            "serving.kserve.io/s3-endpoint": "127.0.0.1:9",
            "serving.kserve.io/s3-usehttps": "0",
        }
        pod = podspec.build_pod(isvc, runtime, config.s3_secret, annotations)
        (container,) = pod["containers"]
        rendered = replace_placeholders(runtime_container(), "captions")
        assert container["command"] + container["args"] == rendered["command"] + rendered["args"]
        assert container["readinessProbe"] == rendered["readinessProbe"]
        # the InferenceService's resources and securityContext win, the runtime's runAsUser stays
        assert container["resources"] == isvc["spec"]["predictor"]["model"]["resources"]
        assert container["securityContext"]["runAsUser"] == 1000
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[MOUNT] == {
            "name": podspec.PROVISION_VOLUME,
            "mountPath": MOUNT,
            "readOnly": True,
        }
        (init,) = pod["initContainers"]
        assert init["args"] == ["s3://b/model-store/abc", MOUNT]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in init["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and env["S3_USE_HTTPS"] == "0"
        assert env["AWS_SECRET_ACCESS_KEY"] == {
            "secretKeyRef": {"name": config.s3_secret, "key": "AWS_SECRET_ACCESS_KEY"}
        }
        assert "securityContext" not in init  # as KServe injects it (issue 22, point 7)
        assert pod["terminationGracePeriodSeconds"] == grace
        assert ("K_SERVICE" in {e["name"] for e in container.get("env", [])}) == (mode == "Knative")
