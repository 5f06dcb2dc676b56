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
    POD_MODULES,
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


def test_entrypoint_and_its_front_need_only_python_3_9_and_the_standard_library():
    # run by the runtime image's Python from the store's config/, where nothing of ours is
    # installed: each `from imagelingo...` falls back to the copy beside it (pod_front, oip)
    files = [POD_ENTRYPOINT, *(POD_ENTRYPOINT.with_name(m) for m in POD_MODULES)]
    result = subprocess.run(
        [VERMIN, "--no-tips", "--violations", "--eval-annotations", "-t=3.9-", *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    allowed = sys.stdlib_module_names | {"imagelingo", "pod_front", "oip"}
    for path in files:
        tree = ast.parse(path.read_text())
        imported = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        imported |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert imported and imported <= allowed, (path.name, imported - allowed)


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


def kfs_runtime_module(name: str):
    sys.path.insert(0, str(REPO_ROOT / "serving" / "kfs-runtime"))
    return __import__(name)


def differences(a, b, path=""):
    """Paths where two JSON-like values differ (lists of containers and env keyed by name)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in set(a) | set(b) for p in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and all(isinstance(i, dict) and "name" in i for i in a + b)
    ):
        by_a, by_b = {i["name"]: i for i in a}, {i["name"]: i for i in b}
        if len(by_a) == len(a) and len(by_b) == len(b):
            return [
                p
                for k in set(by_a) | set(by_b)
                for p in differences(by_a.get(k), by_b.get(k), f"{path}[{k}]")
            ]
    return [] if a == b else [path]


OBSERVED_KSERVE = ("v0.15.0", "v0.15.2", "v0.20.0")


@pytest.mark.parametrize("kserve", OBSERVED_KSERVE)
def test_the_rehearsed_pod_is_the_pod_the_real_kserve_built(kserve):
    """Issue 26 defect 6: the Standard pod the rehearsal runs is the Pod KServe built on the box
    (box/kserve/observed, box/kserve/capture-pods.sh), different only where pod.SUBSTITUTIONS
    says: editing either one without the other fails here."""
    podspec = kfs_runtime_module("pod")
    path = podspec.OBSERVED / f"{kserve}-minio-standard-pod.yaml"
    real = yaml.safe_load(path.read_text())["spec"]
    rehearsed = podspec.pod("Standard", "127.0.0.1:9", kserve)
    assert rehearsed.pop("mode") == "Standard"
    listed = {f".initContainers[{c}].env[{e}].value" for c, e, _ in podspec.SUBSTITUTIONS}
    assert sorted(differences(real, rehearsed)) == sorted(listed)
    env = {e["name"]: e.get("value") for e in rehearsed["initContainers"][0]["env"]}
    assert env["S3_ENDPOINT"] == "127.0.0.1:9"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"


@pytest.mark.parametrize("kserve", OBSERVED_KSERVE)
def test_the_captured_pod_is_of_the_current_manifests(kserve):
    """The captured Pod is stale once manifests/ change what KServe builds from: then
    box/kserve/capture-pods.sh must run again (for each target)."""
    from imagelingo.deploy import DeployConfig, inference_service, with_overrides

    podspec = kfs_runtime_module("pod")
    real = podspec.captured("Standard", kserve)
    name = real["metadata"]["labels"]["serving.kserve.io/inferenceservice"]
    (container,) = real["spec"]["containers"]
    rendered = replace_placeholders(runtime_container(), name)
    assert container["command"] + container["args"] == rendered["command"] + rendered["args"]
    probe = {k: v for k, v in container["readinessProbe"].items() if k != "successThreshold"}
    assert probe == rendered["readinessProbe"]
    config = with_overrides(DeployConfig(), name=name, mode="Standard")
    isvc = inference_service(config, "s3://b/model-store/abc", "abc")
    assert container["resources"] == isvc["spec"]["predictor"]["model"]["resources"]
    assert container["securityContext"]["runAsUser"] == 1000
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[MOUNT] == {"name": podspec.PROVISION_VOLUME, "mountPath": MOUNT, "readOnly": True}


@pytest.mark.parametrize("kserve", ("v0.15.0", "v0.15.2"))
def test_the_knative_pod_is_kserves_knative_service_plus_the_pod_mutator(kserve):
    """Knative mode: KServe's part captured (its Knative Service; the pod mutator's injection
    from the Standard Pod), Knative's part (PORT/K_* env, 300 s grace) from reading."""
    podspec = kfs_runtime_module("pod")
    ksvc = yaml.safe_load((podspec.OBSERVED / f"{kserve}-minio-ksvc.yaml").read_text())
    template = ksvc["spec"]["template"]["spec"]
    standard = podspec.captured("Standard", kserve)["spec"]
    pod = podspec.pod("Knative", "127.0.0.1:9", kserve)
    assert pod["mode"] == "Knative" and pod["terminationGracePeriodSeconds"] == 300
    (container,) = pod["containers"]
    (captured,) = template["containers"]
    knative_env = {"PORT", "K_REVISION", "K_CONFIGURATION", "K_SERVICE"}
    assert {e["name"] for e in container["env"]} == knative_env
    skip = ("env", "volumeMounts")
    assert {k: v for k, v in container.items() if k not in skip} == {
        k: v for k, v in captured.items() if k not in skip
    }
    assert container["volumeMounts"][:-1] == captured["volumeMounts"]
    assert pod["initContainers"] == podspec.substitute(standard, "127.0.0.1:9")["initContainers"]
