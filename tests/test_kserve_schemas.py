"""Every InferenceService and ServingRuntime the project produces, against KServe 0.20's CRD
schemas (tests/fixtures/kserve-crds, exact upstream copies; tests/kserve_crds.py applies the
structural-schema rules): each kustomize overlay, and what `deploy` renders for every combination
of its parameters and rollout steps. The validator itself is shown to reject what the API
server rejects."""

from __future__ import annotations

import copy
import gzip
import itertools
import shutil
import subprocess
from pathlib import Path

import kserve_crds
import pytest
import yaml

from imagelingo.config import REPO_ROOT
from imagelingo.deploy import (
    MODES,
    RUNTIMES,
    DeployConfig,
    inference_service,
    promote,
    rollback,
    rollout,
)

MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
SHARED = REPO_ROOT.parent / "shared" / "cluster-reference"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def test_the_crd_fixtures_are_the_upstream_bytes():
    kserve_crds.check_checksums()
    shared = SHARED / "kserve-crds" / "v0.20.0" / "config" / "crd" / "full"
    if shared.is_dir():  # and the same as the shared reference copy, where there is one
        for path in shared.glob("*.yaml.gz"):
            fixture = kserve_crds.CRD_DIR / path.name
            assert gzip.decompress(fixture.read_bytes()) == gzip.decompress(path.read_bytes())


def valid_isvc() -> dict:
    return inference_service(DeployConfig(), "s3://b/p/1", "1")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "predictor", "model", "storageURI"), "s3://b/p", "'storageURI' was unexpected"),
        (("spec", "predictor", "scaleMetrik"), "concurrency", "'scaleMetrik' was unexpected"),
        (("spec", "predictor", "minReplicas"), "1", "is not of type 'integer'"),
        (("spec", "predictor", "canaryTrafficPercent"), None, "None is not of type"),
        (
            ("spec", "predictor", "model", "securityContext", "runAsNonroot"),
            True,
            "'runAsNonroot' was",
        ),
        (("metadata", "labelz"), {}, "'labelz' was unexpected"),
        (("status",), {"url": "x"}, "should not be valid"),
    ],
)
def test_the_validator_rejects_what_the_api_server_rejects(path, value, message):
    document = valid_isvc()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    found = kserve_crds.errors(document)
    assert any(message in e for e in found), found


def test_the_validator_accepts_int_or_string_and_maps():
    document = valid_isvc()
    document["spec"]["predictor"]["model"]["resources"]["limits"] = {"cpu": 2, "memory": "4Gi"}
    document["spec"]["predictor"]["annotations"] = {"any.key/x": "y"}  # additionalProperties map
    assert kserve_crds.errors(document) == []
    document["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = 2.5
    assert kserve_crds.errors(document)


def test_the_validator_refuses_unknown_kinds_and_versions():
    document = valid_isvc()
    document["apiVersion"] = "serving.kserve.io/v1alpha1"
    assert "no KServe 0.20 CRD" in kserve_crds.errors(document)[0]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no cluster reference at {SHARED}")
def test_kserves_own_torchserve_runtime_validates():
    """The validator on an upstream object: what KServe ships must pass."""
    path = SHARED / "kserve-runtimes" / "v0.20.0" / "config" / "runtimes" / "kserve-torchserve.yaml"
    document = yaml.safe_load(path.read_text())
    document["spec"]["containers"][0]["image"] = "pytorch/torchserve-kfs:0.9.0"  # kustomize's
    kserve_crds.assert_valid(document)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_validates(overlay):
    result = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    kinds = []
    for document in yaml.safe_load_all(result.stdout):
        if document and document["kind"] in kserve_crds.KINDS:
            kserve_crds.assert_valid(document)
            kinds.append(document["kind"])
    assert "InferenceService" in kinds and "ServingRuntime" in kinds


def test_the_component_runtimes_validate():
    for path in sorted((MANIFESTS / "components").rglob("servingruntime.yaml")):
        document = yaml.safe_load(path.read_text())
        document["metadata"]["namespace"] = "imagelingo"
        kserve_crds.assert_valid(document)


CONFIGS = [
    DeployConfig(
        storage_uri="s3://models/imagelingo",
        mode=mode,
        runtime=runtime,
        protocol_version=protocol,
        canary_traffic_percent=canary,
        min_replicas=min_replicas,
    )
    for mode, runtime, protocol, canary, min_replicas in itertools.product(
        MODES, RUNTIMES, ("v1", "v2"), (-1, 0, 20, 100), (0, 1)
    )
]


def test_every_combination_of_deploy_parameters_and_rollout_steps_validates():
    """create, canary/full rollout over a live service, promote, rollback; 64 configurations."""
    checked = 0
    for config in CONFIGS:
        config.check()
        created = rollout(None, config, "s3://models/imagelingo/v1", "v1")
        kserve_crds.assert_valid(created)
        live = copy.deepcopy(created)
        live["metadata"]["resourceVersion"] = "1"
        second = rollout(live, config, "s3://models/imagelingo/v2", "v2")
        kserve_crds.assert_valid(second)
        checked += 2
        canary_running = "canary" in second["spec"] or second["spec"]["predictor"].get(
            "canaryTrafficPercent"
        )
        if canary_running:
            kserve_crds.assert_valid(promote(second))
            checked += 1
        kserve_crds.assert_valid(rollback(second))
        checked += 1
    assert checked >= 2 * len(CONFIGS) + len(CONFIGS)


def test_the_local_target_renders_a_valid_file(tmp_path):
    from imagelingo.deploy import deploy

    store = tmp_path / "store"
    for part in ("model-store", "config"):
        (store / part).mkdir(parents=True)
        (store / part / "f").write_text(part)
    deploy(store, tmp_path / "out", "local", DeployConfig(mode="Standard"))
    kserve_crds.assert_valid(
        yaml.safe_load((tmp_path / "out" / "inferenceservice.yaml").read_text())
    )


def test_a_fresh_clone_has_what_validation_needs():
    """The fixtures are in git (not only on this machine)."""
    listed = subprocess.run(
        ["git", "ls-files", str(kserve_crds.CRD_DIR)], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.split()
    names = {Path(p).name for p in listed}
    assert {"SHA256SUMS", "LICENSE", "SOURCE.md"} <= names
    assert len([n for n in names if n.endswith(".yaml.gz")]) == 3
