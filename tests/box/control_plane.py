"""The control plane the box's deploy tests run against (box/NOTES-kserve.md): the real
kube-apiserver, kube-controller-manager and KServe's controller manager with its webhooks, built
from source and installed from what Kubeflow 1.11.0 (KServe v0.15.2, Kubernetes v1.34.4) and 1.10.2
(v0.15.0, v1.32.13) install, and KServe v0.20.0's own install (with its Knative 1.21.1), with
Knative Serving's CRDs (KNATIVE_CRDS=1: KServe builds the Knative Service; no Knative controller
runs, nor a kubelet, so nothing becomes Ready; tests/box/test_e2e.py has the kubelet). The `box`
fixture starts one per target and test module (about a minute each on the project's machine; root,
Go and box/bin built); a module imports it (not a conftest.py here: tests import `conftest` by
name, and a second one in tests/box would shadow tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from box_cluster import BOX, REPO, TARGETS, Cluster, missing

NS = "imagelingo"
# the README's selector: the overlay without the InferenceService, which deploy writes
NOT_DEPLOYS = "app.kubernetes.io/managed-by!=imagelingo-deploy"


def box_script(name: str, *args: str, timeout: float = 600, **env: str):
    return subprocess.run(
        ["nice", "-n", "19", str(BOX / "kserve" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
        plane = Cluster(Path(workdir.group(1)) / "env")  # its TARGET too
        secrets = tmp_path_factory.mktemp("secrets")
        shutil.copy(REPO / "manifests/secrets/minio/kustomization.yaml", secrets)
        (secrets / "s3.env").write_text("AWS_ACCESS_KEY_ID=box\nAWS_SECRET_ACCESS_KEY=box\n")
        overlay = REPO / "manifests/overlays/minio-standard"
        plane.kubectl("apply", "-k", overlay, "-l", NOT_DEPLOYS)
        plane.kubectl("apply", "-k", secrets)
        yield plane
    finally:
        if workdir:
            box_script("stop-kserve.sh", workdir.group(1), timeout=120)


@pytest.fixture
def as_admin(box, monkeypatch):
    """The control plane's admin kubeconfig in the environment, as a user's kubectl context."""
    monkeypatch.setenv("KUBECONFIG", box.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return box
