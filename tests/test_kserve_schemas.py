"""Every InferenceService and ServingRuntime the project produces, against the CRD schemas of
KServe 0.15.0 (Kubeflow 1.10), 0.15.2 (Kubeflow 1.11) and 0.20.0 (tests/fixtures/kserve-crds,
exact upstream copies; tests/kserve_crds.py applies the structural-schema rules): each kustomize
overlay, and what `deploy` renders for every combination of its parameters, KServe release and
rollout steps. The validator itself is shown to reject what the API server rejects."""

from __future__ import annotations

import copy
import itertools
import shutil
import subprocess

import kserve_crds
import pytest
import yaml

from imagelingo.config import REPO_ROOT
from imagelingo.deploy import (
    MODES,
    RUNTIMES,
    DeployConfig,
    KServe,
    inference_service,
    promote,
    rollback,
    rollout,
)
from imagelingo.errors import ImageLingoError

MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
SHARED = REPO_ROOT.parent / "shared" / "cluster-reference"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@pytest.mark.parametrize("version", kserve_crds.VERSIONS)
def test_the_crd_fixtures_are_the_upstream_bytes(version):
    kserve_crds.check_checksums(version)
    shared = SHARED / "kserve-crds" / f"v{version}" / "config" / "crd" / "full"
    if shared.is_dir():  # and the same gzip files as the shared reference copy, where there is one
        paths = sorted(shared.glob("*.yaml.gz"))
        assert paths
        for path in paths:
            fixture = kserve_crds.FIXTURES / f"v{version}" / path.name
            assert fixture.read_bytes() == path.read_bytes(), fixture


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
    assert "no KServe 0.20.0 CRD" in kserve_crds.errors(document)[0]


def test_the_015_crds_lack_what_020_added():
    """The validator sees the difference between releases: spec.canary[] and predictor.name are
    0.20's (cluster-reference README R6)."""
    document = inference_service(
        DeployConfig(mode="Standard"), "s3://b/p/1", "1", KServe.parse("0.20")
    )
    assert kserve_crds.errors(document, "0.20.0") == []
    for version in ("0.15.0", "0.15.2"):
        assert any("'name' was unexpected" in e for e in kserve_crds.errors(document, version))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no cluster reference at {SHARED}")
@pytest.mark.parametrize(
    ("tag", "versions"), [("v0.15.2", ("0.15.0", "0.15.2")), ("v0.20.0", ("0.20.0",))]
)
def test_kserves_own_torchserve_runtime_validates(tag, versions):
    """The validator on an upstream object: what KServe ships must pass."""
    path = SHARED / "kserve-runtimes" / tag / "config" / "runtimes" / "kserve-torchserve.yaml"
    document = yaml.safe_load(path.read_text())
    document["spec"]["containers"][0]["image"] = "pytorch/torchserve-kfs:0.9.0"  # kustomize's
    kserve_crds.assert_valid(document, versions)


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
        kserve_crds.assert_valid(document)  # every release


# What deploy writes for each KServe release, and the CRDs that must accept it: 0.15's API (also
# what deploy writes when no release is known) is accepted by every release; 0.20's by 0.20.
RELEASES = {"0.15": kserve_crds.VERSIONS, "0.20": ("0.20.0",)}
CONFIGS = [
    (
        DeployConfig(
            storage_uri="s3://models/imagelingo",
            mode=mode,
            runtime=runtime,
            protocol_version=protocol,
            canary_traffic_percent=canary,
            min_replicas=min_replicas,
        ),
        release,
    )
    for mode, runtime, protocol, canary, min_replicas, release in itertools.product(
        MODES, RUNTIMES, ("v1", "v2"), (-1, 0, 20, 100), (0, 1), RELEASES
    )
]


def test_every_combination_of_deploy_parameters_and_rollout_steps_validates():
    """create, canary/full rollout over a live service, promote, rollback; 128 configurations,
    each against the CRDs of the releases it is written for."""
    checked = refused = 0
    for config, name in CONFIGS:
        config.check()
        release, versions = KServe.parse(name), RELEASES[name]
        created = rollout(None, config, "s3://models/imagelingo/v1", "v1", release)
        kserve_crds.assert_valid(created, versions)
        live = copy.deepcopy(created)
        live["metadata"]["resourceVersion"] = "1"
        canary = config.mode == "Standard" and config.canary_traffic_percent >= 0
        if canary and not release.standard_canary:  # 0.15: no canary in RawDeployment mode
            with pytest.raises(ImageLingoError, match="spec.canary"):
                rollout(live, config, "s3://models/imagelingo/v2", "v2", release)
            refused += 1
            continue
        second = rollout(live, config, "s3://models/imagelingo/v2", "v2", release)
        kserve_crds.assert_valid(second, versions)
        checked += 2
        canary_running = "canary" in second["spec"] or second["spec"]["predictor"].get(
            "canaryTrafficPercent"
        )
        if canary_running:
            kserve_crds.assert_valid(promote(second), versions)
            checked += 1
        kserve_crds.assert_valid(rollback(second), versions)
        checked += 1
    # Standard x 0.15 x runtimes x protocols x canaries 0/20/100 x replicas
    assert refused == 3 * 2 * 3 * 2
    assert checked >= 3 * (len(CONFIGS) - refused)


def test_the_local_target_renders_a_valid_file(tmp_path):
    from imagelingo.deploy import deploy

    store = tmp_path / "store"
    for part in ("model-store", "config"):
        (store / part).mkdir(parents=True)
        (store / part / "f").write_text(part)
    (store / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    deploy(store, tmp_path / "out", "local", DeployConfig(mode="Standard"))
    kserve_crds.assert_valid(  # every release: no cluster to ask, the portable API
        yaml.safe_load((tmp_path / "out" / "inferenceservice.yaml").read_text())
    )


def test_a_fresh_clone_has_what_validation_needs():
    """The fixtures are in git (not only on this machine)."""
    listed = subprocess.run(
        ["git", "ls-files", str(kserve_crds.FIXTURES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    for version in kserve_crds.VERSIONS:
        folder = kserve_crds.FIXTURES.relative_to(REPO_ROOT) / f"v{version}"
        for name in ("SHA256SUMS", "LICENSE", "SOURCE.md"):
            assert str(folder / name) in listed, folder / name
        for kind in kserve_crds.KINDS:
            path = kserve_crds.crd_path(version, kind).relative_to(REPO_ROOT)
            assert str(path) in listed, path
