"""The mission's cluster path on the box (box/up.sh): the release's Kubernetes with the real
kubelet, KServe's controller and webhooks installed from the release, the object store it ships.
Nothing here is a fake: `kubectl apply -k` of every overlay is admitted (or not) by the real API
server and KServe's webhooks; `imagelingo deploy` runs as a profile's `default-editor` with RBAC
deciding; the predictor is the Pod KServe builds, run by the kubelet from images made here
(box/kserve/images.sh); it is called from a pod in the profile namespace through the Standard
Service, as a KFP task there would call it.

Knative mode too: Knative Serving's own Pods on the same node (box/knative/on-node.sh), the
predictor called through its Knative route (the cluster-local gateway is the KIngress stand-in,
box/README.md), and through the InferenceService's own address and URL (KServe's VirtualService,
served by the same stand-in), a canary, its promotion and a rollback.

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
    TARGETS,
    Cluster,
    call_from_pod,
    missing,
    profile_namespace,
    release_objects,
    role_binding,
)

from imagelingo.cluster.kserve import SOURCE_URI

pytestmark = pytest.mark.slow

PROFILE = "kubeflow-user-example-com"  # Kubeflow's example profile
NS, NAME = "imagelingo", "imagelingo"  # the overlay's namespace and InferenceService
# Standard: the predictor's Service; Knative: the same name is the Knative Service's cluster-local
# address (an ExternalName to knative-local-gateway.istio-system, then its Route)
SERVICE = f"http://{NAME}-predictor.{NS}.svc.cluster.local"
sys.path.insert(0, str(REPO / "serving" / "kfs-runtime"))


@pytest.fixture(scope="module", params=list(TARGETS))
def box(request, tmp_path_factory):
    target = request.param
    if why := missing(target, node=True):
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


def b64(value: str) -> str:
    return base64.b64decode(value).decode()


class Editor:
    """A profile's `default-editor` deploying with `imagelingo deploy`, as the pipeline's deploy
    task in that namespace does, and a client pod there calling the predictor. On KServe's own
    install (no Kubeflow, no profiles): standalone KFP's `kubeflow/pipeline-runner`, the account
    manifests/base binds, and a client pod in `kubeflow`."""

    def __init__(self, target: str, admin: Cluster, tmp: Path) -> None:
        from inputs import choose_model, probe_images

        self.target, self.admin, self.tmp = target, admin, tmp
        release = TARGETS[target].release
        if release:  # a profile namespace as Kubeflow makes it, and the release's aggregated roles
            admin.apply(release_objects(release, "--kind", "ClusterRole", "--name", "kubeflow-*"))
            admin.apply(profile_namespace(release, PROFILE))
            self.caller = (PROFILE, "default-editor")
        else:  # the account standalone KFP runs its tasks as (kubeflow/pipelines' manifests)
            self.caller = ("kubeflow", "pipeline-runner")
            admin.kubectl("-n", "kubeflow", "create", "serviceaccount", "pipeline-runner")
        # The S3 Secret from the release's own keys (kubeflow-admin: any prefix; a 1.11
        # profile's own identity may not list, which KServe's storage-initializer does: README,
        # S3 section)
        keys = admin.get("-n", "kubeflow", "secret", "mlpipeline-minio-artifact")["data"]
        self.key, self.secret = (b64(keys[k]) for k in ("accesskey", "secretkey"))
        self.s3 = admin.get("-n", "kubeflow", "service", "minio-service")["spec"]["clusterIP"]
        kubeconfig = tmp / "editor.kubeconfig"
        self.as_editor = admin.as_service_account(*self.caller, kubeconfig)
        self.model, _ = choose_model(None, tmp)
        self.images, _ = probe_images(tmp)

    def overlay(self, name: str) -> None:
        """The overlay as the README applies it, deploy's Role bound to the profile's editor."""
        admin = self.admin
        overlay = REPO / "manifests" / "overlays" / name
        not_deploys = "app.kubernetes.io/managed-by!=imagelingo-deploy"
        admin.kubectl("apply", "-k", overlay, "-l", not_deploys)
        if self.caller[0] == PROFILE:
            # README: "on a multi-user Kubeflow ... bind your profile's default-editor"
            editor = {"kind": "ServiceAccount", "name": "default-editor", "namespace": PROFILE}
            binding = role_binding(
                NS, "imagelingo-deploy-profile", "Role", "imagelingo-deploy", editor
            )
            admin.apply([binding])
        secrets = self.tmp / f"secrets-{name}"
        secrets.mkdir()
        shutil.copy(REPO / "manifests/secrets/minio/kustomization.yaml", secrets)
        (secrets / "s3.env").write_text(
            f"AWS_ACCESS_KEY_ID={self.key}\nAWS_SECRET_ACCESS_KEY={self.secret}\n"
        )
        admin.kubectl("apply", "-k", secrets)

    def store(self, version: str, broken: bool = False) -> Path:
        out = self.tmp / f"store-{version}"
        subprocess.run(
            [REPO / ".venv/bin/imagelingo", "package", "--model", self.model, "--out", out],
            check=True,
            capture_output=True,
        )
        with open(out / "config" / "config.properties", "a") as f:
            f.write(f"# {version}\n")  # each version its own content hash, its own storage URI
        if broken:
            (out / "model-store" / "imagelingo.mar").write_bytes(b"not a model archive")
        return out

    def deploy(self, mode: str, *args, timeout: int = 420):
        env = {**os.environ, "KUBECONFIG": self.as_editor.kubeconfig}
        env |= {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        started = time.monotonic()
        # The node has 2 CPUs; deploy.cpu_request is 1, and a rollout runs a second pod beside
        # the first (maxSurge; a Knative canary keeps both): with CoreDNS (and Knative's own
        # pods, 0.63 CPU) 400m each fits.
        result = subprocess.run(
            [
                REPO / ".venv/bin/imagelingo",
                "-p",
                "deploy.cpu_request=400m",
                "deploy",
                *args,
                "--target",
                "kserve",
                "--namespace",
                NS,
                "--mode",
                mode,
                "--timeout",
                str(timeout),
                "--storage-uri",
                "s3://mlpipeline/imagelingo/model-store",
                "--s3-endpoint-url",
                f"http://{self.s3}:9000",
                "--out",
                self.tmp / "deploy-out",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + 120,
        )
        return result, round(time.monotonic() - started, 1)

    def serving(self) -> tuple[set[str], dict]:
        """The storage URIs the predictor's live pods were made for, and the Ready condition."""
        pods = self.admin.get("-n", NS, "pods", "-l", f"serving.kserve.io/inferenceservice={NAME}")
        uris = {
            p["metadata"]["annotations"][SOURCE_URI]
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
        }
        conditions = self.admin.get("-n", NS, "isvc", NAME)["status"]["conditions"]
        return uris, next(c for c in conditions if c["type"] == "Ready")

    def captions(self, call: str, count=1, base: str = SERVICE, host: str = "") -> list[dict]:
        """`count` captions of an image, then a non-image, from a pod in the profile namespace:
        from `base` (the predictor's Service by default), with a Host header if `host`."""
        body = json.dumps({"instances": [{"data": base64.b64encode(self.images[0]).decode()}]})
        bad = json.dumps({"instances": [{"data": base64.b64encode(b"not an image").decode()}]})
        headers = {"Host": host} if host else {}
        asked = {"url": f"{base}/v1/models/{NAME}:predict", "headers": headers}
        image = [{"name": f"image {i}", "body": body, **asked} for i in range(count)]
        return call_from_pod(
            self.admin,
            self.caller[0],
            call,
            [*image, {"name": "not an image", "body": bad, **asked}],
        )

    def assert_captions(self, call: str, count: int = 1, **where: str) -> dict:
        answers = self.captions(call, count, **where)
        for answer in answers[:-1]:
            assert answer["status"] == 200 and "caption" in answer["body"], answers
        assert 400 <= answers[-1]["status"] < 500, answers
        return json.loads(answers[0]["body"])


@pytest.fixture(scope="module")
def editor(box):
    target, admin, tmp = box
    return Editor(target, admin, tmp)


def test_standard_mode_as_a_profile_editor(box, editor):
    target, admin, tmp = box
    editor.overlay("minio-standard")

    # create: deploy returns once the InferenceService serves it
    result, took = editor.deploy("Standard", editor.store("v1"))
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = editor.serving()
    assert ready["status"] == "True" and len(uris) == 1, (uris, ready)
    v1 = uris.pop()
    print(f"{target} create: {took} s; {editor.assert_captions('client-v1')}")
    # issue 29: tritonclient and the KServe SDKs (this venv's, and 0.15.2's in .venv-storage),
    # readiness, metadata, v1 and v2 inference, against the Service's ClusterIP from this host
    from podround import client_checks

    ip = admin.get("-n", NS, "service", f"{NAME}-predictor")["spec"]["clusterIP"]
    (tmp / "probe.jpg").write_bytes(editor.images[0])
    storage_venv = {"storage_venv": str(REPO / ".venv-storage")}
    calls = client_checks(f"http://{ip}:80", NAME, tmp / "probe.jpg", storage_venv)
    assert len(calls) >= 20 and all(c["ok"] for c in calls), [c for c in calls if not c["ok"]]
    print(f"{target} clients: {len(calls)}/{len(calls)} calls succeeded")

    # replace with a new model version: returns when only the new pods serve
    result, took = editor.deploy("Standard", editor.store("v2"))
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = editor.serving()
    assert ready["status"] == "True" and len(uris) == 1 and v1 not in uris, (uris, ready)
    v2 = uris.pop()
    editor.assert_captions("client-v2")
    print(f"{target} replace: {took} s")

    # a broken model: deploy fails within its timeout, naming what the pods say; v2 serves on
    result, took = editor.deploy("Standard", editor.store("v3", broken=True), timeout=150)
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
    editor.assert_captions("client-v3")

    # rollback to the version before: only v2's pods again
    result, took = editor.deploy("Standard", "--rollback")
    assert result.returncode == 0, result.stderr[-3000:]
    uris, ready = editor.serving()
    assert uris == {v2} and ready["status"] == "True", (uris, ready)
    print(f"{target} rollback: {took} s")


def traffic(admin: Cluster) -> dict[str, tuple[int, str]]:
    """The predictor's traffic as KServe reports it from the Knative Route: for each revision
    with traffic, (percent, the storage URI it was made for)."""
    status = admin.get("-n", NS, "isvc", NAME)["status"]["components"]["predictor"]
    split = {}
    for t in status.get("traffic", []):
        if t.get("percent"):
            revision = admin.get("-n", NS, "revision", t["revisionName"])
            split[t["revisionName"]] = (
                t["percent"],
                revision["metadata"]["annotations"][SOURCE_URI],
            )
    return split


def test_knative_mode_as_a_profile_editor(box, editor):
    """Knative Serving's controllers on the node make the predictor's Revisions and Route; the
    client pod calls it through the Route (the cluster-local gateway), during a canary too."""
    target, admin, _ = box
    # KServe refuses to switch an InferenceService's mode (NOTES-kserve.md): a new one
    admin.kubectl("-n", NS, "delete", "isvc", NAME, "--ignore-not-found", "--wait=true")
    editor.overlay("minio")

    def step(what: str, *args: str, calls: int = 1) -> dict[str, tuple[int, str]]:
        """deploy, then captions through the route; returns the traffic it left"""
        result, took = editor.deploy("Knative", *args)
        assert result.returncode == 0, f"{what}: {result.stderr[-3000:]}"
        split = traffic(admin)
        editor.assert_captions(f"kn-{what}", count=calls)
        print(f"{target} Knative {what}: {took} s; traffic {split}")
        return split

    first = step("create", editor.store("k1"))
    ((k1_percent, k1),) = first.values()
    assert k1_percent == 100, first
    ksvc = admin.get("-n", NS, "ksvc", f"{NAME}-predictor")
    assert ksvc["status"]["address"]["url"] == SERVICE, ksvc["status"]["address"]
    # The InferenceService's own address and URL, as KServe reports them: its VirtualService
    # (ingress_reconciler.go createIngress) routes both to the predictor's Route. The address
    # is its ExternalName Service to the local gateway; the URL's host goes through the ingress
    # gateway with that Host header (README, "Calling the endpoint").
    status = admin.get("-n", NS, "isvc", NAME)["status"]
    address = status["address"]["url"]
    assert address == f"http://{NAME}.{NS}.svc.cluster.local", status["address"]
    editor.assert_captions("kn-isvc-address", base=address)
    url_host = status["url"].split("/")[2]
    gateway = "http://istio-ingressgateway.istio-system.svc.cluster.local"
    editor.assert_captions("kn-isvc-url", base=gateway, host=url_host)
    print(f"{target} Knative: captions at {address} and at {status['url']} through {gateway}")

    # a canary: 30% to the new version's revision, 70% to the first; both serve the route
    split = step("canary", editor.store("k2"), "--canary-traffic-percent", "30", calls=6)
    by_percent = {percent: (revision, uri) for revision, (percent, uri) in split.items()}
    assert sorted(by_percent) == [30, 70], split
    assert by_percent[70] == (next(iter(first)), k1), (first, split)
    k2 = by_percent[30][1]
    assert k2 != k1, split

    # promote: all traffic to the canary's revision
    promoted = step("promote", "--promote")
    assert list(promoted.values()) == [(100, k2)], promoted

    # rollback after the promotion: the previous version rolled out again, a new revision
    rolled = step("rollback", "--rollback")
    assert list(rolled.values()) == [(100, k1)] and not set(rolled) & set(first), rolled
