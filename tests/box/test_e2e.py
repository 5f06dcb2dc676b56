"""The mission's cluster path on the box (box/up.sh): the release's Kubernetes with the real
kubelet, KServe's controller and webhooks installed from the release, the object store it ships.
Nothing here is a fake: `kubectl apply -k` of every overlay is admitted (or not) by the real API
server and KServe's webhooks; `imagelingo deploy` runs as a profile's `default-editor` with RBAC
deciding; the predictor is the Pod KServe builds, run by the kubelet from images made here
(box/kserve/images.sh); it is called from a pod in the profile namespace through the Standard
Service, as a KFP task there would call it.

Standard mode only: Knative's pods do not run on the box's node yet (box/README.md), so the
Knative route, canary and promote (Knative-only on KServe 0.15) are not covered here.

IMAGELINGO_BOX=1 pytest -q tests/box/test_e2e.py (make box-e2e): about 10 minutes per target
(first start: +3 min to make and import the runtime images); needs root, the box built
(box/README.md) and `make runtime-rehearsal`'s venvs (the images are made from them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from box_cluster import (
    BOX,
    REPO,
    Cluster,
    call_from_pod,
    profile_namespace,
    release_objects,
    role_binding,
)

pytestmark = pytest.mark.slow

TARGETS = {  # target: (release, Kubernetes, KServe, object store binary)
    "kubeflow-1.11": ("v1.11.0", "v1.34.4", "v0.15.2", "objectstore/bin/weed"),
    "kubeflow-1.10": ("v1.10.2", "v1.32.13", "v0.15.0", "objectstore/bin/minio"),
}
PROFILE = "kubeflow-user-example-com"  # Kubeflow's example profile
NS, NAME = "imagelingo", "imagelingo"  # the overlay's namespace and InferenceService
SERVICE = f"http://{NAME}-predictor.{NS}.svc.cluster.local"
sys.path.insert(0, str(REPO / "serving" / "kfs-runtime"))


def missing(target: str) -> str:
    if os.environ.get("IMAGELINGO_BOX") != "1":
        return "starts the box (minutes): set IMAGELINGO_BOX=1 (make box-e2e)"
    _, kubernetes, kserve, store = TARGETS[target]
    needed = [BOX / f"bin/{kubernetes}/kubelet", BOX / f"bin/kserve-{kserve}/manager"]
    stores = [BOX / store, BOX / f"{store}-RELEASE.2019-08-14T20-37-41Z"]  # box/up.sh's choice
    needed.append(next((s for s in stores if s.exists()), stores[0]))
    needed += [REPO / ".venv-kfs/pyvenv.cfg", REPO / ".venv-storage/pyvenv.cfg"]
    absent = [str(p.relative_to(REPO)) for p in needed if not p.exists()]
    if absent:
        return f"{target}: {', '.join(absent)} absent (box/README.md says how to build them)"
    return "" if os.geteuid() == 0 else "the box needs root"


@pytest.fixture(scope="module", params=list(TARGETS))
def box(request, tmp_path_factory):
    target = request.param
    if why := missing(target):
        pytest.skip(why)
    work = Path(f"/tmp/box-e2e-{target}")
    subprocess.run([str(BOX / "down.sh"), str(work)], capture_output=True)
    # its own process group: a timeout stops up.sh and what it started (builds, the node)
    up = subprocess.Popen(
        [str(BOX / "up.sh"), target, str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            said, _ = up.communicate(timeout=1500)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            said, _ = up.communicate()
        assert up.returncode == 0, f"box/up.sh {target} ({up.returncode}):\n{said[-5000:]}"
        print(said)
        yield target, Cluster(work / "env"), tmp_path_factory.mktemp(target)
    finally:
        stats = subprocess.run([str(BOX / "stats.sh"), str(work)], capture_output=True, text=True)
        print(f"{target} memory: {stats.stdout}")
        down = subprocess.run([str(BOX / "down.sh"), str(work)], capture_output=True, text=True)
        assert down.returncode == 0, f"box/down.sh {work}: {down.stdout[-2000:]}{down.stderr}"


def test_every_overlay_is_admitted(box):
    """Each overlay through the real API server and KServe's webhooks (server-side dry run:
    admission runs, nothing is stored)."""
    _, cluster, _ = box
    # a dry run creates no namespace: the overlays' objects would be "namespaces not found"
    cluster.kubectl("create", "namespace", NS, check=False)
    for overlay in sorted((REPO / "manifests" / "overlays").iterdir()):
        result = cluster.kubectl("apply", "-k", overlay, "--dry-run=server", check=False)
        assert result.returncode == 0, f"{overlay.name}: {result.stderr}"
        assert "inferenceservice.serving.kserve.io/imagelingo created (server dry run)" in (
            result.stdout
        ), result.stdout


def test_standard_mode_as_a_profile_editor(box):
    target, admin, tmp = box
    release = TARGETS[target][0]
    from inputs import choose_model, probe_images

    # the overlay, as the README applies it, and a profile namespace as Kubeflow makes it
    admin.apply(release_objects(release, "--kind", "ClusterRole", "--name", "kubeflow-*"))
    admin.apply(profile_namespace(release, PROFILE))
    overlay = REPO / "manifests" / "overlays" / "minio-standard"
    admin.kubectl("apply", "-k", overlay, "-l", "app.kubernetes.io/managed-by!=imagelingo-deploy")
    # README: "on a multi-user Kubeflow ... bind your profile's default-editor"
    editor = {"kind": "ServiceAccount", "name": "default-editor", "namespace": PROFILE}
    admin.apply(
        [role_binding(NS, "imagelingo-deploy-profile", "Role", "imagelingo-deploy", editor)]
    )
    # The S3 Secret from the release's own keys (kubeflow-admin: any prefix; a 1.11 profile's
    # own identity may not list, which KServe's storage-initializer does: README, S3 section)
    keys = admin.get("-n", "kubeflow", "secret", "mlpipeline-minio-artifact")["data"]
    key, secret = (base64.b64decode(keys[k]).decode() for k in ("accesskey", "secretkey"))
    secrets = tmp / "secrets"
    secrets.mkdir()
    shutil.copy(REPO / "manifests/secrets/minio/kustomization.yaml", secrets)
    (secrets / "s3.env").write_text(f"AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    admin.kubectl("apply", "-k", secrets)

    as_editor = admin.as_service_account(PROFILE, "default-editor", tmp / "editor.kubeconfig")
    s3 = admin.get("-n", "kubeflow", "service", "minio-service")["spec"]["clusterIP"]
    model, _ = choose_model(None, tmp)
    images, _ = probe_images(tmp)

    def store(version: str, broken: bool = False) -> Path:
        out = tmp / f"store-{version}"
        subprocess.run(
            [REPO / ".venv/bin/imagelingo", "package", "--model", model, "--out", out],
            check=True,
            capture_output=True,
        )
        with open(out / "config" / "config.properties", "a") as f:
            f.write(f"# {version}\n")  # each version its own content hash, its own storage URI
        if broken:
            (out / "model-store" / "imagelingo.mar").write_bytes(b"not a model archive")
        return out

    def deploy(*args, timeout: int = 420):
        env = {**os.environ, "KUBECONFIG": as_editor.kubeconfig, "AWS_ACCESS_KEY_ID": key}
        env |= {"AWS_SECRET_ACCESS_KEY": secret}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        started = time.monotonic()
        # The node has 2 CPUs; deploy.cpu_request is 1, and a rolling update runs a second
        # pod beside the first (maxSurge): 2.1 CPUs with CoreDNS. Half a CPU each fits.
        result = subprocess.run(
            [
                REPO / ".venv/bin/imagelingo",
                "-p",
                "deploy.cpu_request=500m",
                "deploy",
                *args,
                "--target",
                "kserve",
                "--namespace",
                NS,
                "--mode",
                "Standard",
                "--timeout",
                str(timeout),
                "--storage-uri",
                "s3://mlpipeline/imagelingo/model-store",
                "--s3-endpoint-url",
                f"http://{s3}:9000",
                "--out",
                tmp / "deploy-out",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + 120,
        )
        return result, round(time.monotonic() - started, 1)

    def serving() -> tuple[set[str], dict]:
        """The storage URIs the predictor's live pods were made for, and the Ready condition."""
        pods = admin.get("-n", NS, "pods", "-l", f"serving.kserve.io/inferenceservice={NAME}")
        uris = {
            p["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"]
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
        }
        conditions = admin.get("-n", NS, "isvc", NAME)["status"]["conditions"]
        return uris, next(c for c in conditions if c["type"] == "Ready")

    def captions(call: str) -> list[dict]:
        body = json.dumps({"instances": [{"data": base64.b64encode(images[0]).decode()}]})
        bad = json.dumps({"instances": [{"data": base64.b64encode(b"not an image").decode()}]})
        url = f"{SERVICE}/v1/models/{NAME}:predict"
        return call_from_pod(
            admin,
            PROFILE,
            call,
            [
                {"name": "image", "url": url, "body": body},
                {"name": "not an image", "url": url, "body": bad},
            ],
        )

    # create: deploy returns once the InferenceService serves it
    result, took = deploy(store("v1"))
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = serving()
    assert ready["status"] == "True" and len(uris) == 1, (uris, ready)
    v1 = uris.pop()
    answers = captions("client-v1")
    assert answers[0]["status"] == 200 and "caption" in answers[0]["body"], answers
    assert 400 <= answers[1]["status"] < 500, answers
    print(f"{target} create: {took} s; {json.loads(answers[0]['body'])}")
    # issue 29: tritonclient and the KServe SDKs (this venv's, and 0.15.2's in .venv-storage),
    # readiness, metadata, v1 and v2 inference, against the Service's ClusterIP from this host
    from podround import client_checks

    ip = admin.get("-n", NS, "service", f"{NAME}-predictor")["spec"]["clusterIP"]
    (tmp / "probe.jpg").write_bytes(images[0])
    storage_venv = {"storage_venv": str(REPO / ".venv-storage")}
    calls = client_checks(f"http://{ip}:80", NAME, tmp / "probe.jpg", storage_venv)
    assert len(calls) >= 20 and all(c["ok"] for c in calls), [c for c in calls if not c["ok"]]
    print(f"{target} clients: {len(calls)}/{len(calls)} calls succeeded")

    # replace with a new model version: returns when only the new pods serve
    result, took = deploy(store("v2"))
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = serving()
    assert ready["status"] == "True" and len(uris) == 1 and v1 not in uris, (uris, ready)
    v2 = uris.pop()
    assert captions("client-v2")[0]["status"] == 200
    print(f"{target} replace: {took} s")

    # a broken model: deploy fails within its timeout, naming what the pods say; v2 serves on
    result, took = deploy(store("v3", broken=True), timeout=150)
    assert result.returncode != 0 and took < 150 + 60, (result.returncode, took)
    assert "not rolled out after 150 s" in result.stderr, result.stderr
    assert "running, not ready (its readiness probe fails)" in result.stderr, result.stderr
    assert "last event Unhealthy: Readiness probe failed" in result.stderr, result.stderr
    print(f"{target} broken model: {result.stderr.strip().splitlines()[-1]}")
    if capture := os.environ.get("BOX_E2E_CAPTURE"):  # the Pods as the kubelet wrote them
        pods = admin.get("-n", NS, "pods", "-l", f"serving.kserve.io/inferenceservice={NAME}")
        Path(capture, f"{target}-broken-model-pods.json").write_text(json.dumps(pods, indent=1))
        events = admin.get("-n", NS, "events", "--field-selector", "type=Warning")
        Path(capture, f"{target}-warnings.json").write_text(json.dumps(events, indent=1))
    assert captions("client-v3")[0]["status"] == 200

    # rollback to the version before: only v2's pods again
    result, took = deploy("--rollback")
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = serving()
    assert uris == {v2} and ready["status"] == "True", (uris, ready)
    print(f"{target} rollback: {took} s")
