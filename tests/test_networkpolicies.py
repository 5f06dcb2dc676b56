"""The NetworkPolicies that decide whether the model can be fetched and who can call it, evaluated
as Kubernetes does (tests/netpol.py) on the real objects: Kubeflow's own policies on its object
store (tests/fixtures/kubeflow-manifests, exact copies) and the one the overlays render, against
the pods KServe builds for what `imagelingo deploy` renders (issue 22, points 1, 5 and 6)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from netpol import Pod, admitted, isolated

from imagelingo.config import REPO_ROOT
from imagelingo.deploy import DeployConfig, inference_service

KUBEFLOW = Path(__file__).parent / "fixtures" / "kubeflow-manifests"
MANIFESTS = REPO_ROOT / "manifests"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
STORE_POLICIES = [
    "common/networkpolicies/base/minio.yaml",
    "common/networkpolicies/base/default-allow-same-namespace.yaml",
    "applications/pipeline/upstream/third-party/seaweedfs/base/seaweedfs/"
    "seaweedfs-networkpolicy.yaml",
]
# Kubeflow release -> (object-store pod labels, the Service behind minio-service.kubeflow:9000)
STORES = {
    "v1.10.2": ({"app": "minio"}, "applications/pipeline/upstream/third-party/minio/base/"),
    "v1.11.0": (
        {"app": "seaweedfs"},
        "applications/pipeline/upstream/third-party/seaweedfs/base/seaweedfs/",
    ),
}


def kubeflow_file(release: str, path: str) -> Path:
    """Files identical in both tags are stored once, under v1.11.0 (fixtures SOURCE.md)."""
    own = KUBEFLOW / release / path
    return own if own.exists() else KUBEFLOW / "v1.11.0" / path


def kubeflow_policies(release: str) -> list[dict]:
    """The store's policies as kustomize applies them: the namespace from the folder's
    kustomization (both set `namespace: kubeflow`). v1.10.2 has no SeaweedFS."""
    found = []
    for path in STORE_POLICIES:
        file = kubeflow_file(release, path)
        if release == "v1.10.2" and "seaweedfs" in path:
            continue
        namespace = yaml.safe_load((file.parent / "kustomization.yaml").read_text())["namespace"]
        policy = yaml.safe_load(file.read_text())
        policy["metadata"]["namespace"] = namespace
        found.append(policy)
    return found


def store_pod(release: str) -> tuple[Pod, int]:
    labels, folder = STORES[release]
    service = yaml.safe_load(kubeflow_file(release, folder + "minio-service.yaml").read_text())
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9000  # the s3-endpoint of manifests/secrets/minio
    return Pod("kubeflow", labels), port["targetPort"]


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def predictor_pod(isvc: dict, namespace_labels: dict) -> Pod:
    """The predictor pod (storage-initializer included) as KServe labels it: the
    InferenceService's labels plus its name and component (kserve/kserve v0.15.2
    pkg/controller/v1beta1/inferenceservice/components/predictor.go:444-457)."""
    meta = isvc["metadata"]
    labels = {
        **meta.get("labels", {}),
        "serving.kserve.io/inferenceservice": meta["name"],
        "component": "predictor",
    }
    return Pod(meta["namespace"], labels, namespace_labels)


def namespace_labels(documents: list[dict]) -> dict:
    (namespace,) = [d for d in documents if d["kind"] == "Namespace"]
    return namespace["metadata"].get("labels", {})


# --- point 1: the storage-initializer reaches Kubeflow's object store ------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", ["minio", "minio-standard"])
@pytest.mark.parametrize("release", sorted(STORES))
def test_the_storage_initializer_reaches_kubeflows_object_store(overlay, release):
    documents = render(overlay)
    (isvc,) = [d for d in documents if d["kind"] == "InferenceService"]
    source = predictor_pod(isvc, namespace_labels(documents))
    target, port = store_pod(release)
    policies = kubeflow_policies(release)
    assert isolated(policies, target)  # the store is guarded: a wrong namespace fails here
    assert admitted(policies, source, target, port), (
        f"Kubeflow {release}'s NetworkPolicies refuse {source.namespace} "
        f"(labels {source.ns_labels}) on port {port}"
    )


def test_the_kubeflow_store_refuses_a_namespace_that_is_no_profile():
    """The evaluator on Kubeflow's own objects: what the policies say they do."""
    for release in STORES:
        target, port = store_pod(release)
        policies = kubeflow_policies(release)
        plain = Pod("imagelingo", {}, {"app.kubernetes.io/part-of": "imagelingo"})
        profile = Pod("team-a", {}, {"app.kubernetes.io/part-of": "kubeflow-profile"})
        gateway, neighbour = Pod("istio-system", {}), Pod("kubeflow", {"app": "ml-pipeline"})
        assert not admitted(policies, plain, target, port), release
        assert admitted(policies, profile, target, port), release
        assert admitted(policies, gateway, target, port), release
        assert admitted(policies, neighbour, target, port), release
    # v1.11.0: profile namespaces reach SeaweedFS on 8333 only, istio-system on every port
    target, _ = store_pod("v1.11.0")
    policies = kubeflow_policies("v1.11.0")
    assert not admitted(policies, profile, target, 9333)
    assert admitted(policies, gateway, target, 9333)


# --- points 5 and 6: our policy follows the service name and admits only Knative and the gateway


def deployed_pod(overlay: str, name: str) -> tuple[Pod, list[dict]]:
    """A predictor pod of an InferenceService deploy renders under another name than the
    overlay's, in the overlay's namespace, and the overlay's NetworkPolicies."""
    documents = render(overlay)
    mode = "Standard" if overlay.endswith("-standard") else "Knative"
    isvc = inference_service(DeployConfig(name=name, mode=mode), "s3://b/p/1", "1")
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    return predictor_pod(isvc, namespace_labels(documents)), policies


@needs_kubectl
@pytest.mark.parametrize("overlay", ["minio", "minio-standard", "aws"])
def test_the_policy_guards_a_service_of_any_name(overlay):
    pod, policies = deployed_pod(overlay, "captioner")
    assert isolated(policies, pod), "the NetworkPolicy does not select the predictor's pods"


@needs_kubectl
@pytest.mark.parametrize("overlay", ["minio", "aws"])
def test_knative_mode_admits_only_the_activator_and_the_gateway(overlay):
    pod, policies = deployed_pod(overlay, "captioner")
    activator, gateway = Pod("knative-serving", {"app": "activator"}), Pod("istio-system", {})
    other, neighbour = Pod("team-a", {}), Pod(pod.namespace, {"app": "other"})
    assert admitted(policies, activator, pod, 8012) and admitted(policies, gateway, pod, 8012)
    assert not admitted(policies, other, pod, 8012)
    assert not admitted(policies, neighbour, pod, 8012)
    assert admitted(policies, Pod("knative-serving", {"app": "autoscaler"}), pod, 9090)
    for port in (8080, 8081, 8082, 7070, 7071, 9090):  # TorchServe's own ports, metrics
        assert not admitted(policies, gateway, pod, port), port


# Kubeflow's profile controller labels every profile namespace so (kubeflow/manifests v1.11.0
# applications/profiles/pss/namespace-labels.yaml; v1.10.2 rendered example.yaml.gz:174243), and
# Kubeflow's own policies admit profiles by it (e.g. ml-pipeline's, v1.10.2 rendered :160826).
PROFILE = {"app.kubernetes.io/part-of": "kubeflow-profile"}


@needs_kubectl
def test_standard_mode_admits_the_gateway_profiles_and_its_own_namespace():
    """issue 26 (3): the README promises the Service answers inside the cluster, and a KFP task
    in a profile namespace is such a caller; the policy admitted istio-system only. Not shown on
    the box: its kernel has no nftables queue for kube-network-policies (box/NOTES-netpol.md)."""
    pod, policies = deployed_pod("minio-standard", "captioner")
    callers = [
        Pod("istio-system", {}),  # the gateway
        Pod("team-a", {"app": "kfp-task"}, PROFILE),  # a pipeline task in a profile namespace
        Pod(pod.namespace, {}),  # a pod beside the predictor
    ]
    for source in callers:
        assert admitted(policies, source, pod, 8080), source.namespace
    for source in (Pod("team-a", {}), Pod("knative-serving", {}), Pod("default", {})):
        assert not admitted(policies, source, pod, 8080), source.namespace
    for port in (8012, 8081, 8082, 7070, 7071):
        for source in callers:
            assert not admitted(policies, source, pod, port), (source.namespace, port)


def test_the_evaluator_follows_the_selector_rules():
    """podSelector alone is the policy's namespace; both selectors in one peer are AND; empty
    `from` or `ports` is everything; a named port is the target's container port."""
    policy = {
        "metadata": {"namespace": "a"},
        "spec": {
            "podSelector": {"matchLabels": {"x": "1"}},
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": [{"port": "http"}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "b"}},
                            "podSelector": {
                                "matchExpressions": [{"key": "role", "operator": "Exists"}]
                            },
                        }
                    ]
                },
            ],
        },
    }
    target = Pod("a", {"x": "1"}, ports={"http": 8000})
    assert admitted([policy], Pod("a", {}), target, 8000)
    assert not admitted([policy], Pod("a", {}), target, 8001)
    assert not admitted([policy], Pod("c", {}, {"team": "b"}), target, 8000)
    assert admitted([policy], Pod("c", {"role": "r"}, {"team": "b"}), target, 1)
    assert admitted([policy], Pod("c", {}), Pod("a", {"x": "2"}), 1)  # not selected: open
