"""Versioned rollouts as KServe 0.20 defines them, through a stand-in API server (tests/
fake_kube.py: real HTTP, resourceVersion, CRD-schema admission). Each test walks create -> canary
-> promote -> rollback and asserts the spec the controller sees at every generation."""

from __future__ import annotations

import kserve_crds
import pytest
from fake_kserve import SOURCE_URI
from fake_kube import FakeKube

from imagelingo.deploy import (
    PREVIOUS_URI_ANNOTATION,
    DeployConfig,
    KubeApi,
    change_traffic,
    deploy,
    store_version,
)
from imagelingo.errors import ImageLingoError

NS = "imagelingo"


def make_kube(tmp_path, release: str = kserve_crds.NEWEST) -> FakeKube:
    """A stand-in API server playing KServe `release`, with the namespace set up."""
    from kubernetes import config

    fake = FakeKube(release)
    fake.add_namespace(
        NS, secret_data={"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}
    )
    fake.api = KubeApi(config.new_client_from_config(str(fake.write_kubeconfig(tmp_path / "kc"))))
    return fake


@pytest.fixture
def kube(tmp_path):
    fake = make_kube(tmp_path)
    yield fake
    fake.close()


def make_store(root, content: bytes):
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "model-store" / "imagelingo.mar").write_bytes(content)
    (root / "config" / "direct.properties").write_text("inference_address=http://0.0.0.0:8080\n")
    (root / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    return root


@pytest.fixture
def stores(tmp_path):
    return [make_store(tmp_path / f"store{i}", f"model {i}".encode()) for i in (1, 2)]


@pytest.fixture
def bucket(s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="models")
    return "s3://models/imagelingo"


def predictor_of(spec):
    return spec["predictor"]


def test_each_model_version_gets_its_own_storage_uri(stores):
    v1, v2 = (store_version(s) for s in stores)
    assert v1 != v2 and len(v1) == 12
    assert store_version(stores[0]) == v1  # same bytes, same version


def test_knative_create_canary_promote_rollback(kube, stores, bucket, tmp_path, s3_server):
    v1, v2 = (f"{bucket}/{store_version(s)}" for s in stores)
    config = DeployConfig(storage_uri=bucket)

    first = deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    assert first["action"] == "created"
    assert first["url"] == "http://imagelingo.imagelingo.example.com"
    created = predictor_of(kube.seen[-1]["spec"])
    assert created["model"]["storageUri"] == v1
    assert "canaryTrafficPercent" not in created

    canary = DeployConfig(storage_uri=bucket, canary_traffic_percent=20)
    assert deploy(stores[1], tmp_path / "d2", "kserve", canary, client=kube.api)["action"] == (
        "replaced"
    )
    seen = predictor_of(kube.seen[-1]["spec"])
    # a new storageUri: a new Knative revision, 20% on it, 80% on the last rolled-out one (v1)
    assert seen["model"]["storageUri"] == v2 and seen["canaryTrafficPercent"] == 20
    assert kube.isvc(NS, "imagelingo")["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION] == v1

    change_traffic("promote", config, client=kube.api)
    promoted = predictor_of(kube.seen[-1]["spec"])
    assert promoted["model"]["storageUri"] == v2 and "canaryTrafficPercent" not in promoted

    change_traffic("rollback", config, client=kube.api)  # after promotion: v1 again, all traffic
    rolled = predictor_of(kube.seen[-1]["spec"])
    assert rolled["model"]["storageUri"] == v1 and "canaryTrafficPercent" not in rolled
    assert [s["generation"] for s in kube.seen] == [1, 2, 3, 4]


def test_knative_rollback_during_a_canary_pins_the_previous_revision(
    kube, stores, bucket, tmp_path
):
    config = DeployConfig(storage_uri=bucket)
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    canary = DeployConfig(storage_uri=bucket, canary_traffic_percent=30)
    deploy(stores[1], tmp_path / "d2", "kserve", canary, client=kube.api)
    change_traffic("rollback", config, client=kube.api)
    # KServe: canaryTrafficPercent 0 sends everything to the last rolled-out revision (v1) at
    # once, without new pods (ksvc_reconciler.go:134-152)
    assert predictor_of(kube.seen[-1]["spec"])["canaryTrafficPercent"] == 0
    with pytest.raises(ImageLingoError, match="rolled back"):
        change_traffic("promote", config, client=kube.api)
    # the next version rolls out fully; the version to go back to is still v1, not the canary
    third = make_store(tmp_path / "store3", b"model 3")
    deploy(third, tmp_path / "d3", "kserve", config, client=kube.api)
    v1 = f"{bucket}/{store_version(stores[0])}"
    annotations = kube.isvc(NS, "imagelingo")["metadata"]["annotations"]
    assert annotations[PREVIOUS_URI_ANNOTATION] == v1
    change_traffic("rollback", config, client=kube.api)
    assert predictor_of(kube.seen[-1]["spec"])["model"]["storageUri"] == v1


def test_a_full_deploy_after_a_canary_clears_it(kube, stores, bucket, tmp_path):
    """canary_traffic_percent=-1 must remove an earlier canaryTrafficPercent: deploy replaces
    the object (PUT); a merge patch that omits the field would keep it, as the API server does."""
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(storage_uri=bucket), client=kube.api)
    canary = DeployConfig(storage_uri=bucket, canary_traffic_percent=10)
    deploy(stores[1], tmp_path / "d2", "kserve", canary, client=kube.api)
    assert predictor_of(kube.seen[-1]["spec"])["canaryTrafficPercent"] == 10

    # what the old `KServeClient.patch` (a merge patch) would have left behind:
    current = kube.isvc(NS, "imagelingo")
    omitted = {
        "spec": {
            "predictor": {
                k: v for k, v in current["spec"]["predictor"].items() if k != "canaryTrafficPercent"
            }
        }
    }
    merged = kube.handle(
        "PATCH",
        f"{'/apis/serving.kserve.io/v1beta1/namespaces'}/{NS}/inferenceservices/imagelingo",
        omitted,
    )
    assert merged["spec"]["predictor"]["canaryTrafficPercent"] == 10

    deploy(stores[0], tmp_path / "d3", "kserve", DeployConfig(storage_uri=bucket), client=kube.api)
    assert "canaryTrafficPercent" not in predictor_of(kube.seen[-1]["spec"])
    assert (
        "PUT",
        f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/imagelingo",
    ) in kube.requests


def test_standard_mode_canary_is_a_second_predictor(kube, stores, bucket, tmp_path):
    v1, v2 = (store_version(s) for s in stores)
    config = DeployConfig(storage_uri=bucket, mode="Standard")
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    created = kube.seen[-1]["spec"]
    assert created["predictor"]["name"] == f"model-{v1}" and "canary" not in created
    assert created["predictor"]["scaleMetric"] == "cpu"  # HPA; concurrency is Knative-only

    canary = DeployConfig(storage_uri=bucket, mode="Standard", canary_traffic_percent=25)
    deploy(stores[1], tmp_path / "d2", "kserve", canary, client=kube.api)
    spec = kube.seen[-1]["spec"]
    assert spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v1}"  # stable unchanged
    (entry,) = spec["canary"]
    assert entry["trafficPercent"] == 25
    assert entry["predictor"]["name"] == f"model-{v2}"
    assert entry["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"
    assert not {"maxReplicas", "scaleMetric", "scaleTarget"} & set(entry["predictor"])
    assert "canaryTrafficPercent" not in spec["predictor"]  # ignored in Standard mode

    change_traffic("promote", config, client=kube.api)
    spec = kube.seen[-1]["spec"]
    # inference_service.go:36-42: the stable predictor takes the canary's name and model
    assert "canary" not in spec and spec["predictor"]["name"] == f"model-{v2}"
    assert spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"
    assert spec["predictor"]["maxReplicas"] == 3

    deploy(
        stores[0],
        tmp_path / "d3",
        "kserve",
        DeployConfig(storage_uri=bucket, mode="Standard", canary_traffic_percent=50),
        client=kube.api,
    )
    change_traffic("rollback", config, client=kube.api)
    spec = kube.seen[-1]["spec"]
    assert "canary" not in spec and spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"


def test_the_mode_of_a_live_service_cannot_change(kube, stores, bucket, tmp_path):
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(storage_uri=bucket), client=kube.api)
    with pytest.raises(ImageLingoError, match="Knative mode"):
        deploy(
            stores[1],
            tmp_path / "d2",
            "kserve",
            DeployConfig(storage_uri=bucket, mode="Standard"),
            client=kube.api,
        )
    assert len(kube.seen) == 1


def test_the_api_server_rejects_what_the_crd_schema_rejects(kube):
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x", "namespace": NS},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageURI": "s3://b/p"}}
        },
    }
    out = kube.handle(
        "POST", f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices", body
    )
    assert out["code"] == 422 and "storageURI" in out["message"]


def test_a_replace_keeps_what_others_own_on_the_object(kube, stores, bucket, tmp_path):
    """PUT replaces the spec, not KServe's finalizer or someone else's label/annotation."""
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(storage_uri=bucket), client=kube.api)
    live = kube.isvc(NS, "imagelingo")
    assert live["metadata"]["finalizers"] == ["inferenceservice.finalizers"]
    live["metadata"]["labels"]["team"] = "vision"
    live["metadata"]["annotations"]["example.com/owner"] = "alice"
    live["metadata"]["annotations"]["imagelingo.io/registry-version"] = "7"
    live["metadata"]["finalizers"] = ["example.com/keep"]
    deploy(stores[1], tmp_path / "d2", "kserve", DeployConfig(storage_uri=bucket), client=kube.api)
    meta = kube.isvc(NS, "imagelingo")["metadata"]
    assert meta["finalizers"] == ["example.com/keep"]
    assert meta["labels"]["team"] == "vision"
    assert meta["annotations"]["example.com/owner"] == "alice"
    assert "imagelingo.io/registry-version" not in meta["annotations"]  # ours, not rendered now


def test_an_unknown_registry_version_stops_deploy_before_any_change(kube, stores, bucket, tmp_path):
    with pytest.raises(ImageLingoError, match="registry has no version 42"):
        deploy(
            stores[0],
            tmp_path / "d1",
            "kserve",
            DeployConfig(storage_uri=bucket),
            client=kube.api,
            model_version="42",
        )
    assert kube.seen == []


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_production_moves_only_once_the_new_version_serves(
    kube, stores, bucket, tmp_path, monkeypatch, mode
):
    """issue 22 (2): KServe copies status.observedGeneration from the child (the Knative Service
    or the Deployment: tests/fake_kserve.py), so comparing it with the InferenceService's
    generation passed at once on an annotation-only update (the registry version: it moves the
    child's generation, not the InferenceService's), on the stale Ready, and in Standard mode on
    a Deployment that is Available while old pods still serve. The production alias must move
    only when the new revision / rollout serves."""
    from imagelingo import registry

    moved = []
    monkeypatch.setattr(registry, "versions", lambda: [{"version": "6"}, {"version": "7"}])
    monkeypatch.setattr(
        registry, "set_production", lambda v: moved.append(kube.controller.serving("imagelingo"))
    )
    config = DeployConfig(storage_uri=bucket, mode=mode)
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api, model_version="6")
    deploy(stores[0], tmp_path / "d2", "kserve", config, client=kube.api, model_version="7")
    deploy(stores[1], tmp_path / "d3", "kserve", config, client=kube.api, model_version="7")
    uris = [f"{bucket}/{store_version(s)}" for s in (stores[0], stores[0], stores[1])]
    for (serving,), registered, uri in zip(moved, ("6", "7", "7"), uris, strict=True):
        assert serving["metadata"]["annotations"]["imagelingo.io/registry-version"] == registered
        assert serving["metadata"]["annotations"][SOURCE_URI] == uri


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_a_no_op_redeploy_returns_at_once(kube, stores, bucket, tmp_path, mode):
    """issue 26 (2): KServe's webhook writes spec.predictor.model.name "" (tests/fake_kserve.py
    webhook), so the live spec never equals ours; the old wait_ready took that for a change and
    waited (Knative) for a rollout that never comes. The API server's generation decides."""
    config = DeployConfig(storage_uri=bucket, mode=mode, timeout_s=5)
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    again = deploy(stores[0], tmp_path / "d2", "kserve", config, client=kube.api)
    assert again["url"] == "http://imagelingo.imagelingo.example.com"
    assert [s["generation"] for s in kube.seen] == [1]


def test_a_rollout_under_way_is_not_taken_for_ours(kube, stores, bucket, tmp_path, monkeypatch):
    """issue 26 (2): "moved" is judged against the status in the answer to our write. v2 is
    written and left rolling out; while v3 uploads, v2's revision becomes ready: compared with
    the status read before the upload, that looked like v3's rollout, and deploy returned with
    v2 serving."""
    from imagelingo import deploy as stage

    config = DeployConfig(storage_uri=bucket)
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    v2 = stage.rollout(kube.api.get_isvc(NS, "imagelingo"), config, f"{bucket}/v2", "v2")
    stage.apply(kube.api, v2, kube.api.get_isvc(NS, "imagelingo"))
    upload = stage.upload_store

    def upload_while_v2_rolls_out(*args):
        for _ in range(5):  # each read lets KServe and Knative take a step
            kube.api.get_isvc(NS, "imagelingo")
        return upload(*args)

    monkeypatch.setattr(stage, "upload_store", upload_while_v2_rolls_out)
    third = make_store(tmp_path / "store3", b"model 3")
    deploy(third, tmp_path / "d3", "kserve", config, client=kube.api)
    (serving,) = kube.controller.serving("imagelingo")
    assert serving["metadata"]["annotations"][SOURCE_URI] == f"{bucket}/{store_version(third)}"


@pytest.mark.parametrize("release", kserve_crds.VERSIONS)
@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_kserve_runs_the_mode_asked_for_on_every_release(release, mode, stores, bucket, tmp_path):
    """issue 22 (8): KServe 0.15 runs an annotation value it does not know (`Standard`) as its
    default, Serverless; deploy (kserve_version auto) reads the served CRD and writes the name
    that release knows. The stand-in records the mode KServe took (status.deploymentMode)."""
    kube = make_kube(tmp_path, release)
    try:
        config = DeployConfig(storage_uri=bucket, mode=mode)
        deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
        assert kube.isvc(NS, "imagelingo")["status"]["deploymentMode"] == mode
        if mode == "Standard" and release < "0.20":
            canary = DeployConfig(storage_uri=bucket, mode=mode, canary_traffic_percent=10)
            with pytest.raises(ImageLingoError, match=r"KServe 0.15 has no canary"):
                deploy(stores[1], tmp_path / "d2", "kserve", canary, client=kube.api)
            assert len(kube.seen) == 1
    finally:
        kube.close()


def test_no_ready_condition_is_not_ready():
    """KServe 0.15.0 in Knative mode sets no Ready condition until Knative reports a URL
    (box/NOTES-kserve.md; v0.15.0 reconcilers/ingress/ingress_reconciler.go:81-83)."""
    from imagelingo.cluster.kserve import knative_rolled_out

    predictor = {"latestCreatedRevision": "r1", "latestReadyRevision": "r1"}
    status = {
        "observedGeneration": 2,
        "components": {"predictor": predictor},
        "conditions": [{"type": "LatestDeploymentReady", "status": "True"}],
    }
    assert knative_rolled_out(status, {"observedGeneration": 1}, True) == (
        False,
        "no Ready condition",
    )
    ready = {"type": "Ready", "status": "True"}
    assert knative_rolled_out({**status, "conditions": [ready]}, None, True) == (True, "")


def test_a_write_by_someone_else_during_deploy_is_not_undone(kube, stores, bucket, tmp_path):
    """A 409 on deploy's PUT is retried only when KServe's own fields moved (status, finalizer:
    tests/fake_kube.py bumps resourceVersion on each status write, as the API server does); a
    spec another deploy wrote meanwhile stops ours with nothing written."""
    from imagelingo import deploy as stage

    config = DeployConfig(storage_uri=bucket)
    deploy(stores[0], tmp_path / "d1", "kserve", config, client=kube.api)
    read = kube.api.get_isvc(NS, "imagelingo")
    theirs = stage.rollout(read, config, f"{bucket}/theirs", "theirs")
    stage.apply(kube.api, theirs, kube.api.get_isvc(NS, "imagelingo"))
    ours = stage.rollout(read, config, f"{bucket}/ours", "ours")
    with pytest.raises(ImageLingoError, match="changed by someone else while deploy ran"):
        stage.apply(kube.api, ours, read)
    live = kube.isvc(NS, "imagelingo")
    assert live["spec"] == kube.api.get_isvc(NS, "imagelingo")["spec"]
    assert "theirs" in str(live["spec"]) and "ours" not in str(live["spec"])
