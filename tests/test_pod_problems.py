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


def test_an_init_container_at_work_is_not_taken_for_a_failing_probe():
    """The kubelet reports an init container ready only after it exits 0: a slow download."""
    downloading = pod("pod-running-not-ready.json")
    status = downloading["status"]
    status["initContainerStatuses"] = [
        {"name": "storage-initializer", "ready": False, "state": {"running": {}}}
    ]
    status["containerStatuses"] = [
        {
            "name": "kserve-container",
            "ready": False,
            "state": {"waiting": {"reason": "PodInitializing"}},
        }
    ]
    said = pods_not_serving([downloading])
    assert said.endswith("container storage-initializer still running (init container)")
    assert "readiness" not in said


def test_a_pending_pod_is_named_by_its_latest_warning_the_schedulers_series_included():
    """A Pod with nothing in its status but a Warning (FailedMount, a sandbox error); the
    scheduler's events.k8s.io events repeat under series.lastObservedTime, their eventTime is
    the first one; an event may lack its message."""
    pending = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    mount = warning("p", "FailedMount", 'secret "imagelingo-s3"\nnot found', "2026-12-06T20:05:00Z")
    repeated = {**warning("p", "FailedScheduling", "", ""), "lastTimestamp": None}
    repeated |= {
        "eventTime": "2026-12-06T20:00:00Z",
        "series": {"lastObservedTime": "2026-12-06T20:09:00Z"},
    }
    del repeated["message"]
    assert pods_not_serving([pending], [mount, repeated]) == (
        "Pod p Pending; Pod p last event FailedScheduling:"
    )
    assert pods_not_serving([pending], [mount]) == (
        'Pod p Pending; Pod p last event FailedMount: secret "imagelingo-s3" not found'
    )


def test_a_timeout_keeps_its_message_when_pods_cannot_be_read():
    from imagelingo.cluster.rollout import _with_pod_reasons
    from imagelingo.errors import ImageLingoError

    class Api:
        def predictor_pods(self, namespace, name):
            raise ImageLingoError("Pods of imagelingo/imagelingo: HTTP 500 Internal Server Error")

    class Config:
        namespace = name = "imagelingo"

    assert _with_pod_reasons(Api(), Config(), "1 old replicas left") == "1 old replicas left"


def warning(pod_name: str, reason: str, message: str, at: str) -> dict:
    """A core/v1 Warning Event about a Pod, in the shape the API server lists them."""
    return {
        "involvedObject": {"kind": "Pod", "name": pod_name},
        "type": "Warning",
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
    }
