"""The predictor pod KServe 0.15.2 builds from the project's manifests: nothing about it is
written here, everything is read from the rendered InferenceService (src/imagelingo/deploy.py),
the ServingRuntime it names (manifests/) and the S3 Secret's annotations (manifests/secrets/).

Upstream, kserve/kserve at tag v0.15.2 (cited as kserve:<path>:<lines>):
- runtime container + the InferenceService's `model` container: strategic merge, the
  InferenceService's fields win, args appended (kserve:pkg/controller/v1beta1/inferenceservice/
  utils/utils.go:190-228); of the runtime's pod spec only nodeSelector, affinity, tolerations,
  volumes and imagePullSecrets survive, merged with the predictor's pod fields (:231-259);
- {{.Name}} and the like replaced from the InferenceService's metadata (:286-298, called at
  components/predictor.go:366);
- the storage-initializer init container the pod webhook injects: args [storageUri,
  /mnt/models], the emptyDir `kserve-provision-location` mounted read-write there and read-only
  on kserve-container, no securityContext (kserve:pkg/webhook/admission/pod/
  storage_initializer_injector.go:354-403), with the S3 Secret's env: AWS_ACCESS_KEY_ID /
  AWS_SECRET_ACCESS_KEY as secretKeyRefs (kserve:pkg/credentials/s3/s3_secret.go:73-111), the
  endpoint and flags from the Secret's annotations (kserve:pkg/credentials/s3/utils.go:21-150).
- Knative adds to the user container PORT and K_SERVICE/K_CONFIGURATION/K_REVISION (knative/
  serving knative-v1.16.2 pkg/reconciler/revision/resources/deploy.go:267, env.go) and gives the
  pod the revision timeout as its grace period (300 s default); Standard mode's Deployment keeps
  Kubernetes' default of 30 s.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml

from imagelingo.cluster.kserve import mode_of

REPO = Path(__file__).resolve().parents[2]
MODEL_MOUNT = "/mnt/models"
PROVISION_VOLUME = "kserve-provision-location"  # storage_initializer_injector.go:46
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.15.2"  # R6 of cluster-reference
GRACE_S = {"Knative": 300, "Standard": 30}
# strategic-merge keys of corev1.Container lists (k8s.io/api core/v1 types.go patchMergeKey)
MERGE_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def find_runtime(name: str) -> dict:
    """The ServingRuntime `name` as manifests/ define it (base and components)."""
    for path in sorted((REPO / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                isinstance(doc, dict)
                and doc.get("kind") == "ServingRuntime"
                and doc["metadata"]["name"] == name
            ):
                return doc
    raise SystemExit(f"no ServingRuntime named {name!r} under manifests/")


def secret_annotations(overlay: str = "minio") -> dict[str, str]:
    kustomization = yaml.safe_load(
        (REPO / "manifests/secrets" / overlay / "kustomization.yaml").read_text()
    )
    return dict(kustomization.get("generatorOptions", {}).get("annotations", {}))


def merge(base, override, key: str = ""):
    """Strategic merge patch as far as containers use it: maps merge, keyed lists merge by key,
    other lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        merged = [copy.deepcopy(item) for item in base]
        for item in override:
            same = [i for i, old in enumerate(merged) if old.get(by) == item.get(by)]
            if same:
                merged[same[0]] = merge(merged[same[0]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(override)


def merge_runtime_container(runtime: dict, model: dict) -> dict:
    """utils.go:190-228: MergeRuntimeContainers. The model spec's non-container fields
    (modelFormat, runtime, storageUri, protocolVersion) are not container fields."""
    container_fields = {
        k: v
        for k, v in model.items()
        if k not in ("modelFormat", "runtime", "storageUri", "protocolVersion", "runtimeVersion")
    }
    merged = merge(runtime, container_fields)
    merged["args"] = list(runtime.get("args", [])) + list(model.get("args", []))
    merged.setdefault("name", "kserve-container")
    return merged


def replace_placeholders(container: dict, metadata: dict) -> dict:
    """utils.go:286-298: the container's JSON as a Go template over the ObjectMeta."""

    def value(match: re.Match) -> str:
        path = match.group(1).split(".")
        field = {
            "Name": "name",
            "Namespace": "namespace",
            "Labels": "labels",
            "Annotations": "annotations",
        }[path[0]]
        found = metadata.get(field, "")
        for part in path[1:]:
            found = (found or {}).get(part, "")
        return str(found)

    return json.loads(re.sub(r"\{\{\s*\.([A-Za-z.]+)\s*\}\}", value, json.dumps(container)))


def s3_env(secret_name: str, annotations: dict[str, str]) -> list[dict]:
    """s3_secret.go:73-111 + utils.go:21-150 for the annotations our Secret carries."""
    env = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": name}}}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    endpoint = annotations.get("serving.kserve.io/s3-endpoint")
    if endpoint:
        https = annotations.get("serving.kserve.io/s3-usehttps", "")
        scheme = "http" if https == "0" else "https"
        if https == "0":
            env.append({"name": "S3_USE_HTTPS", "value": https})
        env.append({"name": "S3_ENDPOINT", "value": endpoint})
        env.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"})
    for annotation, name in (
        ("s3-verifyssl", "S3_VERIFY_SSL"),
        ("s3-useanoncredential", "awsAnonymousCredential"),
        ("s3-region", "AWS_DEFAULT_REGION"),
    ):
        if f"serving.kserve.io/{annotation}" in annotations:
            env.append({"name": name, "value": annotations[f"serving.kserve.io/{annotation}"]})
    return env


def build_pod(isvc: dict, runtime: dict, secret_name: str, annotations: dict[str, str]) -> dict:
    """The predictor pod spec of `isvc` (a rendered InferenceService) on `runtime`."""
    # Knative or Standard, whichever name deploy wrote for the release (0.15: Serverless,
    # RawDeployment; imagelingo.cluster.kserve)
    mode = mode_of(isvc)
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    (runtime_container,) = runtime["spec"]["containers"]
    container = merge_runtime_container(runtime_container, model)
    container = replace_placeholders(container, isvc["metadata"])
    container["volumeMounts"] = container.get("volumeMounts", []) + [
        {"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
    ]
    if mode == "Knative":
        name = f"{isvc['metadata']['name']}-predictor"
        container["env"] = container.get("env", []) + [
            {"name": "PORT", "value": str(container["ports"][0]["containerPort"])},
            {"name": "K_REVISION", "value": f"{name}-00001"},
            {"name": "K_CONFIGURATION", "value": name},
            {"name": "K_SERVICE", "value": name},
        ]
    initializer = {
        "name": "storage-initializer",
        "image": STORAGE_INITIALIZER_IMAGE,
        "args": [model["storageUri"], MODEL_MOUNT],
        "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": False}],
        "env": s3_env(secret_name, annotations),
    }
    pod_fields = {
        k: v for k, v in predictor.items() if k in ("serviceAccountName", "securityContext")
    }
    return {
        "mode": mode,
        "terminationGracePeriodSeconds": GRACE_S[mode],
        **pod_fields,
        "initContainers": [initializer],
        "containers": [container],
        "volumes": copy.deepcopy(runtime["spec"].get("volumes", []))
        + [{"name": PROVISION_VOLUME, "emptyDir": {}}],
    }
