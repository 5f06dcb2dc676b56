"""The control plane the box's deploy tests run against (box/NOTES-kserve.md): the real
kube-apiserver, kube-controller-manager and KServe's controller manager with its webhooks, built
from source and installed from what Kubeflow 1.11.0 (KServe v0.15.2, Kubernetes v1.34.4) and 1.10.2
(v0.15.0, v1.32.13) install, and KServe v0.20.0's own install (Standard mode only), with Knative
Serving's CRDs (KNATIVE_CRDS=1: KServe builds the Knative Service; no Knative controller runs, nor a
kubelet, so nothing becomes Ready; tests/box/test_e2e.py has the kubelet). The `box` fixture
starts one per target and test module (about a minute each on the project's machine; root, Go and
box/bin built); a module imports it (not a conftest.py here: tests import `conftest` by name, and
a second one in tests/box would shadow tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOX = REPO / "box"
REFERENCE = REPO.parent / "shared" / "cluster-reference"
TARGETS = {
    "kubeflow-1.11": ("v0.15.2", "v1.34.4"),
    "kubeflow-1.10": ("v0.15.0", "v1.32.13"),
    "kserve-0.20": ("v0.20.0", "v1.34.4"),  # KServe's own install, standalone
}
NS = "imagelingo"
# the README's selector: the overlay without the InferenceService, which deploy writes
NOT_DEPLOYS = "app.kubernetes.io/managed-by!=imagelingo-deploy"


def missing(target: str) -> str:
    """Why the control plane for `target` cannot start here ("" if it can)."""
    if os.environ.get("IMAGELINGO_BOX") != "1":
        return "starts a control plane per target (minutes): set IMAGELINGO_BOX=1 to run it"
    kserve, kubernetes = TARGETS[target]
    needed = [BOX / f"bin/kserve-{kserve}/manager", REFERENCE]
    needed += [BOX / f"bin/{kubernetes}/{b}" for b in ("etcd", "kube-apiserver", "kubectl")]
    needed.append(BOX / f"bin/{kubernetes}/kube-controller-manager")
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        return (
            f"the box for {target} is not built: {', '.join(absent)} absent (box/NOTES-kserve.md)"
        )
    if os.geteuid() != 0:
        return "the box needs root (ip addr add on lo, unshare --mount)"
    if not shutil.which("go"):
        return "the box needs Go (start-kserve.sh reads GOMODCACHE)"
    return ""


def box_script(name: str, *args: str, timeout: float = 600, **env: str):
    return subprocess.run(
        ["nice", "-n", "19", str(BOX / "kserve" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kubectl(plane: dict, *args, stdin: str | None = None, check: bool = True):
    """kubectl of the target's Kubernetes release, as the control plane's admin."""
    done = subprocess.run(
        [plane["K"], *map(str, args)],
        cwd=REPO,
        env={**os.environ, "KUBECONFIG": plane["KUBECONFIG"]},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(map(str, args))}:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module", params=list(TARGETS))
def box(request, tmp_path_factory):
    """A started control plane for one target with manifests/overlays/minio-standard's namespace
    applied as the README applies it (all but the InferenceService) and its S3 Secret; stopped
    afterwards."""
    target = request.param
    if why := missing(target):
        pytest.skip(why)
    try:
        started = box_script("start-kserve.sh", target, KNATIVE_CRDS="1")
        output = started.stdout + started.stderr
    except subprocess.TimeoutExpired as exc:
        output, started = (exc.stdout or b"").decode(), None
    workdir = re.search(r"work=(\S+)", output)
    try:
        if started is None or started.returncode != 0:
            pytest.fail(f"start-kserve.sh {target} failed:\n{output[-3000:]}")
        env = dict(
            pair.split("=", 1)
            for pair in shlex.split((Path(workdir.group(1)) / "env").read_text())[1:]
        )
        plane = {**env, "TARGET": target}
        secrets = tmp_path_factory.mktemp("secrets")
        shutil.copy(REPO / "manifests/secrets/minio/kustomization.yaml", secrets)
        (secrets / "s3.env").write_text("AWS_ACCESS_KEY_ID=box\nAWS_SECRET_ACCESS_KEY=box\n")
        overlay = REPO / "manifests/overlays/minio-standard"
        kubectl(plane, "apply", "-k", overlay, "-l", NOT_DEPLOYS)
        kubectl(plane, "apply", "-k", secrets)
        yield plane
    finally:
        if workdir:
            box_script("stop-kserve.sh", workdir.group(1), timeout=120)


@pytest.fixture
def as_admin(box, monkeypatch):
    """The control plane's admin kubeconfig in the environment, as a user's kubectl context."""
    monkeypatch.setenv("KUBECONFIG", box["KUBECONFIG"])
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return box
