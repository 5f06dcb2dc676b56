"""Why a Standard-mode rollout does not finish, read from the predictor's Pods as the scheduler and
the kubelet wrote them (cluster/kserve.py pods_not_serving). The fixtures are Pods the box's real
kube-scheduler and kubelet wrote (tests/fixtures/box/, `kubectl get pod -o json`)."""

import json
from pathlib import Path

from imagelingo.cluster.kserve import pods_not_serving

FIXTURES = Path(__file__).parent / "fixtures" / "box"


def pod(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_an_unschedulable_pod_is_named_with_the_schedulers_reason():
    said = pods_not_serving([pod("pod-unschedulable.json")])
    assert said.startswith("Pod imagelingo-predictor-ff49576d8-kwtp8 not scheduled: ")
    assert "1 Insufficient cpu" in said


def test_pods_that_serve_or_go_away_say_nothing():
    serving = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {"name": "kserve-container", "ready": True, "state": {"running": {}}}
            ]
        },
    }
    leaving = pod("pod-unschedulable.json")
    leaving["metadata"]["deletionTimestamp"] = "2026-12-06T20:00:00Z"
    assert pods_not_serving([serving, leaving]) == ""


def test_a_pod_whose_probe_fails_is_named_with_the_kubelets_last_warning():
    """The broken model of the box's e2e: TorchServe runs, its worker never loads the model, the
    readiness probe fails; the Events are the kubelet's (the namespace's Warnings, other Pods'
    and other kinds' included, as deploy lists them)."""
    running = pod("pod-running-not-ready.json")
    name = running["metadata"]["name"]
    warnings = pod("warnings-running-not-ready.json")["items"]
    other = {**warnings[0], "involvedObject": {"kind": "Pod", "name": "another-pod"}}
    said = pods_not_serving(
        [running], [*warnings, {**other, "lastTimestamp": "2099-01-01T00:00:00Z"}]
    )
    assert said == (
        f"Pod {name} container kserve-container running, not ready (its readiness probe fails); "
        f"Pod {name} last event Unhealthy: Readiness probe failed: not ready: model imagelingo "
        "workers ['UNLOADING']"
    )
