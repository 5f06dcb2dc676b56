"""The kustomize manifests, checked offline: every overlay renders, the core kinds pass strict
schema validation, KServe's kinds round-trip through the kserve SDK models with no field unknown
or lost, and yamllint is clean."""

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
    expected = {"Namespace", "Secret", "ServiceAccount", "Role", "RoleBinding", "InferenceService"}
    assert expected <= kinds
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
        assert client.sanitize_for_serialization(model) == document, document["kind"]
        checked += 1
    assert checked >= 1


def test_secret_template_holds_only_placeholders():
    secret = yaml.safe_load((MANIFESTS / "base" / "s3-secret.yaml").read_text())
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values())
    assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]


def test_deploy_rbac_is_limited_to_inferenceservices():
    role = next(yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text()))
    assert role["kind"] == "Role"  # namespaced, not a ClusterRole
    assert [r["resources"] for r in role["rules"]] == [["inferenceservices"]]
    assert "delete" not in role["rules"][0]["verbs"]


def test_yamllint_is_clean():
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-c", str(REPO_ROOT / ".yamllint"), str(MANIFESTS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
