"""Fixtures of the box's tests: `box` starts a control plane (control_plane.py) per target and
test module (about a minute each on the project's machine); needs root (the pod IP on lo, a mount
namespace for the manager's ServiceAccount token), Go (for GOMODCACHE) and the built binaries in
box/bin. Left out of `make test` unless asked for: IMAGELINGO_BOX=1 pytest -q tests/box
(`make box-check` runs kubeflow-1.11's control-plane tests, as CI does).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from control_plane import NOT_DEPLOYS, REPO, TARGETS, box_script, kubectl, missing


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
