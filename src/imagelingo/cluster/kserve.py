"""What differs between the KServe releases people run, and what "rolled out" means on each.

Kubeflow 1.10.2 ships KServe 0.15.0, Kubeflow 1.11.0 KServe 0.15.2, a standalone install today
0.20.0 (../shared/cluster-reference/platforms.md). Paths below are under ../shared/cluster-
reference/ unless they say "upstream" (kserve/kserve read at that tag).

- Mode names. 0.15 knows only `Serverless` / `RawDeployment` (kserve-controller/v0.15.2/pkg/
  constants/constants.go:421-427) and silently falls back to the configmap default (Serverless on
  Kubeflow) for any other value (upstream v0.15.2 pkg/controller/v1beta1/inferenceservice/utils/
  utils.go:176-191): `Standard` would run as Knative. `Knative` / `Standard` arrive in 0.16; from
  0.16 to 0.20 the old names stay accepted as aliases (upstream v0.16.0 utils.go:229-235, v0.20.0
  utils.go:232-238, and the v0.20.0 webhook rewrites them: README FACT 11). So the old names are
  what every release understands, the new ones what 0.16+ writes back.
- `spec.canary[]` and `spec.predictor.name` (the Standard-mode canary) exist only in the 0.20
  CRD; 0.15-0.19 have no canary in RawDeployment/Standard mode (canaryTrafficPercent is read by
  the Knative reconciler only: FACT 11).
- Readiness. KServe copies `status.observedGeneration` from the child, not from the
  InferenceService: the Knative Service's (upstream v0.15.2 pkg/apis/serving/v1beta1/
  inference_service_status.go:510, v0.20.0 :635) or the first Deployment's (v0.15.2 :354, v0.20.0
  :456). The InferenceService's annotations go to the child's pod template (v0.15.2 components/
  predictor.go:99-101,444-465; knative/ksvc_reconciler.go:85,160-166; deployment/
  deployment_reconciler.go:139-155), so an annotation-only update moves the child's generation
  and not the InferenceService's. What KServe does set: per component, `latestCreatedRevision`
  and `latestReadyRevision` from the Knative Service (inference_service_status.go:450,483-485) and
  its Ready condition (:486-496). In RawDeployment/Standard mode Ready is the Deployment's
  `Available` condition (:346-352), true while old pods still serve mid-rollout: there the
  Deployment's own rollout is what to wait on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagelingo.errors import ImageLingoError

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KSERVE_VERSIONS = ("auto", "0.15", "0.20")  # what params.yaml/--kserve-version document
# auto without a readable CRD: the names and fields every release from 0.15 on accepts
PORTABLE = "0.15"
ISVC_CRD = "inferenceservices.serving.kserve.io"
LEGACY_NAMES = {"Knative": "Serverless", "Standard": "RawDeployment"}
ALIASES = {"Serverless": "Knative", "RawDeployment": "Standard"}
# the predictor's storageUri, as KServe annotates its pods (v0.15.2 constants.go:116-117)
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


@dataclass(frozen=True)
class KServe:
    """One KServe release's API, as far as deploy depends on it."""

    version: tuple[int, int]

    @classmethod
    def parse(cls, text: str) -> KServe:
        match = re.fullmatch(r"v?0\.(\d+)(?:\.\d+)?", str(text).strip())
        if not match or int(match.group(1)) < 15:
            raise ImageLingoError(
                f"kserve_version {text!r}: expected auto or a KServe release from 0.15 on "
                f"(e.g. 0.15.2, 0.20.0)"
            )
        return cls((0, int(match.group(1))))

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def new_mode_names(self) -> bool:
        return self.version >= (0, 16)

    @property
    def standard_canary(self) -> bool:
        """spec.canary[] / spec.predictor.name: the 0.20 CRD only."""
        return self.version >= (0, 20)

    def mode_value(self, mode: str) -> str:
        """The deploymentMode annotation value this release runs as `mode` (Knative/Standard)."""
        return mode if self.new_mode_names else LEGACY_NAMES[mode]


def mode_of(isvc: dict) -> str:
    """Knative or Standard, whichever name the live object carries (no annotation: Knative, the
    default of KServe's shipped config and of Kubeflow's)."""
    value = isvc.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION, "Knative")
    return ALIASES.get(value, value)


def version_from_crd(crd: dict) -> KServe:
    """The release family the served InferenceService CRD belongs to: spec.canary appears in
    0.20; without it, 0.15's API (0.16-0.19 accept all of it: see the module docstring)."""
    for served in crd.get("spec", {}).get("versions", []):
        if served.get("name") == "v1beta1" and served.get("served"):
            spec = served["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            return KServe((0, 20)) if "canary" in spec else KServe((0, 15))
    raise ImageLingoError(f"CRD {ISVC_CRD} serves no v1beta1: not a KServe this deploy knows")


# --- readiness ---------------------------------------------------------------------------------


def _ready(status: dict) -> dict:
    found = [c for c in status.get("conditions", []) if c.get("type") == "Ready"]
    return found[0] if found else {}


def knative_rolled_out(status: dict, at_write: dict | None, changed: bool) -> tuple[bool, str]:
    """(done, why not) for an InferenceService in Knative mode, after our write.

    `at_write` is the status in the API server's answer to our write (None: we created it), not
    one read before the upload, which a rollout under way since would move past. A write that
    `changed` anything has reached the Knative Service once the child's generation that KServe
    copies moved past that one; then the predictor's latest created revision must be its latest
    ready one and the InferenceService Ready (no Ready condition, as KServe 0.15.0 until Knative
    reports a URL: not ready)."""
    ready = _ready(status)
    predictor = status.get("components", {}).get("predictor", {})
    created, latest_ready = (
        predictor.get("latestCreatedRevision"),
        predictor.get("latestReadyRevision"),
    )
    moved = status.get("observedGeneration", 0) > (at_write or {}).get("observedGeneration", 0)
    if changed and at_write is not None and not moved:
        return False, "KServe has not yet passed the update to the Knative Service"
    if not created:
        return False, "no revision created yet"
    if created != latest_ready:
        return False, f"revision {created} not ready yet (latest ready: {latest_ready or 'none'})"
    if ready.get("status") != "True":
        return False, ready.get("message") or ready.get("reason") or "no Ready condition"
    return True, ""


def standard_rolled_out(deployments: list[dict], desired: dict) -> tuple[bool, str]:
    """(done, why not) for an InferenceService in RawDeployment/Standard mode, after an update:
    one predictor Deployment per storageUri the spec names (the stable predictor, and on KServe
    0.20 each spec.canary[] one), none for another, each with the InferenceService's
    imagelingo.io/ annotations in its pod template and its rollout complete. KServe writes the
    storageUri into the pod template as SOURCE_URI (v0.15.2 components/predictor.go:259-264,
    copied with the other annotations: :444-465, deployment/deployment_reconciler.go:139-155)."""
    spec = desired["spec"]
    wanted = {spec["predictor"]["model"]["storageUri"]}
    wanted |= {c["predictor"]["model"]["storageUri"] for c in spec.get("canary", [])}
    ours = {
        k: v
        for k, v in desired["metadata"]["annotations"].items()
        if k.startswith("imagelingo.io/")
    }
    found = {}
    for deployment in deployments:
        template = deployment["spec"]["template"]["metadata"].get("annotations", {})
        found[template.get(SOURCE_URI, "")] = deployment
    if set(found) != wanted:
        return False, (
            f"KServe has not yet reconciled the update (predictor Deployments serve "
            f"{sorted(found) or 'nothing'}, the spec names {sorted(wanted)})"
        )
    for deployment in found.values():
        done, why = deployment_rolled_out(deployment, ours)
        if not done:
            return False, why
    return True, ""


def deployment_rolled_out(deployment: dict, annotations: dict) -> tuple[bool, str]:
    """(done, why not) for one predictor Deployment (RawDeployment/Standard mode): it carries the
    InferenceService's `annotations` in its pod template (KServe copied the update), and the
    rollout is complete as `kubectl rollout status` defines it (kubernetes/kubectl
    pkg/polymorphichelpers/rollout_status.go, DeploymentStatusViewer.Status): the controller saw
    the generation, every replica is updated, no old replica is left, all updated are available."""
    name = deployment["metadata"]["name"]
    template = deployment["spec"]["template"]["metadata"].get("annotations", {})
    stale = {k for k, v in annotations.items() if template.get(k) != v}
    if stale:
        return False, f"Deployment {name}: KServe has not yet copied {', '.join(sorted(stale))}"
    spec, status = deployment["spec"], deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if deployment["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False, f"Deployment {name}: update not observed yet"
    for condition in status.get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return False, f"Deployment {name}: exceeded its progress deadline"
    if updated < wanted:
        return False, f"Deployment {name}: {updated} of {wanted} replicas updated"
    if status.get("replicas", 0) > updated:
        return False, f"Deployment {name}: {status['replicas'] - updated} old replicas left"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return False, f"Deployment {name}: {available} of {updated} updated replicas available"
    return True, ""


def pods_not_serving(pods: list[dict], warnings: list[dict] = ()) -> str:
    """Why the predictor's Pods do not serve, as the kubelet and the scheduler wrote it into
    their status ("" when nothing is wrong that they say): a Pod the scheduler could not place
    (PodScheduled False: "Insufficient cpu"), a container waiting for a reason other than its
    turn (ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError), an init container
    still running or failed, a container restarted after it exited, one running but not ready,
    a Pod still Pending with nothing in its status. Seen on the box: a rollout on a full node
    waited its whole timeout on "1 old replicas left" with the new Pod unschedulable. Each Pod
    named gets its latest Warning event (`warnings`, core/v1 Events: where the kubelet says why
    a probe failed, a volume did not mount, a sandbox did not start)."""
    found, latest = [], {}
    for event in sorted(warnings, key=_event_time):
        said = " ".join(f"{event.get('reason', '')}: {event.get('message', '')}".split())
        latest[event.get("involvedObject", {}).get("name")] = said[:300]
    for pod in pods:
        name, status = pod["metadata"]["name"], pod.get("status", {})
        if pod["metadata"].get("deletionTimestamp"):
            continue
        before = len(found)
        for condition in status.get("conditions", []):
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                found.append(f"Pod {name} not scheduled: {condition.get('message', '')}".strip())
        init = status.get("initContainerStatuses", [])
        for container in init + status.get("containerStatuses", []):
            state, last = container.get("state", {}), container.get("lastState", {})
            waiting = state.get("waiting", {})
            ended = state.get("terminated") or last.get("terminated") or {}
            what = f"Pod {name} container {container['name']}"
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                found.append(f"{what} {waiting['reason']}: {waiting.get('message', '')}".strip())
            if "running" in state and container in init:  # ready only once it exited 0
                found.append(f"{what} still running (init container)")
            elif "running" in state and not container.get("ready", True):
                found.append(f"{what} running, not ready (its readiness probe fails)")
            if ended.get("exitCode"):
                found.append(
                    f"{what} exited {ended['exitCode']} ({ended.get('reason', '')}), "
                    f"{container.get('restartCount', 0)} restarts"
                )
        if len(found) == before and status.get("phase") == "Pending" and name in latest:
            found.append(f"Pod {name} Pending")
    named = {line.split()[1] for line in found}
    found += [f"Pod {name} last event {latest[name]}" for name in sorted(named) if name in latest]
    return "; ".join(dict.fromkeys(found))


def _event_time(event: dict) -> str:
    """When an Event last happened: a repeated events.k8s.io event (the scheduler's) keeps its
    first eventTime and moves series.lastObservedTime; core/v1 ones move lastTimestamp."""
    series = event.get("series") or {}
    return (
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or ""
    )
