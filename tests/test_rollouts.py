"""When deploy calls a rollout done: the decisions of imagelingo.cluster.kserve on the statuses
KServe writes (kserve/kserve v0.15.2 apis/serving/v1beta1/inference_service_status.go:
PropagateStatus copies observedGeneration, latestCreated/ReadyRevision and Ready from the Knative
Service, :442-511; PropagateRawStatus Ready from the first Deployment's Available, :334-355), and
the rollout steps' versions. The rollout steps as the API server stores them run against the real
API server and KServe: tests/box/test_deploy_on_kserve.py; real readiness: tests/box/test_e2e.py.
"""

from __future__ import annotations

from imagelingo.cluster.kserve import SOURCE_URI, knative_rolled_out, standard_rolled_out
from imagelingo.deploy import store_version


def make_store(root, content: bytes):
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "model-store" / "imagelingo.mar").write_bytes(content)
    (root / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    return root


def test_each_model_version_gets_its_own_storage_uri(tmp_path):
    stores = [make_store(tmp_path / f"store{i}", f"model {i}".encode()) for i in (1, 2)]
    v1, v2 = (store_version(s) for s in stores)
    assert v1 != v2 and len(v1) == 12
    assert store_version(stores[0]) == v1  # same bytes, same version


def knative_status(generation: int, created: str, ready: str, is_ready: bool = True) -> dict:
    """An InferenceService's status in Knative mode as KServe propagates it from the Knative
    Service (its observedGeneration is the Knative Service's: :510)."""
    return {
        "observedGeneration": generation,
        "components": {
            "predictor": {"latestCreatedRevision": created, "latestReadyRevision": ready}
        },
        "conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}],
    }


def test_no_ready_condition_is_not_ready():
    """KServe 0.15.0 in Knative mode sets no Ready condition until Knative reports a URL
    (box/NOTES-kserve.md; v0.15.0 reconcilers/ingress/ingress_reconciler.go:81-83)."""
    status = knative_status(2, "r1", "r1")
    status["conditions"] = [{"type": "LatestDeploymentReady", "status": "True"}]
    assert knative_rolled_out(status, {"observedGeneration": 1}, True) == (
        False,
        "no Ready condition",
    )
    assert knative_rolled_out(knative_status(2, "r1", "r1"), None, True) == (True, "")


def test_a_rollout_under_way_is_not_taken_for_ours():
    """issue 26 (2): "moved" is judged against the status in the answer to our write. v2 was
    written and was rolling out (revision r2 not ready) when our v3 was written; then r2 became
    ready. Compared with a status read before the upload that looked like our rollout."""
    at_write = knative_status(2, "r2", "r1", is_ready=False)
    v2_ready = knative_status(2, "r2", "r2")
    done, why = knative_rolled_out(v2_ready, at_write, changed=True)
    assert not done and "not yet passed the update" in why
    ours = knative_status(3, "r3", "r3")
    assert knative_rolled_out(ours, at_write, changed=True) == (True, "")


def test_production_moves_only_once_the_new_revision_serves():
    """issue 22 (2): an annotation-only update (the registry version) moves the Knative
    Service's generation, not the InferenceService's; the old revision is still Ready. Done only
    once the child's generation passed the one at our write and its new revision is ready."""
    at_write = knative_status(4, "r4", "r4")
    assert not knative_rolled_out(at_write, at_write, changed=True)[0]  # stale Ready
    creating = knative_status(5, "r5", "r4")
    assert knative_rolled_out(creating, at_write, changed=True) == (
        False,
        "revision r5 not ready yet (latest ready: r4)",
    )
    assert knative_rolled_out(knative_status(5, "r5", "r5"), at_write, changed=True)[0]
    # nothing changed (a no-op redeploy): the serving revision is the answer at once
    assert knative_rolled_out(at_write, at_write, changed=False) == (True, "")


def predictor_deployment(uri: str, generation: int, observed: int, **status) -> dict:
    annotations = {SOURCE_URI: uri, "imagelingo.io/registry-version": "7"}
    return {
        "metadata": {"name": "imagelingo-predictor", "generation": generation},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": annotations}}},
        "status": {"observedGeneration": observed, **status},
    }


def test_standard_mode_moves_only_once_old_replicas_are_gone():
    """A Deployment is Available while its old pods still serve; done is `kubectl rollout
    status`'s: every replica updated, none old left, all available."""
    desired = {
        "metadata": {"annotations": {"imagelingo.io/registry-version": "7"}},
        "spec": {"predictor": {"model": {"storageUri": "s3://b/m/v2"}}},
    }
    old = predictor_deployment("s3://b/m/v1", 1, 1, replicas=1, updatedReplicas=1)
    assert "KServe has not yet reconciled" in standard_rolled_out([old], desired)[1]
    unseen = predictor_deployment("s3://b/m/v2", 2, 1, replicas=1, updatedReplicas=1)
    assert standard_rolled_out([unseen], desired)[1].endswith("update not observed yet")
    rolling = predictor_deployment(
        "s3://b/m/v2", 2, 2, replicas=2, updatedReplicas=1, availableReplicas=2
    )
    assert standard_rolled_out([rolling], desired)[1].endswith("1 old replicas left")
    rolled = predictor_deployment(
        "s3://b/m/v2", 2, 2, replicas=1, updatedReplicas=1, availableReplicas=1
    )
    assert standard_rolled_out([rolled], desired) == (True, "")
