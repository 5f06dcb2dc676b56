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
