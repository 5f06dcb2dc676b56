"""imagelingo deploy's write-and-decide against the real API server and KServe's webhooks and
controller (the control plane of control_plane.py, one per target).

Issue 26 defect 2: KServe's defaulting webhook writes `spec.predictor.model.name: ""` into every
InferenceService, so the live spec never equals the one deploy renders; the old wait_ready took
that for a change (measured here: changed=True on a no-op redeploy, generation 1 -> 1) and, in
Knative mode, waited for a rollout that never comes. Now deploy decides from the API server's
answer to its own write: the generation moves only when the stored spec changes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from box_cluster import poll
from control_plane import NS, box

from imagelingo.cluster.kserve import SOURCE_URI, knative_rolled_out, standard_rolled_out
from imagelingo.deploy import (
    REGISTRY_ANNOTATION,
    DeployConfig,
    KubeApi,
    apply,
    changed_by_write,
    rollout,
    served_kserve,
    versioned_uri,
    wait_ready,
)
from imagelingo.errors import ImageLingoError

pytestmark = pytest.mark.slow


def settled(api: KubeApi, name: str, quiet_s: float = 3, timeout_s: float = 120) -> dict:
    """The InferenceService once KServe stops writing to it (finalizer, status): deploy's PUT
    carries the resourceVersion it read, and a write in between is a 409."""
    seen: list[dict] = []

    def unchanged() -> dict | None:
        seen.append(api.get_isvc(NS, name))
        versions = [live["metadata"]["resourceVersion"] for live in seen[-2:]]
        return seen[-1] if len(versions) == 2 and versions[0] == versions[1] else None

    return poll(
        f"InferenceService {NS}/{name} unchanged for {quiet_s} s", unchanged, timeout_s, quiet_s
    )


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_redeploy_is_decided_by_the_api_server(box, mode, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", box.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = KubeApi()
    kserve = served_kserve(api)
    assert kserve.name == ("0.20" if box.env["TARGET"] == "kserve-0.20" else "0.15")
    config = DeployConfig(
        name=f"imagelingo-{mode.lower()}", storage_uri="s3://imagelingo/model-store", mode=mode
    )
    v1, v2 = (versioned_uri(config.storage_uri, v) for v in ("v1", "v2"))
    _, _, created = apply(api, rollout(None, config, v1, "v1", kserve), None)
    assert created["metadata"]["generation"] == 1

    # a no-op redeploy from the object as read before KServe wrote its finalizer and status:
    # the PUT with that resourceVersion is a 409 (deploy failed so before), apply reads again
    # and repeats it, because only KServe's fields moved
    live = settled(api, config.name)
    assert live["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    desired = rollout(created, config, v1, "v1", kserve)
    assert live["spec"]["predictor"]["model"]["name"] == ""  # the webhook's, not in ours
    assert live["spec"] != desired["spec"]  # what the old wait_ready took for a change
    _, before, written = apply(api, desired, created)
    assert before["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    assert written["metadata"]["generation"] == 1
    assert not changed_by_write(before, written)

    # a new model version: a new storageUri, the API server moves the generation
    before = settled(api, config.name)
    _, _, written = apply(api, rollout(before, config, v2, "v2", kserve), before)
    assert written["metadata"]["generation"] == 2
    assert changed_by_write(before, written)

    # only our annotation (the registry version): no new generation, still a change
    before = settled(api, config.name)
    desired = rollout(before, config, v2, "v2", kserve)
    desired["metadata"]["annotations"][REGISTRY_ANNOTATION] = "7"
    _, _, annotated = apply(api, desired, before)
    assert annotated["metadata"]["generation"] == 2
    assert changed_by_write(before, annotated)

    # no kubelet, no Knative controller: not rolled out, and wait_ready says so in time
    if mode == "Standard":
        deployment = wait_for_deployment(api, config.name, v2)
        assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]
        assert deployment["status"]["updatedReplicas"] >= 1
        done, why = standard_rolled_out([deployment], annotated)
    else:
        done, why = knative_rolled_out(
            api.get_isvc(NS, config.name).get("status", {}), annotated.get("status", {}), True
        )
    assert not done and why
    with pytest.raises(ImageLingoError, match="not rolled out after 2 s"):
        wait_ready(api, replace(config, timeout_s=2), before, annotated)


def wait_for_deployment(api: KubeApi, name: str, uri: str, timeout_s: float = 120) -> dict:
    """The predictor Deployment KServe made for `uri`, once kube-controller-manager observed it."""

    def observed() -> dict | None:
        for deployment in api.predictor_deployments(NS, name):
            template = deployment["spec"]["template"]["metadata"].get("annotations", {})
            seen = deployment.get("status", {}).get("observedGeneration")
            ours = template.get(SOURCE_URI) == uri and template.get(REGISTRY_ANNOTATION) == "7"
            if ours and seen == deployment["metadata"]["generation"]:
                return deployment
        return None

    return poll(f"an observed predictor Deployment for {uri}", observed, timeout_s)
