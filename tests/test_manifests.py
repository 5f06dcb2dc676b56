"""The kustomize manifests, checked offline: every overlay renders, the core kinds pass strict
schema validation, KServe's kinds round-trip through the kserve SDK models with no field unknown
or lost (tests/test_kserve_schemas.py validates them against the CRDs), the InferenceService is
the one deploy.py renders, the S3 Secret comes only from a generator fed by a gitignored file,
every pod is locked down (securityContext, NetworkPolicy), and yamllint is clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagelingo.config import REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
BIN = Path(sys.executable).parent
KSERVE_KINDS = {
    "InferenceService": "V1beta1InferenceService",
    "ServingRuntime": "V1alpha1ServingRuntime",
}

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_kinds(overlay):
    kinds = {d["kind"] for d in render(overlay)}
    expected = {"Namespace", "ServiceAccount", "Role", "RoleBinding", "InferenceService"}
    assert expected | {"ServingRuntime", "NetworkPolicy"} <= kinds
    assert "Secret" not in kinds  # applying an overlay never overwrites the real S3 Secret
    assert all(
        d["metadata"].get("namespace") == "imagelingo"
        for d in render(overlay)
        if d["kind"] != "Namespace"
    )


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_pass_strict_schema_validation(overlay, tmp_path):
    core = [d for d in render(overlay) if d["kind"] not in KSERVE_KINDS]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kserve_kinds_round_trip_through_the_sdk_models(overlay, monkeypatch):
    import kserve.models
    import kubernetes.client.models
    from kserve.api_client import ApiClient

    # kserve's models embed Kubernetes' (V1ObjectMeta, V1Container...): let its deserializer
    # find both, the way the kserve SDK's own clients combine them.
    for name in dir(kubernetes.client.models):
        if name.startswith("V") and not hasattr(kserve.models, name):
            monkeypatch.setattr(
                kserve.models, name, getattr(kubernetes.client.models, name), raising=False
            )
    client = ApiClient()
    checked = 0
    for document in render(overlay):
        if document["kind"] not in KSERVE_KINDS:
            continue
        model = client._ApiClient__deserialize(document, KSERVE_KINDS[document["kind"]])
        out = client.sanitize_for_serialization(model)
        if document["kind"] == "InferenceService":
            # V1beta1ModelSpec fills the container name it requires with "", what a Go client
            # sends too; KServe forbids any other value there (inference_service_validation.go:291)
            assert out["spec"]["predictor"]["model"].pop("name") == ""
        assert out == document, document["kind"]
        checked += 1
    assert checked >= 1


def overlay_mode(overlay: str) -> str:
    return "Standard" if overlay.endswith("-standard") else "Knative"


def test_the_base_inferenceservice_is_generated_from_deploy():
    from imagelingo.deploy import render_manifest

    committed = (MANIFESTS / "base" / "inferenceservice.yaml").read_text()
    assert committed == render_manifest(), "run `python -m imagelingo.deploy` to regenerate"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_serves_what_deploy_renders(overlay):
    """One source of truth: the overlay's InferenceService equals deploy's for that mode and
    bucket (resources, scaling, runtime, securityContext, everything)."""
    from imagelingo.deploy import DeployConfig, inference_service

    (isvc,) = [d for d in render(overlay) if d["kind"] == "InferenceService"]
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert uri.endswith("/v1")
    config = DeployConfig(storage_uri=uri.rsplit("/", 1)[0], mode=overlay_mode(overlay))
    expected = inference_service(config, uri, "v1")
    assert isvc == expected


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_readme_apply_selector_leaves_out_only_the_inferenceservice(overlay):
    """`kubectl apply -k ... -l app.kubernetes.io/managed-by!=imagelingo-deploy` (README):
    everything but the InferenceService, which `imagelingo deploy` owns."""
    from imagelingo.deploy import LABELS

    key, value = "app.kubernetes.io/managed-by", LABELS["app.kubernetes.io/managed-by"]
    selected = [d for d in render(overlay) if d["metadata"].get("labels", {}).get(key) == value]
    assert [d["kind"] for d in selected] == ["InferenceService"]
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"kubectl apply -k manifests/overlays/minio -l '{key}!={value}'" in readme


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay):
    """issue 13: non-root, no privilege escalation, all capabilities dropped, seccomp
    RuntimeDefault; read-only root on the runtimes (their writable paths are emptyDirs)."""
    documents = render(overlay)
    (isvc,) = [d for d in documents if d["kind"] == "InferenceService"]
    predictor = isvc["spec"]["predictor"]
    if overlay_mode(overlay) == "Standard":
        assert predictor["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    else:  # Knative rejects any pod-level field by default (deploy.py, POD_SECURITY)
        assert "securityContext" not in predictor
    locked = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert locked.items() <= predictor["model"]["securityContext"].items()
    runtimes = [d for d in documents if d["kind"] == "ServingRuntime"]
    assert runtimes
    for runtime in runtimes:
        for container in runtime["spec"]["containers"]:
            context = container["securityContext"]
            assert locked.items() <= context.items(), runtime["metadata"]["name"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["runAsUser"] > 0
            volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
            assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policy_admits_only_the_serving_port(overlay):
    """Which pods and sources: tests/test_networkpolicies.py evaluates it; here its shape."""
    from imagelingo.deploy import LABELS

    documents = render(overlay)
    (policy,) = [d for d in documents if d["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    # labels deploy always sets (not the service's name, a pipeline parameter) + KServe's
    assert selector == {
        "app.kubernetes.io/managed-by": LABELS["app.kubernetes.io/managed-by"],
        "component": "predictor",
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    serving = 8080 if overlay_mode(overlay) == "Standard" else 8012
    ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert serving in ports
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every namespace"
        assert rule.get("ports"), "a rule without ports admits every port"
        assert not {p["port"] for p in rule["ports"]} & {8081, 8082, 7070, 7071}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_runtime_deploy_names_is_in_the_overlay_and_accepts_its_model(overlay):
    from imagelingo.deploy import MODEL_FORMAT

    documents = render(overlay)
    (isvc,) = [d for d in documents if d["kind"] == "InferenceService"]
    runtimes = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ServingRuntime"}
    model = isvc["spec"]["predictor"]["model"]
    runtime = runtimes[model["runtime"]]
    assert runtime["metadata"]["name"] == "imagelingo-torchserve"
    container = runtime["spec"]["containers"][0]
    assert container["image"] == "pytorch/torchserve-kfs:0.9.0"
    assert container["args"][-1] == "--ts-config=/mnt/models/config/direct.properties"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    for runtime in runtimes.values():  # every runtime can really be selected by name
        formats = runtime["spec"]["supportedModelFormats"]
        assert [f["name"] for f in formats] == [MODEL_FORMAT]
        assert all(f["autoSelect"] is False for f in formats)
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_the_native_predictor_runtime_accepts_what_deploy_sends():
    """Its old modelFormat (imagelingo-mar) was one nothing sent, so it could never be chosen."""
    from imagelingo.deploy import RUNTIMES, DeployConfig, inference_service

    runtime = yaml.safe_load(
        (MANIFESTS / "components" / "native-predictor" / "servingruntime.yaml").read_text()
    )
    assert runtime["metadata"]["name"] in RUNTIMES
    model = inference_service(DeployConfig(runtime="imagelingo-kserve"), "s3://b/p/1")["spec"][
        "predictor"
    ]["model"]
    assert model["runtime"] == "imagelingo-kserve"
    assert model["modelFormat"]["name"] in [
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    ]


@needs_kubectl
@pytest.mark.parametrize("overlay", ["minio", "aws"])
def test_the_s3_secret_comes_from_a_gitignored_env_file(overlay, tmp_path):
    secrets = MANIFESTS / "secrets" / overlay
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(secrets / "s3.env")], cwd=REPO_ROOT
    ).returncode
    assert ignored == 0, "s3.env must be gitignored"
    copy = tmp_path / overlay
    shutil.copytree(secrets, copy)
    (copy / "s3.env").write_text("AWS_ACCESS_KEY_ID=AKIAX\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")
    result = subprocess.run(["kubectl", "kustomize", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (secret,) = yaml.safe_load_all(result.stdout)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "imagelingo-s3"
    assert secret["metadata"]["namespace"] == "imagelingo"
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    annotations = secret["metadata"]["annotations"]  # KServe's storage initializer reads these
    assert "serving.kserve.io/s3-endpoint" in annotations
    assert annotations["serving.kserve.io/s3-usehttps"] in ("0", "1")
    example = (secrets / "s3.env.example").read_text()
    assert "AWS_ACCESS_KEY_ID=" in example and "AWS_SECRET_ACCESS_KEY=" in example
    # without the env file there is nothing to apply: no placeholder Secret can be created
    (copy / "s3.env").unlink()
    assert subprocess.run(["kubectl", "kustomize", str(copy)], capture_output=True).returncode


SHARED = REPO_ROOT.parent / "shared" / "cluster-reference"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no cluster reference at {SHARED}")
@pytest.mark.parametrize("overlay", ["minio", "aws"])
def test_the_s3_secret_carries_the_names_kserve_reads(overlay):
    """issue 22 (8): the key names KServe's credentials.s3 config names (not Kubeflow's
    accesskey/secretkey), and only annotations KServe's s3 credential code defines."""
    import re

    config = (SHARED / "kserve-runtimes/v0.15.2/config/configmap/inferenceservice.yaml").read_text()
    for key in ("s3AccessKeyIDName", "s3SecretAccessKeyName"):
        (name,) = set(re.findall(rf'"{key}"\s*:\s*"([A-Z_]+)"', config))
        assert f"{name}=" in (MANIFESTS / "secrets" / overlay / "s3.env.example").read_text()
    code = (SHARED / "kserve-runtimes/v0.20.0/pkg/credentials/s3/s3_secret.go").read_text()
    known = {f"serving.kserve.io/{n}" for n in re.findall(r'"/" \+ "(s3-[a-z-]+)"', code)}
    assert "serving.kserve.io/s3-endpoint" in known
    kustomization = yaml.safe_load(
        (MANIFESTS / "secrets" / overlay / "kustomization.yaml").read_text()
    )
    annotations = kustomization["generatorOptions"]["annotations"]
    assert "serving.kserve.io/s3-endpoint" in annotations
    assert set(annotations) <= known, set(annotations) - known


def restricted_violations(container: dict, pod: dict | None = None) -> list[str]:
    """The container-level checks of Pod Security "restricted" (Kubernetes 1.32,
    https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted): privilege
    escalation off, every capability dropped (NET_BIND_SERVICE may be added), non-root, not
    UID 0, seccomp RuntimeDefault or Localhost (runAsNonRoot and seccomp may come from the pod)."""
    context, pod = container.get("securityContext") or {}, pod or {}
    capabilities = context.get("capabilities") or {}
    seccomp = (context.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
    found = []
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation")
    if "ALL" not in (capabilities.get("drop") or []):
        found.append("capabilities.drop")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append("capabilities.add")
    if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        found.append("runAsNonRoot")
    if context.get("runAsUser", pod.get("runAsUser")) == 0:
        found.append("runAsUser")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append("seccompProfile")
    return found


def test_the_predictor_account_lists_the_s3_secret():
    account = yaml.safe_load((MANIFESTS / "base" / "serviceaccount.yaml").read_text())
    assert account["secrets"] == [{"name": "imagelingo-s3"}]
    assert account["automountServiceAccountToken"] is False


def test_deploy_rbac_is_limited_to_what_deploy_does():
    role = next(yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text()))
    assert role["kind"] == "Role"  # namespaced, not a ClusterRole
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert set(rules) == {
        ("inferenceservices",),
        ("servingruntimes",),
        ("serviceaccounts",),
        ("secrets",),
        ("deployments",),  # Standard mode: deploy waits on their rollout
        ("pods", "events"),  # and names why it did not finish
    }
    assert "delete" not in rules[("inferenceservices",)]["verbs"]
    assert "update" in rules[("inferenceservices",)]["verbs"]  # deploy replaces (PUT)
    assert rules[("secrets",)]["resourceNames"] == ["imagelingo-s3"]
    assert rules[("deployments",)]["verbs"] == rules[("pods", "events")]["verbs"] == ["list"]
    assert all(
        r["verbs"] == ["get"]
        for k, r in rules.items()
        if k not in {("inferenceservices",), ("deployments",), ("pods", "events")}
    )


def test_yamllint_is_clean():
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-c", str(REPO_ROOT / ".yamllint"), str(MANIFESTS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
