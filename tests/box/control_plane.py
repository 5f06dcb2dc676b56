"""The control plane the box's deploy tests run against (box/NOTES-kserve.md): the real
kube-apiserver, kube-controller-manager and KServe's controller manager with its webhooks, built
from source and installed from what Kubeflow 1.11.0 (KServe v0.15.2, Kubernetes v1.34.4) and 1.10.2
(v0.15.0, v1.32.13) install, and KServe v0.20.0's own install (Standard mode only), with Knative
Serving's CRDs (KNATIVE_CRDS=1: KServe builds the Knative Service; no Knative controller runs, nor a
kubelet, so nothing becomes Ready; tests/box/test_e2e.py has the kubelet). The `box` fixture
(conftest.py) starts one per target and test module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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
