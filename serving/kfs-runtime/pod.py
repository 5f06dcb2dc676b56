"""The predictor pod the rehearsal runs: the Pod the real KServe controller and its pod mutator
built for manifests/overlays/minio-standard on the box (box/kserve/capture-pods.sh wrote it to
box/kserve/observed/<kserve>-minio-standard-pod.yaml), with only what a host without the
cluster must change, all of it in SUBSTITUTIONS below. Nothing of the pod is built here.

Knative mode: the pod is built by Knative's revision reconciler, whose Deployment needs Knative's
controllers and a real kubelet; the box runs neither, so that Pod cannot be captured. What is
captured is KServe's part: the Knative Service KServe creates for manifests/overlays/minio
(observed/<kserve>-minio-ksvc.yaml, KNATIVE_CRDS=1) and, from the Standard Pod, what KServe's pod
mutator injects into any predictor pod (the same storage_initializer_injector.go code path in
both modes). Knative's own part is added from reading (KNATIVE below): not captured.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
OBSERVED = REPO / "box" / "kserve" / "observed"
KSERVE = "v0.15.2"  # Kubeflow 1.11's; v0.15.0 is Kubeflow 1.10's, v0.20.0 the standalone one
PROVISION_VOLUME = "kserve-provision-location"  # storage_initializer_injector.go:46
INITIALIZER = "storage-initializer"

# What a host without the cluster must change in the captured Pod, and why. Each entry is
# (container, env name, what it becomes); test_pod_runtime.py checks that the rehearsed pod
# differs from the captured one in exactly these places.
SUBSTITUTIONS = (
    # The Secret's annotation names the cluster's object store (minio-service.kubeflow:9000);
    # here the S3 API is moto on 127.0.0.1 in the pod's network namespace (podround.py), and
    # the store is uploaded there under the Pod's own storageUri (so the args stay as captured).
    (INITIALIZER, "S3_ENDPOINT", "{endpoint}"),
    (INITIALIZER, "AWS_ENDPOINT_URL", "http://{endpoint}"),
)
# Not changes to the spec, but what the kubelet here resolves differently (podround.py):
# - images: each container's `image` is run by the environment that stands in for it
#   (kubelet.Image: .venv-kfs for the runtime image, .venv-storage with KServe's storage code
#   for the storage-initializer image), looked up by the image name the Pod carries;
# - secretKeyRef env: resolved from the rehearsal's made-up keys, not the cluster's Secret;
# - service-account token: the captured Pods mount none (our ServiceAccount sets
#   automountServiceAccountToken: false); a projected token volume would have to be dropped
#   here, so pod() refuses one rather than run a pod that differs silently;
# - not emulated by kubelet.py: resources, imagePullPolicy, terminationMessage*, dnsPolicy,
#   tolerations, scheduling fields (the spec keeps them; nothing here acts on them).

# Knative's part of the Knative-mode pod, from reading knative/serving knative-v1.16.2 (not
# captured): PORT and K_* env on the user container (pkg/reconciler/revision/resources/
# deploy.go:267, env.go), the revision timeout (300 s default) as the grace period; queue-proxy
# is not run, kubelet.py does its TCP check of the port (queue.go:487-494).
KNATIVE_GRACE_S = 300


def observed(kserve: str, overlay: str, kind: str) -> dict:
    path = OBSERVED / f"{kserve}-{overlay}-{kind}.yaml"
    if not path.is_file():
        raise SystemExit(f"{path} missing: box/kserve/capture-pods.sh captures it")
    return yaml.safe_load(path.read_text())


def captured(mode: str, kserve: str = KSERVE) -> dict:
    """The pod as the real controllers left it (Knative: KServe's part, see the docstring)."""
    standard = observed(kserve, "minio-standard", "pod")
    if mode == "Standard":
        return copy.deepcopy(standard)
    ksvc = observed(kserve, "minio", "ksvc")
    template = copy.deepcopy(ksvc["spec"]["template"])
    spec = template["spec"]
    # the pod mutator, as it injected into the Standard pod (same Secret, same storageUri)
    source = template["metadata"]["annotations"][
        "internal.serving.kserve.io/storage-initializer-sourceuri"
    ]
    (init,) = standard["spec"]["initContainers"]
    assert init["args"][0] == source, (init["args"], source)
    spec["initContainers"] = [init]
    mount = next(
        m
        for m in standard["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == PROVISION_VOLUME
    )
    spec["containers"][0].setdefault("volumeMounts", []).append(mount)
    spec.setdefault("volumes", []).append({"name": PROVISION_VOLUME, "emptyDir": {}})
    # Knative's part (KNATIVE_GRACE_S above)
    name = ksvc["metadata"]["name"]
    container = spec["containers"][0]
    container["env"] = container.get("env", []) + [
        {"name": "PORT", "value": str(container["ports"][0]["containerPort"])},
        {"name": "K_REVISION", "value": f"{name}-00001"},
        {"name": "K_CONFIGURATION", "value": name},
        {"name": "K_SERVICE", "value": name},
    ]
    spec["terminationGracePeriodSeconds"] = KNATIVE_GRACE_S
    return {"metadata": template["metadata"], "spec": spec}


def substitute(spec: dict, endpoint: str) -> dict:
    """SUBSTITUTIONS applied to a copy of a captured pod spec."""
    spec = copy.deepcopy(spec)
    for volume in spec.get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [])
        if any("serviceAccountToken" in s for s in sources):
            raise SystemExit(f"captured pod mounts a service-account token ({volume['name']})")
    for container_name, env_name, value in SUBSTITUTIONS:
        container = next(
            c
            for c in spec.get("initContainers", []) + spec["containers"]
            if c["name"] == container_name
        )
        (item,) = [e for e in container["env"] if e["name"] == env_name]
        item["value"] = value.format(endpoint=endpoint)
    return spec


def pod(mode: str, endpoint: str, kserve: str = KSERVE) -> dict:
    """The pod spec kubelet.py runs, `mode` added (Knative: kubelet.py adds queue-proxy's check)."""
    return {"mode": mode, **substitute(captured(mode, kserve)["spec"], endpoint)}


def inference_service_name(mode: str, kserve: str = KSERVE) -> str:
    return captured(mode, kserve)["metadata"]["labels"]["serving.kserve.io/inferenceservice"]


def storage_uri(mode: str, kserve: str = KSERVE) -> str:
    (init,) = captured(mode, kserve)["spec"]["initContainers"]
    return init["args"][0]
