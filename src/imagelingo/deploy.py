"""Stage 7, deploy: upload the model store, then create or replace the KServe InferenceService.

    target "kserve": check the cluster (namespace, ServiceAccount, S3 Secret, runtime, bucket),
                     upload the store to its own versioned prefix `<storage_uri>/<version>/`,
                     create the InferenceService or replace it (PUT: what is not rendered is gone),
                     wait for Ready, return its URL.
    target "local":  copy the model store and render inferenceservice.yaml into `out_dir`; no
                     cluster is touched (the embedded default, and what tests check).

This module is the one source of truth for the InferenceService: `manifests/base/
inferenceservice.yaml` is `render_manifest()` written out (tests/test_manifests.py keeps them
equal), and every InferenceService it can render is validated against the CRD schemas of KServe
0.15.0 (Kubeflow 1.10), 0.15.2 (Kubeflow 1.11) and 0.20.0 (tests/test_kserve_schemas.py). What
differs between those releases (mode names, spec.canary, what readiness means) is
imagelingo/cluster/kserve.py; deploy's `kserve_version` picks one (auto: read from the served
CRD; without a cluster, 0.15's API, which every release from 0.15 on accepts).

KServe 0.20 facts the renderer relies on (paths in ../shared/cluster-reference/kserve-controller/
v0.20.0/pkg/, line numbers of those copies):

- mode annotation `serving.kserve.io/deploymentMode` (constants/constants.go:115), values
  "Knative" / "Standard"; "Serverless" / "RawDeployment" are deprecated aliases that the webhook
  rewrites (constants.go:562-567, apis/serving/v1beta1/inference_service_defaults.go:164-176).
  The mode cannot change once the controller recorded it (inference_service_validation.go:680-692).
  KServe 0.15 knows only the old names (cluster/kserve.py): deploy writes what the release knows.
- Knative mode: scaleMetric is a KPA metric, concurrency or rps (validation.go:645-667);
  canaryTrafficPercent splits traffic between the latest revision and the last rolled-out one
  (reconcilers/knative/ksvc_reconciler.go:134-163), and only when there is a rolled-out one.
- Standard mode, autoscalerClass hpa: scaleMetric cpu or memory, scaleTarget a utilization
  percent (validation.go:446-466,527-561); canaryTrafficPercent is ignored, `spec.canary[]` is
  the canary (validation.go:183-262: Standard only, predictor.name required and different from
  the stable one, no autoscaling fields, minReplicas <= stable's); promotion = stable predictor
  takes the canary's name and model, canary entry removed (apis/.../inference_service.go:36-42);
  a predictor.name change needs a storageUri change (validation.go:703-713).
- `spec.predictor.model.name` must be empty (validation.go:291-292): KServe names the container
  kserve-container itself.
- runtime containers are merged with the predictor's container by strategic merge (isvc wins,
  args appended: controller/v1beta1/inferenceservice/utils/utils.go:253-265); of the runtime's
  pod spec only nodeSelector, affinity, tolerations, volumes, imagePullSecrets and schedulerName
  survive (utils.go:267-301), so the pod-level securityContext must be on the InferenceService.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from imagelingo.cluster.kserve import (
    ISVC_CRD,
    MODE_ANNOTATION,
    PORTABLE,
    KServe,
    knative_rolled_out,
    mode_of,
    standard_rolled_out,
    version_from_crd,
)
from imagelingo.config import settings
from imagelingo.errors import ImageLingoError

TARGETS = ("local", "kserve")
MODES = ("Knative", "Standard")
API_VERSION = "serving.kserve.io/v1beta1"
MODEL_FORMAT = "pytorch"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"  # constants.go:118
VERSION_ANNOTATION = "imagelingo.io/model-version"  # the store's content hash
REGISTRY_ANNOTATION = "imagelingo.io/registry-version"  # MLflow registry version, when known
PREVIOUS_URI_ANNOTATION = "imagelingo.io/previous-storage-uri"
# managed-by: `kubectl apply -k ... -l app.kubernetes.io/managed-by!=imagelingo-deploy` applies
# the overlays without the InferenceService, which belongs to `imagelingo deploy`.
LABELS = {
    "app.kubernetes.io/part-of": "imagelingo",
    "app.kubernetes.io/managed-by": "imagelingo-deploy",
}
# The runtimes an InferenceService may name (spec.predictor.model.runtime):
#   imagelingo-torchserve  the default: manifests/base/servingruntime.yaml, TorchServe answering
#                          KServe v1/v2 on 8080 itself, so 4xx status codes reach the client;
#   kserve-torchserve      KServe's stock ClusterServingRuntime (its wrapper turns every non-2xx
#                          answer into a 500: ../shared/cluster-reference/README.md FACT 7);
#   imagelingo-kserve      the native kserve predictor (manifests/components/native-predictor).
RUNTIMES = {
    "imagelingo-torchserve": "ServingRuntime",
    "kserve-torchserve": "ClusterServingRuntime",
    "imagelingo-kserve": "ServingRuntime",
}
# Knative: in-flight requests per replica (one full TorchServe batch); Standard: CPU utilization %.
DEFAULT_SCALE = {"Knative": ("concurrency", 8), "Standard": ("cpu", 80)}
# The Secret keys KServe's storage-initializer reads: credentials.s3 of inferenceservice-config
# (kserve-runtimes/v0.15.2/config/configmap/inferenceservice.yaml:625-645; v0.20.0 the same).
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Kubeflow's per-namespace pipeline Secret mlpipeline-minio-artifact names them otherwise
# (kubeflow-manifests/v1.11.0/.../pipelines-profile-controller/sync.py:347-377).
KUBEFLOW_S3_KEYS = ("accesskey", "secretkey")
# Where KServe finds the S3 endpoint: this annotation on the Secret, else the Secret's S3_ENDPOINT
# key, else inferenceservice-config (empty: AWS) (kserve-runtimes/v0.20.0/pkg/credentials/s3/
# s3_secret.go:62, utils.go:39).
S3_ENDPOINT_ANNOTATION = "serving.kserve.io/s3-endpoint"
# Kubeflow's object store admits only profile namespaces (this label), istio-system and kubeflow
# (kubeflow-manifests/v1.11.0/common/networkpolicies/base/minio.yaml; third-party/seaweedfs/base/
# seaweedfs/seaweedfs-networkpolicy.yaml:6-32; the label: applications/profiles/upstream/base/
# namespace-labels.yaml:18).
PROFILE_LABEL = ("app.kubernetes.io/part-of", "kubeflow-profile")
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The lock-down goes on the container: Knative (knative/serving knative-v1.23, commit 98e5ef90aa,
# pkg/apis/serving/fieldmask.go:711-741) admits all of it there, but rejects every pod-level
# securityContext field, seccompProfile included, unless an operator enabled the
# kubernetes.podspec-securitycontext or secure-pod-defaults features (fieldmask.go:667-706;
# both Disabled by default, pkg/apis/config/features.go:93,115). Standard mode gets the
# pod-level seccompProfile too (it also covers KServe's storage-initializer).
POD_SECURITY = {"seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@settings("deploy")
class DeployConfig:
    """params.yaml's `deploy` section: the defaults and what each means are written there."""

    name: str
    namespace: str
    storage_uri: str
    service_account: str
    s3_secret: str
    runtime: str
    mode: str
    protocol_version: str
    canary_traffic_percent: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    min_replicas: int
    max_replicas: int
    timeout_s: int

    def check(self) -> None:
        if self.protocol_version not in ("v1", "v2"):
            raise ImageLingoError(f"protocol_version must be v1 or v2, got {self.protocol_version}")
        if not -1 <= self.canary_traffic_percent <= 100:
            raise ImageLingoError(
                f"canary_traffic_percent must be 0-100 (or -1 for none), "
                f"got {self.canary_traffic_percent}"
            )
        if self.mode not in MODES:
            raise ImageLingoError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.runtime not in RUNTIMES:
            raise ImageLingoError(f"runtime must be one of {tuple(RUNTIMES)}, got {self.runtime!r}")
        for field in ("name", "namespace", "service_account"):
            value = getattr(self, field)
            if not NAME_PATTERN.match(value) or len(value) > 63:
                raise ImageLingoError(f"{field} {value!r} is not a valid Kubernetes name")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ImageLingoError(
                f"need 0 <= min_replicas <= max_replicas, max_replicas >= 1; "
                f"got {self.min_replicas}, {self.max_replicas}"
            )


# --- rendering (pure: no I/O) ------------------------------------------------------------------


def store_version(store_dir: Path) -> str:
    """12 hex digits of the sha256 over the store's files (paths and bytes): a new model, a new
    storage prefix; the same model, the same prefix."""
    digest = hashlib.sha256()
    for part in ("model-store", "config"):
        for path in sorted(p for p in (Path(store_dir) / part).rglob("*") if p.is_file()):
            digest.update(path.relative_to(store_dir).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def versioned_uri(storage_uri: str, version: str) -> str:
    return f"{storage_uri.rstrip('/')}/{version}"


def _predictor_name(version: str) -> str:
    name = re.sub(r"[^-a-z0-9]+", "-", f"model-{version}".lower()).strip("-")[:40].rstrip("-")
    return name


def predictor(
    config: DeployConfig, storage_uri: str, version: str = "", kserve: KServe | None = None
) -> dict:
    """spec.predictor for one model version (no canary fields)."""
    kserve = kserve or KServe.parse(PORTABLE)
    metric, target = DEFAULT_SCALE[config.mode]
    model = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": config.runtime,
        "protocolVersion": config.protocol_version,
        "storageUri": storage_uri,
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": dict(CONTAINER_SECURITY),
    }
    spec: dict[str, Any] = {}
    if config.mode == "Standard" and version and kserve.standard_canary:
        spec["name"] = _predictor_name(version)  # Deployment {isvc}-{name}-predictor
    spec.update(
        serviceAccountName=config.service_account,
        minReplicas=config.min_replicas,
        maxReplicas=config.max_replicas,
        scaleMetric=metric,
        scaleTarget=target,
    )
    if config.mode == "Standard":
        spec["securityContext"] = dict(POD_SECURITY)
    spec["model"] = model
    return spec


def inference_service(
    config: DeployConfig, storage_uri: str, version: str = "", kserve: KServe | None = None
) -> dict:
    """The InferenceService for one model version, all traffic on it (a full rollout), in the
    API of the KServe release `kserve` (default: 0.15's, which every release from 0.15 on
    accepts)."""
    kserve = kserve or KServe.parse(PORTABLE)
    annotations = {MODE_ANNOTATION: kserve.mode_value(config.mode)}
    if config.mode == "Standard":
        annotations[AUTOSCALER_CLASS_ANNOTATION] = "hpa"
    if version:
        annotations[VERSION_ANNOTATION] = version
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": config.name,
            "namespace": config.namespace,
            "labels": dict(LABELS),
            "annotations": annotations,
        },
        "spec": {"predictor": predictor(config, storage_uri, version, kserve)},
    }


def _storage_uri(pred: dict) -> str:
    return pred.get("model", {}).get("storageUri", "")


def rollout(
    current: dict | None,
    config: DeployConfig,
    storage_uri: str,
    version: str,
    kserve: KServe | None = None,
) -> dict:
    """The InferenceService to create (current None) or PUT over `current` to roll out
    `storage_uri`: all traffic (canary -1), or a canary of `canary_traffic_percent`."""
    kserve = kserve or KServe.parse(PORTABLE)
    new = inference_service(config, storage_uri, version, kserve)
    if current is None:
        return new  # nothing to compare with: KServe would send 100% to it anyway
    if mode_of(current) != config.mode:
        raise ImageLingoError(
            f"InferenceService {config.name} runs in {mode_of(current)} mode; KServe cannot "
            f"change it to {config.mode} (delete it first, or deploy with --mode "
            f"{mode_of(current)})"
        )
    stable = current["spec"]["predictor"]
    stable_uri = _storage_uri(stable)
    rolled_back = stable.get("canaryTrafficPercent") == 0  # Knative: the spec's model got 0%
    if stable_uri and stable_uri != storage_uri and not rolled_back:
        new["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION] = stable_uri
    elif PREVIOUS_URI_ANNOTATION in current["metadata"].get("annotations", {}):
        previous = current["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION]
        new["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION] = previous
    percent = config.canary_traffic_percent
    if config.mode == "Knative":
        # the latest revision (this spec) gets percent, the last rolled-out one the rest
        if percent >= 0:
            new["spec"]["predictor"]["canaryTrafficPercent"] = percent
        return new
    if percent < 0 or stable_uri == storage_uri:
        return new
    if not kserve.standard_canary:
        raise ImageLingoError(
            f"KServe {kserve.name} has no canary in Standard (RawDeployment) mode: "
            f"canaryTrafficPercent is Knative-only and spec.canary[] arrives in KServe 0.20; "
            f"deploy with --canary-traffic-percent -1, or --kserve-version 0.20 on a KServe 0.20"
        )
    canary = predictor(config, storage_uri, version, kserve)
    if canary.get("name") == stable.get("name"):
        raise ImageLingoError(f"version {version} is already the stable predictor")
    # The CRD requires canary[].predictor.model.name (the schema lists it; the stable predictor's
    # does not), while validation.go:291-292 forbids a non-empty one on the stable predictor: ""
    # is what a Go client sends for both.
    canary["model"] = {"name": "", **canary["model"]}
    for key in ("maxReplicas", "scaleMetric", "scaleTarget"):
        canary.pop(key)  # validation.go:240-251: a canary has fixed replicas
    if stable.get("minReplicas", 1) >= 1:
        canary["minReplicas"] = 1  # validation.go:253-261: not above the stable's
    else:
        canary.pop("minReplicas")
    new["spec"]["predictor"] = stable
    new["spec"]["canary"] = [{"predictor": canary, "trafficPercent": percent}]
    return new


def _without_status(isvc: dict) -> dict:
    metadata = {k: v for k, v in isvc["metadata"].items() if k in ("name", "namespace", "labels")}
    metadata["annotations"] = dict(isvc["metadata"].get("annotations", {}))
    return {
        "apiVersion": isvc["apiVersion"],
        "kind": isvc["kind"],
        "metadata": metadata,
        "spec": copy.deepcopy(isvc["spec"]),
    }


def promote(current: dict) -> dict:
    """All traffic to the canary: Knative drops canaryTrafficPercent (the latest revision becomes
    the rolled-out one); Standard makes the canary the stable predictor (its name and model, the
    stable's scaling) and removes spec.canary."""
    new = _without_status(current)
    pred = new["spec"]["predictor"]
    if mode_of(current) == "Knative":
        if "canaryTrafficPercent" not in pred:
            raise ImageLingoError(f"{current['metadata']['name']}: no canary to promote")
        if pred["canaryTrafficPercent"] == 0:
            raise ImageLingoError(
                f"{current['metadata']['name']}: the canary was rolled back (0% traffic); "
                f"deploy a new version instead of promoting it"
            )
        del pred["canaryTrafficPercent"]
        return new
    canaries = new["spec"].pop("canary", [])
    if not canaries:
        raise ImageLingoError(f"{current['metadata']['name']}: no canary to promote")
    canary = canaries[0]["predictor"]
    pred["name"] = canary["name"]
    pred["model"] = {k: v for k, v in canary["model"].items() if k != "name"}
    return new


def rollback(current: dict) -> dict:
    """Back to the previous model. During a canary, as KServe defines it: Knative sets
    canaryTrafficPercent 0 (all traffic to the last rolled-out revision, no new pods),
    Standard removes spec.canary. After a promotion: a full rollout of the previous storage URI
    (recorded in the imagelingo.io/previous-storage-uri annotation)."""
    new = _without_status(current)
    pred = new["spec"]["predictor"]
    annotations = new["metadata"]["annotations"]
    mode = mode_of(current)
    if mode == "Knative" and pred.get("canaryTrafficPercent", 0) > 0:
        pred["canaryTrafficPercent"] = 0
        return new
    if mode == "Standard" and new["spec"].get("canary"):
        del new["spec"]["canary"]
        return new
    previous = annotations.get(PREVIOUS_URI_ANNOTATION)
    if not previous:
        raise ImageLingoError(f"{current['metadata']['name']}: no previous version recorded")
    annotations[PREVIOUS_URI_ANNOTATION] = _storage_uri(pred)
    annotations[VERSION_ANNOTATION] = previous.rstrip("/").rsplit("/", 1)[-1]
    annotations.pop(REGISTRY_ANNOTATION, None)
    pred.pop("canaryTrafficPercent", None)
    pred["model"]["storageUri"] = previous
    if "name" in pred:  # KServe 0.20 Standard mode: the name follows the model
        pred["name"] = _predictor_name(annotations[VERSION_ANNOTATION])
    return new


def render_manifest(config: DeployConfig | None = None) -> str:
    """manifests/base/inferenceservice.yaml: the InferenceService deploy creates for model
    version v1 of the default settings (kustomize sets the namespace; overlays the bucket)."""

    config = config or DeployConfig(storage_uri="s3://imagelingo/model-store")
    isvc = inference_service(config, versioned_uri(config.storage_uri, "v1"), "v1")
    del isvc["metadata"]["namespace"]
    header = (
        "# GENERATED by `python -m imagelingo.deploy` from imagelingo/deploy.py (the one source\n"
        "# of truth; tests/test_manifests.py checks they agree). Do not edit: change deploy.py.\n"
        "# It is what `imagelingo deploy` creates for model version v1, in Knative mode, under\n"
        "# the name every KServe from 0.15 (Kubeflow 1.10/1.11) to 0.20 knows, Serverless. The\n"
        "# README applies the overlays without it (-l app.kubernetes.io/managed-by!=\n"
        "# imagelingo-deploy): the InferenceService belongs to `imagelingo deploy`, which gives\n"
        "# every version its own storageUri; re-applying this copy would roll it back to v1.\n"
    )
    return header + to_yaml(isvc)


def to_yaml(document: dict) -> str:
    """Block YAML with indented lists, keys in rendering order (what yamllint --strict wants)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    return yaml.dump(document, Dumper=Dumper, sort_keys=False)


# --- the cluster ----------------------------------------------------------------------------


class KubeApi:
    """The few Kubernetes calls deploy makes, each failure turned into one ImageLingoError line.
    `api_client` is a kubernetes.client.ApiClient (default: kubeconfig, or in-cluster config)."""

    def __init__(self, api_client: Any = None, request_timeout: float = 15):
        import os

        from kubernetes import client, config

        if api_client is None:
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config()
                else:  # KUBECONFIG read now: the library reads it once, at import
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                raise ImageLingoError(
                    f"no Kubernetes cluster configured ({str(exc).splitlines()[0]}): "
                    f"set KUBECONFIG or run inside a pod"
                ) from exc
            configuration = client.Configuration.get_default_copy()
            configuration.retries = 1
            api_client = client.ApiClient(configuration)
        self.host = api_client.configuration.host
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout = request_timeout

    def _call(self, what: str, fn, *args, missing_ok: bool = False, forbidden_ok: bool = False):
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status == 403 and forbidden_ok:
                return ...
            reason = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(
                exc.status, f"HTTP {exc.status} {exc.reason}"
            )
            error = Conflict if exc.status == 409 else ImageLingoError
            raise error(f"{what}: {reason}{_api_message(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise ImageLingoError(
                f"Kubernetes API {self.host} unreachable ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _dict(obj: Any) -> dict:
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(obj)

    def namespace_labels(self, namespace: str) -> dict | None:
        """The namespace's labels; None if it does not exist; ... when this account may not
        read namespaces (a namespaced Role cannot)."""
        got = self._call(
            f"namespace {namespace}",
            self.core.read_namespace,
            namespace,
            missing_ok=True,
            forbidden_ok=True,
        )
        if got is None or got is ...:
            return got
        return dict(got.metadata.labels or {})

    def isvc_crd(self) -> dict | None:
        """The served InferenceService CRD, or None when absent or not readable (it is
        cluster-scoped: the namespaced deploy Role does not grant it)."""
        import json

        got = self._call(
            f"CRD {ISVC_CRD}",
            functools.partial(
                self.extensions.read_custom_resource_definition, _preload_content=False
            ),
            ISVC_CRD,
            missing_ok=True,
            forbidden_ok=True,
        )  # the raw JSON: 1-2 MB of schema, not worth the client's model classes
        return None if got is None or got is ... else json.loads(got.data)

    def predictor_deployments(self, namespace: str, name: str) -> list[dict]:
        """The Deployments KServe made for the InferenceService's predictor (Standard mode),
        found by the labels it puts on them (v0.15.2 components/predictor.go:450-457)."""
        import json

        selector = f"serving.kserve.io/inferenceservice={name},component=predictor"
        got = self._call(
            f"Deployments of {namespace}/{name}",
            functools.partial(
                self.apps.list_namespaced_deployment,
                label_selector=selector,
                _preload_content=False,
            ),
            namespace,
        )  # the raw JSON: the client's models would insist on fields we do not read
        wanted = {"serving.kserve.io/inferenceservice": name, "component": "predictor"}
        found = json.loads(got.data)["items"]
        return [d for d in found if wanted.items() <= d["metadata"].get("labels", {}).items()]

    def service_account(self, namespace: str, name: str) -> dict | None:
        got = self._call(
            f"ServiceAccount {namespace}/{name}",
            self.core.read_namespaced_service_account,
            name,
            namespace,
            missing_ok=True,
        )
        return None if got is None else self._dict(got)

    def secret(self, namespace: str, name: str) -> dict | None:
        """{"keys": the non-empty data keys, "annotations": ...}, or None if absent."""
        got = self._call(
            f"Secret {namespace}/{name}",
            self.core.read_namespaced_secret,
            name,
            namespace,
            missing_ok=True,
        )
        if got is None:
            return None
        data = (got.data or {}) | (got.string_data or {})
        return {
            "keys": {k for k, v in data.items() if v},
            "annotations": dict(got.metadata.annotations or {}),
        }

    def runtime_exists(self, namespace: str, name: str, kind: str) -> bool | None:
        group, version = "serving.kserve.io", "v1alpha1"
        if kind == "ClusterServingRuntime":
            fn, args = (
                self.custom.get_cluster_custom_object,
                (group, version, "clusterservingruntimes", name),
            )
        else:
            fn = self.custom.get_namespaced_custom_object
            args = (group, version, namespace, "servingruntimes", name)
        got = self._call(f"{kind} {name}", fn, *args, missing_ok=True, forbidden_ok=True)
        return None if got is ... else got is not None

    def get_isvc(self, namespace: str, name: str) -> dict | None:
        return self._call(
            f"InferenceService {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            namespace,
            "inferenceservices",
            name,
            missing_ok=True,
        )

    def create_isvc(self, isvc: dict) -> dict:
        meta = isvc["metadata"]
        return self._call(
            f"create InferenceService {meta['namespace']}/{meta['name']}",
            self.custom.create_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            meta["namespace"],
            "inferenceservices",
            isvc,
        )

    def replace_isvc(self, isvc: dict) -> dict:
        """PUT: the stored spec becomes exactly `isvc` (a merge patch would keep every field the
        new spec omits, e.g. an earlier canaryTrafficPercent). `isvc` carries resourceVersion."""
        meta = isvc["metadata"]
        return self._call(
            f"replace InferenceService {meta['namespace']}/{meta['name']}",
            self.custom.replace_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            meta["namespace"],
            "inferenceservices",
            meta["name"],
            isvc,
        )


class Conflict(ImageLingoError):
    """409 from the API server: the object changed since it was read (resourceVersion)."""


def _api_message(exc: Any) -> str:
    import json

    try:
        return f": {json.loads(exc.body)['message']}"
    except (TypeError, ValueError, KeyError):
        return ""


def preflight(api: KubeApi, config: DeployConfig) -> None:
    """Everything the InferenceService needs that deploy does not create, checked before any
    upload or change: the namespace, the ServiceAccount the predictor runs as, the S3 Secret
    KServe's storage initializer reads through it, and the runtime."""
    ns = config.namespace
    labels = api.namespace_labels(ns)
    if labels is None:
        raise ImageLingoError(f"namespace {ns!r} not found: kubectl apply -k manifests/overlays/…")
    account = api.service_account(ns, config.service_account)
    if account is None:
        raise ImageLingoError(
            f"ServiceAccount {config.service_account!r} not found in namespace {ns!r} "
            f"(does the namespace exist? kubectl apply -k manifests/overlays/…)"
        )
    if config.storage_uri.startswith("s3://"):
        secret = api.secret(ns, config.s3_secret)
        check_s3_secret(secret, config)
        endpoint = secret["annotations"].get(S3_ENDPOINT_ANNOTATION, "")
        check_object_store_reachable(endpoint, ns, labels)
        attached = {s.get("name") for s in account.get("secrets") or []}
        if config.s3_secret not in attached:
            raise ImageLingoError(
                f"ServiceAccount {ns}/{config.service_account} does not list Secret "
                f"{config.s3_secret!r}, so KServe will not use it"
            )
    kind = RUNTIMES[config.runtime]
    if api.runtime_exists(ns, config.runtime, kind) is False:
        raise ImageLingoError(
            f"{kind} {config.runtime!r} not found"
            + (f" in namespace {ns!r}" if kind == "ServingRuntime" else "")
        )


def check_s3_secret(secret: dict | None, config: DeployConfig) -> None:
    """The Secret carries what KServe's storage-initializer reads: the AWS_* keys, and where the
    store is (README FACT 10: annotation, else S3_ENDPOINT key, else AWS)."""
    ns, name = config.namespace, config.s3_secret
    if secret is None:
        raise ImageLingoError(
            f"Secret {name!r} not found in namespace {ns!r}: KServe cannot read "
            f"{config.storage_uri} (kubectl apply -k manifests/secrets/<overlay>, README)"
        )
    keys = secret["keys"]
    missing = [k for k in S3_KEYS if k not in keys]
    if missing and set(KUBEFLOW_S3_KEYS) <= keys:
        raise ImageLingoError(
            f"Secret {ns}/{name} has Kubeflow's pipeline keys {'/'.join(KUBEFLOW_S3_KEYS)}, "
            f"not the {'/'.join(S3_KEYS)} KServe's storage-initializer reads: make a KServe "
            f"Secret from them (README, 'On a cluster')"
        )
    if missing:
        raise ImageLingoError(f"Secret {ns}/{name} lacks (or has empty) {', '.join(missing)}")
    if S3_ENDPOINT_ANNOTATION not in secret["annotations"] and "S3_ENDPOINT" not in keys:
        raise ImageLingoError(
            f"Secret {ns}/{name} has no {S3_ENDPOINT_ANNOTATION} annotation: KServe's "
            f"storage-initializer would fetch from AWS, not your store (manifests/secrets/)"
        )


def check_object_store_reachable(endpoint: str, namespace: str, labels: dict | Any) -> None:
    """Kubeflow's object store (minio-service.kubeflow) admits only profile namespaces: the
    storage-initializer of a pod elsewhere cannot download and the pod stays in Init."""
    host = endpoint.split("://")[-1].split("/")[0].split(":")[0]
    if not re.fullmatch(r"[^.]+\.kubeflow(\.svc(\.cluster\.local)?)?", host):
        return
    if not isinstance(labels, dict):  # namespaces not readable: nothing to check with
        return
    key, value = PROFILE_LABEL
    if labels.get(key) != value:
        raise ImageLingoError(
            f"namespace {namespace!r} lacks the label {key}={value}: Kubeflow's NetworkPolicies "
            f"admit only profile namespaces to {host}, so KServe could not fetch the model "
            f"(deploy into your profile namespace, or apply manifests/overlays/minio)"
        )


def check_bucket(storage_uri: str, endpoint_url: str | None) -> None:
    """The credentials this process has may use storage_uri's prefix, where deploy writes and
    KServe's storage-initializer reads. Nothing bucket-level (issue 26): Kubeflow 1.11's
    per-profile keys are allowed object paths only (pipelines-profile-controller sync.py:347-377)
    and its SeaweedFS denies them HeadBucket. So it reads a key under the prefix that is not
    there: NoSuchKey = allowed, 403 = denied, NoSuchBucket = no bucket. GetObject, not
    HeadObject: a HEAD answer has no body, so its 404 does not say which (NOTES-objectstore.md)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from imagelingo.storage import s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(storage_uri)
    probe = "/".join(filter(None, [prefix.rstrip("/"), ".imagelingo-deploy-check"]))
    try:
        s3_client(endpoint_url).get_object(Bucket=bucket, Key=probe)["Body"].close()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code == "NoSuchKey":
            return
        if code == "NoSuchBucket":
            raise ImageLingoError(f"S3 bucket {bucket!r} does not exist ({storage_uri})") from exc
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            allowed = "{artifacts,private-artifacts/<namespace>,private/<namespace>,shared}"
            raise ImageLingoError(
                f"{storage_uri}: {code}: these S3 credentials may not read or write there; "
                "Kubeflow 1.11's per-profile keys (mlpipeline-minio-artifact) allow only "
                f"s3://mlpipeline/{allowed}/...: use s3://mlpipeline/private/<namespace>/..."
            ) from exc
        raise ImageLingoError(f"{storage_uri}: S3 {code}: {error.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise ImageLingoError(f"{storage_uri}: {exc}") from exc


def wait_ready(api: KubeApi, config: DeployConfig, before: dict | None, written: dict) -> str:
    """Poll until our write serves; return the URL. `before` is the object our write replaced
    (None: created), `written` the API server's answer to the write (apply): what changed and
    where the rollout starts are read from it (changed_by_write). Not status.observedGeneration
    against the InferenceService's generation: KServe copies it from the child (cluster/
    kserve.py). Knative mode: after a change, the child's observedGeneration moves past the one
    in our write's answer, and its latest created revision is the latest ready one; Standard
    mode: every predictor Deployment carries the update and finished its rollout."""
    deadline, pause = time.monotonic() + config.timeout_s, 0.05
    changed = changed_by_write(before, written)
    at_write = None if before is None else written.get("status", {})
    while True:
        isvc = api.get_isvc(config.namespace, config.name) or {}
        status = isvc.get("status", {})
        if mode_of(written) == "Knative":
            done, why = knative_rolled_out(status, at_write, changed)
        else:
            deployments = api.predictor_deployments(config.namespace, config.name)
            done, why = standard_rolled_out(deployments, written)
        if done:
            return status.get("url", "")
        if time.monotonic() > deadline:
            raise ImageLingoError(
                f"InferenceService {config.namespace}/{config.name} not rolled out after "
                f"{config.timeout_s} s: {why}"
            )
        time.sleep(pause)
        pause = min(5, pause * 2)  # a quick answer when the cluster is quick, then every 5 s


def changed_by_write(before: dict | None, written: dict) -> bool:
    """Whether our write changed what KServe rolls out, as the API server says. Not our spec
    against the live one: KServe's defaulting webhook writes fields we never render
    (spec.predictor.model.name "" always, automountServiceAccountToken when configured), so
    they never match. The API server bumps metadata.generation only when the stored spec
    changes (after defaulting); our imagelingo.io/ annotations, which do not bump it, count too
    (KServe copies them to the pods: cluster/kserve.py)."""
    if before is None:
        return True
    old, new = before["metadata"], written["metadata"]
    return old.get("generation") != new.get("generation") or _ours(
        old.get("annotations", {})
    ) != _ours(new.get("annotations", {}))


def _ours(annotations: dict) -> dict:
    return {k: v for k, v in annotations.items() if k.startswith("imagelingo.io/")}


def apply(
    api: KubeApi, desired: dict, current: dict | None, attempts: int = 5
) -> tuple[str, dict | None, dict]:
    """Create, or replace (PUT) the spec with exactly `desired`'s. The metadata others own
    survives: KServe's finalizer, owner references, foreign labels and annotations (those of
    imagelingo.io/ are ours: one we no longer render is removed). Returns the action, the object
    the write replaced and the API server's answer: the object as stored, after admission
    (what wait_ready starts from).

    `current` was read before the upload; KServe's controller writes the object's status and
    finalizer meanwhile, and each write is a new resourceVersion, so the PUT gets 409 Conflict
    (seen on the box: box/NOTES-kserve.md). Then the object is read again and the PUT repeated,
    as long as only others' fields moved: a spec or imagelingo.io/ annotation that changed means
    someone else deployed, and `desired` (computed from `current`) would undo it."""
    if current is None:
        return "created", None, api.create_isvc(desired)
    meta = current["metadata"]
    for _ in range(attempts):
        try:
            return "replaced", current, api.replace_isvc(replacement(desired, current))
        except Conflict:
            fresh = api.get_isvc(meta["namespace"], meta["name"])
            if fresh is None or not changed_by_others_only(current, fresh):
                raise ImageLingoError(
                    f"InferenceService {meta['namespace']}/{meta['name']} was changed by someone "
                    "else while deploy ran (its spec or imagelingo.io/ annotations moved): "
                    "nothing was written; look at it and run deploy again"
                ) from None
            current = fresh
    raise ImageLingoError(
        f"InferenceService {meta['namespace']}/{meta['name']}: still 409 Conflict after "
        f"{attempts} writes (something rewrites it continuously)"
    )


def changed_by_others_only(read: dict, fresh: dict) -> bool:
    """Whether `fresh` differs from `read` only in what others own (status, finalizers...)."""
    return read.get("spec") == fresh.get("spec") and _ours(
        read["metadata"].get("annotations", {})
    ) == _ours(fresh["metadata"].get("annotations", {}))


def replacement(desired: dict, current: dict) -> dict:
    live, meta = current["metadata"], dict(desired["metadata"])
    meta["labels"] = {**live.get("labels", {}), **meta.get("labels", {})}
    kept = {
        k: v for k, v in live.get("annotations", {}).items() if not k.startswith("imagelingo.io/")
    }
    meta["annotations"] = {**kept, **meta.get("annotations", {})}
    for key in ("finalizers", "ownerReferences"):
        if key in live:
            meta[key] = live[key]
    meta["resourceVersion"] = live["resourceVersion"]  # a conflict (409) if it changed meanwhile
    return {**desired, "metadata": meta}


# --- the stage ------------------------------------------------------------------------------


def check_storage_uri(target: str, storage_uri: str) -> None:
    if target == "kserve" and not storage_uri.startswith("s3://"):
        what = "a local path" if "://" not in storage_uri else "not uploadable here"
        raise ImageLingoError(
            f"target kserve needs an s3://bucket/prefix storage_uri the cluster can read; "
            f"got {storage_uri or '(none)'!r} ({what})"
        )
    if target == "local" and "://" in storage_uri and not storage_uri.startswith("s3://"):
        raise ImageLingoError(f"cannot upload to {storage_uri!r}: use s3:// or a local path")


def upload_store(store_dir: Path, storage_uri: str, endpoint_url: str | None = None) -> int:
    """Copy model-store/ and config/ to the storage URI; returns the number of files."""
    store_dir = Path(store_dir)
    check_store(store_dir)
    if storage_uri.startswith("s3://"):
        from imagelingo.storage import upload_dir

        return sum(
            upload_dir(store_dir / part, f"{storage_uri.rstrip('/')}/{part}", endpoint_url)
            for part in ("model-store", "config")
        )
    if "://" in storage_uri:
        raise ImageLingoError(f"cannot upload to {storage_uri!r}: use s3:// or a local path")
    target = Path(storage_uri)
    count = 0
    for part in ("model-store", "config"):
        shutil.copytree(store_dir / part, target / part, dirs_exist_ok=True)
        count += sum(1 for p in (target / part).rglob("*") if p.is_file())
    return count


def check_store(store_dir: Path, runtime: str = "") -> None:
    for part in ("model-store", "config"):
        if not (Path(store_dir) / part).is_dir():
            raise ImageLingoError(f"{Path(store_dir) / part} not found: run `imagelingo package`")
    # imagelingo-torchserve's PID 1 and readiness probe are the store's config/entrypoint.py
    # (manifests/base/servingruntime.yaml): a store packaged before it would crash-loop
    entrypoint = Path(store_dir) / "config" / "entrypoint.py"
    if runtime == "imagelingo-torchserve" and not entrypoint.is_file():
        raise ImageLingoError(
            f"{entrypoint} not found: the imagelingo-torchserve runtime starts it; package the "
            "model again with this version (`imagelingo package`)"
        )


def deploy(
    store_dir: Path,
    out_dir: Path,
    target: str = "local",
    config: DeployConfig | None = None,
    client: KubeApi | None = None,
    s3_endpoint_url: str | None = None,
    model_version: str = "",
    kserve_version: str = "auto",
) -> dict:
    """Deploy a packaged model store; writes inferenceservice.yaml and metadata.json to out_dir.
    Every check runs before anything is uploaded or changed. After a successful deploy,
    `model_version` (MLflow registry) gets the `production` alias. `kserve_version`: the
    cluster's KServe (0.15 for Kubeflow 1.10/1.11, 0.20), or auto: read from the served CRD
    (target kserve), else 0.15's API, which every release from 0.15 on accepts."""

    from imagelingo.artifacts import write_metadata

    config = config or DeployConfig()
    config.check()
    if kserve_version != "auto":
        KServe.parse(kserve_version)  # a bad value stops here, before any upload
    if target not in TARGETS:
        raise ImageLingoError(f"unknown deploy target {target!r}; expected one of {TARGETS}")
    check_storage_uri(target, config.storage_uri)
    check_store(store_dir, config.runtime)
    version = store_version(store_dir)
    out_dir = Path(out_dir)
    if config.storage_uri:
        storage_uri = versioned_uri(config.storage_uri, version)
    else:  # local target, nothing given: the run's own folder is already unique
        storage_uri = str(out_dir / "store")
    if model_version:  # it gets the production alias at the end: it must exist
        from imagelingo.registry import versions

        if str(model_version) not in {str(row["version"]) for row in versions()}:
            raise ImageLingoError(
                f"the model registry has no version {model_version} of imagelingo"
            )
    current, api = None, None
    kserve = None if kserve_version == "auto" else KServe.parse(kserve_version)
    if target == "kserve":
        api = client or KubeApi()
        preflight(api, config)
        check_bucket(storage_uri, s3_endpoint_url)
        current = api.get_isvc(config.namespace, config.name)
        kserve = kserve or served_kserve(api)
    desired = rollout(current, config, storage_uri, version, kserve)
    if model_version:
        desired["metadata"]["annotations"][REGISTRY_ANNOTATION] = f"{model_version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = upload_store(store_dir, storage_uri, s3_endpoint_url)
    (out_dir / "inferenceservice.yaml").write_text(to_yaml(desired))
    action, url = "rendered", ""
    if api is not None:
        action, before, written = apply(api, desired, current)
        url = wait_ready(api, config, before, written)
    if model_version:
        from imagelingo.registry import set_production

        set_production(model_version)
    return write_metadata(
        out_dir,
        "deploy",
        inputs={"model_store": str(store_dir)},
        params={
            **asdict(config),
            "target": target,
            "storage_uri": storage_uri,
            "kserve_version": (kserve or KServe.parse(PORTABLE)).name,  # what it was written for
        },
        counts={"files_uploaded": files},
        action=action,
        url=url,
        store_version=version,
        production_version=model_version,
    )


def change_traffic(
    action: str, config: DeployConfig, out_dir: Path | None = None, client: KubeApi | None = None
) -> dict:
    """`promote` or `rollback` the live InferenceService (no upload); returns what was applied."""

    config.check()
    api = client or KubeApi()
    current = api.get_isvc(config.namespace, config.name)
    if current is None:
        raise ImageLingoError(f"InferenceService {config.namespace}/{config.name} not found")
    desired = {"promote": promote, "rollback": rollback}[action](current)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "inferenceservice.yaml").write_text(to_yaml(desired))
    _, before, written = apply(api, desired, current)
    url = wait_ready(api, config, before, written)
    return {"action": action, "url": url, "spec": desired["spec"]}


def served_kserve(api: KubeApi) -> KServe:
    """kserve_version auto: the release family of the served InferenceService CRD; when this
    account cannot read CRDs, the API every release from 0.15 on accepts."""
    crd = api.isvc_crd()
    return version_from_crd(crd) if crd else KServe.parse(PORTABLE)


def with_overrides(config: DeployConfig, **values: Any) -> DeployConfig:
    return replace(config, **{k: v for k, v in values.items() if v is not None})


if __name__ == "__main__":  # regenerate manifests/base/inferenceservice.yaml
    from imagelingo.config import REPO_ROOT

    path = REPO_ROOT / "manifests" / "base" / "inferenceservice.yaml"
    path.write_text(render_manifest())
    print(f"wrote {path}")
