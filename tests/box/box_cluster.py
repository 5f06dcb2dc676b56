"""What the box's tests do to its cluster, as a Kubeflow user and admin would: kubectl of the
release's Kubernetes, a profile namespace as Kubeflow's profile controller makes it, a
ServiceAccount's kubeconfig, and a pod in a namespace that calls a URL (where a KFP task calls
from); and, for every box test, the targets and what each needs built (`missing`)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from imagelingo.cluster.platforms import TARGETS as PLATFORMS

REPO = Path(__file__).resolve().parents[2]
BOX = REPO / "box"
REFERENCE = REPO.parent / "shared" / "cluster-reference"
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    kubernetes: str
    kserve: str
    release: str = ""  # the Kubeflow release installed; "" is KServe's own install
    store: str = ""  # the object store box/up.sh runs (its binary under box/objectstore/bin)


def _release(name: str, kubernetes: str, store: str) -> Target:
    """A Kubeflow target: its KServe and release from the support matrix (platforms.py); the
    Kubernetes it is checked on (its README) and the store's binary are the box's."""
    matrix = PLATFORMS[name]
    return Target(kubernetes, f"v{matrix.kserve}", f"v{matrix.kubeflow}", store)


TARGETS = {
    "kubeflow-1.11": _release("kubeflow-1.11", "v1.34.4", "weed"),
    "kubeflow-1.10": _release("kubeflow-1.10", "v1.32.13", "minio"),
    # KServe's own install, the newest KServe, with the Knative 1.21.1 it installs (up.sh) and,
    # KServe shipping no object store, Kubeflow 1.11's SeaweedFS as the S3 store users bring
    "kserve-0.20": Target("v1.34.4", f"v{PLATFORMS['kfp-2.17'].kserve}", store="weed"),
}


def rbac_proxy_version() -> str:
    """The kube-rbac-proxy box/build.sh builds: the one its consumer module requires."""
    gomod = (BOX / "kube-rbac-proxy" / "go.mod").read_text()
    return re.search(r"^require github.com/brancz/kube-rbac-proxy (\S+)", gomod, re.M).group(1)


def cert_manager_version() -> str:
    """The cert-manager version box/certmanager/go.mod builds."""
    text = (BOX / "certmanager/go.mod").read_text()
    return re.search(r"^require github.com/cert-manager/cert-manager (v\S+)$", text, re.M).group(1)


def missing(name: str, node: bool = False) -> str:
    """Why the box for target `name` cannot start here ("" if it can): its control plane alone
    (box/kserve/start-kserve.sh), or with the node, Knative and the object store (box/up.sh)."""
    if os.environ.get("IMAGELINGO_BOX") != "1":
        return "starts the box (minutes): set IMAGELINGO_BOX=1 (make box-check, make box-e2e)"
    target = TARGETS[name]
    k8s = BOX / "bin" / target.kubernetes
    needed = [REFERENCE, BOX / f"bin/kserve-{target.kserve}/manager"]
    needed += [k8s / b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")]
    if node:
        # MinIO: the pinned release if it was built by hand (objectstore/images.sh's choice)
        names = [target.store]
        if target.store == "minio":
            names.append("minio-RELEASE.2019-08-14T20-37-41Z")
        stores = [BOX / "objectstore/bin" / n for n in names]
        store = next((s for s in stores if s.exists()), stores[0])
        proxy = BOX / f"bin/kube-rbac-proxy-{rbac_proxy_version()}/kube-rbac-proxy"
        needed += [k8s / "kubelet", k8s / "coredns", proxy, store]
        # up.sh's Knative (KServe 0.20: its 1.21.1) and, for a Kubeflow release, cert-manager
        needed.append(BOX / "knative/bin/kingress")
        if not target.release:
            needed.append(BOX / "knative/v1.21/bin/controller")
        cert_manager = BOX / f"bin/cert-manager-{cert_manager_version()}/controller"
        needed += [cert_manager] if target.release else []
        needed += [REPO / ".venv-kfs/pyvenv.cfg", REPO / ".venv-storage/pyvenv.cfg"]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        how = f"box/build-target.sh {name}"
        return f"the box for {name} is not built: {', '.join(absent)} absent ({how})"
    if os.geteuid() != 0:
        return "the box needs root (ip addr add on lo, unshare --mount, a node)"
    if not shutil.which("go"):
        return "the box needs Go (start-kserve.sh reads GOMODCACHE)"
    if node and not shutil.which("docker-registry"):  # the registry the manager's Pod pulls from
        return f"docker-registry absent: box/build-target.sh {name} installs it"
    return ""


def poll(what: str, found: Callable[[], T | None], timeout_s: float, every_s: float = 1) -> T:
    """`found()`'s first answer that is not empty, asked every `every_s` seconds; after
    `timeout_s` an AssertionError saying `what` was not seen."""
    deadline = time.monotonic() + timeout_s
    while not (answer := found()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {timeout_s} s")
        time.sleep(every_s)
    return answer


# the image the client pod runs: Debian's python3 (box/kubelet/images/debian-python.sh)
CLIENT_IMAGE = "box.local/debian-python:bookworm"


class Cluster:
    """kubectl against a started box (box/up.sh's env file), as admin or as another account."""

    def __init__(self, env_file: Path, kubeconfig: str | None = None) -> None:
        pairs = (p.split("=", 1) for p in shlex.split(env_file.read_text()) if "=" in p)
        self.env = dict(pairs)
        self.kubeconfig = kubeconfig or self.env["KUBECONFIG"]

    def kubectl(self, *args, stdin: str | None = None, check: bool = True, timeout=300):
        """kubectl in the repository's root (the README's commands name paths from there)."""
        result = subprocess.run(
            [self.env["K"], "--kubeconfig", self.kubeconfig, *map(str, args)],
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))}:\n{result.stderr[-3000:]}")
        return result

    def apply(self, objects: list[dict]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def as_service_account(self, namespace: str, name: str, path: Path) -> Cluster:
        """A kubeconfig with a token of that ServiceAccount (the TokenRequest API, as a pod's
        projected token): what a KFP task running as it holds."""
        token = self.kubectl("-n", namespace, "create", "token", name, "--duration=2h").stdout
        path.write_text(Path(self.kubeconfig).read_text())
        other = Cluster.__new__(Cluster)
        other.env, other.kubeconfig = self.env, str(path)
        other.kubectl("config", "set-credentials", name, f"--token={token.strip()}")
        other.kubectl("config", "set-context", "--current", f"--user={name}")
        return other


def release_objects(release: str, *selector: str) -> list[dict]:
    """Objects from what the release installs (box/manifests.py)."""
    out = subprocess.run(
        [sys.executable, str(BOX / "manifests.py"), release, *selector],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def profile_namespace(release: str, namespace: str, owner: str = "user@example.com") -> list[dict]:
    """The objects Kubeflow's profile controller makes for a Profile (kubeflow/dashboard v2.0.0
    components/profile-controller/controllers/profile_controller.go): the namespace with the
    `owner` annotation and `istio-injection: enabled` (:127-136), then the labels of the
    release's namespace-labels ConfigMap, added where absent (:137, :754-773); ServiceAccounts
    default-editor and default-viewer (:211, :219, :595-600), each bound by a RoleBinding of its
    own name to ClusterRole kubeflow-edit / kubeflow-view (:618-636); RoleBinding namespaceAdmin
    of the owner to kubeflow-admin (:230-245). Not made: Istio's AuthorizationPolicy (no Istio
    here) and the ResourceQuota (only when the Profile asks)."""
    (config,) = release_objects(
        release, "--kind", "ConfigMap", "--namespace", "kubeflow", "--name", "namespace-labels*"
    )
    labels = {"istio-injection": "enabled"}
    for key, value in yaml.safe_load(config["data"]["namespace-labels.yaml"]).items():
        if value:
            labels.setdefault(key, value)
    meta = {"name": namespace, "labels": labels, "annotations": {"owner": owner}}
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": meta}]
    bindings = [
        ("default-editor", "kubeflow-edit", "ServiceAccount"),
        ("default-viewer", "kubeflow-view", "ServiceAccount"),
        ("namespaceAdmin", "kubeflow-admin", "User"),
    ]
    for name, role, kind in bindings:
        if kind == "ServiceAccount":
            objects.append(sa(namespace, name))
            subject = {"kind": kind, "name": name, "namespace": namespace}
            annotations = {}
        else:
            subject = {"kind": kind, "name": owner, "apiGroup": "rbac.authorization.k8s.io"}
            annotations = {"user": owner, "role": "admin"}
        objects.append(role_binding(namespace, name, "ClusterRole", role, subject, annotations))
    return objects


def sa(namespace: str, name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
    }


def role_binding(namespace, name, kind, role, subject, annotations=None) -> dict:
    meta = {"name": name, "namespace": namespace, "annotations": annotations or {}}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": ref,
        "subjects": [subject],
    }


# Runs in the client pod (Debian's python3, standard library only): each request's status and
# body, one JSON line each.
CLIENT = """
import json, sys, urllib.request, urllib.error
for line in open("/requests/requests.jsonl"):
    r = json.loads(line)
    headers = {"Content-Type": "application/json", **r.get("headers", {})}
    request = urllib.request.Request(r["url"], r["body"].encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    except OSError as error:
        status, body = 0, repr(error)
    print(json.dumps({"name": r["name"], "status": status, "body": body[:2000]}), flush=True)
"""


def call_from_pod(cluster: Cluster, namespace: str, name: str, requests: list[dict]) -> list[dict]:
    """POSTs each request ({"name", "url", "body"}, optionally "headers") from a pod in
    `namespace`, as a KFP task there would; returns what each got ({"name", "status", "body"})."""
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    data = {"requests.jsonl": base64.b64encode(lines.encode()).decode()}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "binaryData": data,
    }
    container = {
        "name": "client",
        "image": CLIENT_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", CLIENT],
        "volumeMounts": [{"name": "requests", "mountPath": "/requests", "readOnly": True}],
        # Pod Security "restricted", which Kubeflow 1.11's `kubeflow` namespace enforces
        "securityContext": {
            "runAsUser": 65534,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "requests", "configMap": {"name": name}}],
        },
    }
    cluster.kubectl("-n", namespace, "delete", "pod,configmap", name, "--ignore-not-found")
    # create, not apply: apply's last-applied annotation would hold the requests a second time
    # (an annotation may not exceed 256 KiB)
    cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump_all([config, pod]))

    def finished() -> str | None:
        phase = cluster.get("-n", namespace, "pod", name).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = poll(f"client pod {namespace}/{name} finished", finished, 300)
    except AssertionError:
        phase = "not finished after 300 s"
    logs = cluster.kubectl("-n", namespace, "logs", name, check=False).stdout
    if phase != "Succeeded":
        status = cluster.get("-n", namespace, "pod", name).get("status", {})
        raise AssertionError(f"client pod {namespace}/{name} {phase}: {status}\n{logs[-3000:]}")
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
