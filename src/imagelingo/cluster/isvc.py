"""The InferenceService deploy writes, rendered from params.yaml's `deploy` section and
the store's version: pure, no I/O. Rollout steps (a new version, canary, promote, rollback) are
new specs computed from the live one.

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
import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from imagelingo.cluster.kserve import (
    MODE_ANNOTATION,
    PORTABLE,
    KServe,
    mode_of,
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
        "# GENERATED by `python -m imagelingo.deploy` from imagelingo/cluster/isvc.py (the one\n"
        "# source of truth; tests/test_manifests.py checks they agree). Do not edit: change it.\n"
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


def with_overrides(config: DeployConfig, **values: Any) -> DeployConfig:
    return replace(config, **{k: v for k, v in values.items() if v is not None})
