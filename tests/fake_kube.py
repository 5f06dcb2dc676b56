"""A stand-in Kubernetes API server on 127.0.0.1 for the deploy tests (no cluster runs here).

It speaks the REST paths the kubernetes client uses for the objects deploy reads and writes, with
the API server's semantics that matter to a rollout: 404 Status bodies, resourceVersion and
generation (a PUT with a stale resourceVersion is a 409 Conflict), POST vs PUT, JSON merge patch
(RFC 7386: a field the patch omits is kept, null deletes it), generation moved by spec changes
only (as for a CRD with a status subresource), and admission of InferenceServices against the CRD
schema of the KServe release it plays (`kserve_version`: 422 on an unknown or mistyped field, as
`kubectl apply` with strict field validation). It serves that release's InferenceService CRD, and
tests/fake_kserve.py plays KServe's controller, lagging one step behind each read and writing the
status fields KServe writes; `seen` holds the specs it reconciled, so tests read exactly what
KServe would run.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kserve_crds
import yaml
from fake_kserve import KServeController, webhook

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
DEPLOYMENTS = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments$")
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceservices.serving.kserve.io"
S3_ANNOTATIONS = {  # what manifests/secrets/minio gives the Secret
    "serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000",
    "serving.kserve.io/s3-usehttps": "0",
}
PROFILE = {"app.kubernetes.io/part-of": "kubeflow-profile"}


@functools.cache
def _crd(version: str) -> dict:
    path = kserve_crds.crd_path(version, "InferenceService")
    return yaml.load(gzip.decompress(path.read_bytes()), Loader=yaml.CSafeLoader)


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKube:
    def __init__(self, kserve_version: str = kserve_crds.NEWEST):
        self.kserve_version = kserve_version
        self.controller = KServeController(kserve_version)
        self.seen = self.controller.seen  # (generation, spec) KServe reconciled, in order
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.version = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- state --------------------------------------------------------------------------
    def add(self, path: str, obj: dict) -> None:
        self.objects[path] = obj

    def add_namespace(
        self,
        ns: str,
        secret_data: dict | None = None,
        runtime: bool = True,
        labels: dict | None = None,
        secret_annotations: dict | None = None,
    ):
        """A namespace as manifests/overlays/minio makes it (profile label by default), its
        ServiceAccount, the S3 Secret (with `secret_data`) and the runtimes."""
        labels = {**(PROFILE if labels is None else labels), "kubernetes.io/metadata.name": ns}
        namespace = {"kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        self.add(f"/api/v1/namespaces/{ns}", namespace)
        account = {"metadata": {"name": "imagelingo-deployer", "namespace": ns}}
        account["secrets"] = [{"name": "imagelingo-s3"}]
        self.add(f"/api/v1/namespaces/{ns}/serviceaccounts/imagelingo-deployer", account)
        if secret_data is not None:
            self.add(
                f"/api/v1/namespaces/{ns}/secrets/imagelingo-s3",
                {
                    "metadata": {
                        "name": "imagelingo-s3",
                        "namespace": ns,
                        "annotations": S3_ANNOTATIONS
                        if secret_annotations is None
                        else secret_annotations,
                    },
                    "data": secret_data,
                },
            )
        if runtime:
            for name in ("imagelingo-torchserve", "imagelingo-kserve"):
                self.add(
                    f"/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes/{name}",
                    {"metadata": {"name": name}},
                )

    def add_discovery(self) -> None:
        """Legacy discovery documents for the kinds the manifests hold, enough for
        `kubectl apply --dry-run=client` to map them (it then GETs each object: 404, create)."""

        def resource(name, kind, namespaced=True):
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            return {
                "name": name,
                "singularName": "",
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }

        lists = {
            "v1": [
                resource("namespaces", "Namespace", False),
                resource("serviceaccounts", "ServiceAccount"),
                resource("secrets", "Secret"),
            ],
            "rbac.authorization.k8s.io/v1": [
                resource("roles", "Role"),
                resource("rolebindings", "RoleBinding"),
            ],
            "networking.k8s.io/v1": [resource("networkpolicies", "NetworkPolicy")],
            "serving.kserve.io/v1beta1": [resource("inferenceservices", "InferenceService")],
            "serving.kserve.io/v1alpha1": [resource("servingruntimes", "ServingRuntime")],
        }
        self.add("/api", {"kind": "APIVersions", "versions": ["v1"]})
        groups: dict[str, list[str]] = {}
        for group_version, resources in lists.items():
            path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            self.add(
                path,
                {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources},
            )
            if "/" in group_version:
                groups.setdefault(group_version.split("/")[0], []).append(group_version)
        self.add(
            "/apis",
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": name,
                        "versions": [
                            {"groupVersion": gv, "version": gv.split("/")[1]} for gv in versions
                        ],
                        "preferredVersion": {
                            "groupVersion": versions[0],
                            "version": versions[0].split("/")[1],
                        },
                    }
                    for name, versions in groups.items()
                ],
            },
        )

    def isvc(self, ns: str, name: str) -> dict | None:
        return self.objects.get(f"{ISVC.format(ns=ns)}/{name}")

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "fake"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # --- the API --------------------------------------------------------------------------
    def _store(self, path: str, obj: dict, previous: dict | None) -> dict:
        status = obj.pop("status", None)  # status and generation are the server's
        obj["metadata"].pop("generation", None)
        if obj.get("kind") == "InferenceService":
            webhook(obj, self.kserve_version)
        kind = obj.get("kind")
        errors = kserve_crds.errors(obj, self.kserve_version) if kind in kserve_crds.KINDS else []
        if errors:
            return self._status(422, "Invalid", "; ".join(errors))
        self.version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.version)
        generation = (previous or {}).get("metadata", {}).get("generation", 0)
        if previous is None or previous.get("spec") != obj.get("spec"):
            generation += 1
        meta["generation"] = generation
        if obj.get("kind") == "InferenceService":  # KServe's finalizer; the status stays
            meta.setdefault("finalizers", ["inferenceservice.finalizers"])
            obj["status"] = (previous or {}).get("status") or {}
        elif status is not None:
            obj["status"] = status
        self.objects[path] = obj
        return obj

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict:
        return {
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }

    def handle(self, method: str, path: str, body: dict | None) -> dict:
        with self.lock:
            self.requests.append((method, path))
            ns = re.match(r"^/api(?:s/[^/]+)?/v1(?:beta1|alpha1)?/namespaces/([^/]+)", path)
            if ns and f"/api/v1/namespaces/{ns.group(1)}" not in self.objects:
                return self._status(404, "NotFound", f'namespaces "{ns.group(1)}" not found')
            if method == "GET":
                return self._get(path)
            if method == "POST":
                target = f"{path}/{body['metadata']['name']}"
                if target in self.objects:
                    return self._status(409, "AlreadyExists", f"{target} already exists")
                return copy.deepcopy(self._store(target, body, None))
            current = self.objects.get(path)
            if current is None:
                return self._status(404, "NotFound", f"{path} not found")
            if method == "PUT":
                if (
                    body["metadata"].get("resourceVersion")
                    != current["metadata"]["resourceVersion"]
                ):
                    return self._status(409, "Conflict", "the object has been modified")
                return copy.deepcopy(self._store(path, body, current))
            if method == "PATCH":
                merged = merge_patch(current, body)
                return copy.deepcopy(self._store(path, merged, current))
            return self._status(405, "MethodNotAllowed", method)

    def _get(self, path: str) -> dict:
        """What is stored; then KServe's controller takes a step (it lags behind the reads)."""
        deployments = DEPLOYMENTS.match(path)
        if deployments:
            out = {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}}
            out["items"] = self.controller.deployment_list(deployments.group(1))
            for item in out["items"]:
                item.update(kind="Deployment", apiVersion="apps/v1")
            self._reconcile(f"{ISVC.format(ns=deployments.group(1))}/")
            return out
        if path == CRD:
            return self.crd()
        if path not in self.objects:
            return self._status(404, "NotFound", f"{path} not found")
        out = copy.deepcopy(self.objects[path])
        if out.get("kind") == "InferenceService":
            self._reconcile(path)
        return out

    def _reconcile(self, prefix: str) -> None:
        for path, obj in self.objects.items():
            if path.startswith(prefix) and obj.get("kind") == "InferenceService":
                status = copy.deepcopy(obj.get("status"))
                self.controller.step(obj)
                if obj.get("status") != status:  # a status write is a write: a new
                    self.version += 1  # resourceVersion, so a PUT with the one read before
                    obj["metadata"]["resourceVersion"] = str(self.version)  # it gets a 409

    def crd(self) -> dict:
        """The InferenceService CRD of the KServe release played (fixtures: exact copies)."""
        return _crd(self.kserve_version)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                out = fake.handle(self.command, path, body)
                if out.get("kind") == "Status":
                    code = out["code"]
                else:
                    code = 201 if self.command == "POST" else 200
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _reply

            def log_message(self, *args):
                pass

        return Handler
