"""A stand-in for the KServe controller and the children it drives (a Knative Service, or the
predictor Deployments), for tests/fake_kube.py. It lags as a real one does: each read of the
InferenceService or of its Deployments returns the state as it was, then the controllers take one
step. So right after an update a client still sees the old status, as on a cluster.

What it copies from KServe (kserve/kserve, read at tag v0.15.2 unless said; the v0.20.0 lines
are the same code, README FACT 11 and R5 for the version differences):

- the isvc's annotations (less ServiceAnnotationDisallowedList, constants.go:397-402) and labels
  go to the child's pod template, with serving.kserve.io/inferenceservice and component labels
  (components/predictor.go:99-101,444-465) and the storageUri as an annotation (:259-264);
  Knative: template = those + the predictor, traffic from canaryTrafficPercent
  (knative/ksvc_reconciler.go:85-166);
- status: PropagateStatus (apis/serving/v1beta1/inference_service_status.go:442-511):
  observedGeneration is the Knative Service's (:510), latestCreated/ReadyRevision from it
  (:450,483-485), Ready from its Ready (:486-496); RawDeployment: PropagateRawStatus (:334-355):
  Ready is the first Deployment's Available, observedGeneration the Deployment's (:354);
- the deployment mode: 0.15 accepts only Serverless/RawDeployment and takes the configmap
  default (Serverless on Kubeflow) for anything else (upstream utils/utils.go:176-191, status
  .deploymentMode); 0.16+ also Knative/Standard, and 0.20's webhook rewrites the old names
  (inference_service_defaults.go:164-176 at v0.20.0).

Knative: a template change makes a new revision; Knative's controller then sets the Service's
observedGeneration and latestCreatedRevisionName, and one step later the revision is ready and
takes the traffic. Deployments: a template change bumps the generation; then the deployment
controller observes it with the new replicas not yet available (old ones still serving); a step
later the rollout completes.
"""

from __future__ import annotations

import copy

DISALLOWED_ANNOTATIONS = {
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
}
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
MODE = "serving.kserve.io/deploymentMode"


def effective_mode(annotation: str | None, version: str) -> str:
    """Knative or Standard: what KServe `version` runs for this annotation value."""
    new = tuple(int(p) for p in version.split(".")[:2]) >= (0, 16)
    known = {"Serverless": "Knative", "RawDeployment": "Standard"}
    if new:
        known |= {"Knative": "Knative", "Standard": "Standard"}
    return known.get(annotation or "", "Knative")  # Kubeflow's configmap default: Serverless


def webhook(isvc: dict, version: str) -> None:
    """KServe's mutating webhook. Every release writes `model.name: ""` into each predictor: the
    defaulter answers with a JSON patch from json.Marshal of the defaulted object
    (controller-runtime v0.19.1 pkg/webhook/admission/defaulter_custom.go:89-93), and the model
    embeds corev1.Container inline (kserve v0.15.2 pkg/apis/serving/v1beta1/predictor.go:101),
    whose `json:"name"` has no omitempty (k8s.io/api v0.32.3 core/v1/types.go:2758); seen on
    the box (box/NOTES-kserve.md). 0.20: old mode names become the new ones."""
    spec = isvc.get("spec", {})
    for pred in [spec.get("predictor", {})] + [c["predictor"] for c in spec.get("canary", [])]:
        if "model" in pred:
            pred["model"].setdefault("name", "")
    if tuple(int(p) for p in version.split(".")[:2]) < (0, 20):
        return
    annotations = isvc["metadata"].get("annotations", {})
    rename = {"Serverless": "Knative", "RawDeployment": "Standard"}
    if annotations.get(MODE) in rename:
        annotations[MODE] = rename[annotations[MODE]]


def _pod_meta(isvc: dict, uri: str) -> dict:
    meta = isvc["metadata"]
    annotations = {
        k: v for k, v in meta.get("annotations", {}).items() if k not in DISALLOWED_ANNOTATIONS
    }
    labels = {
        **meta.get("labels", {}),
        "serving.kserve.io/inferenceservice": meta["name"],
        "component": "predictor",
    }
    return {"labels": labels, "annotations": {**annotations, SOURCE_URI: uri}}


class KServeController:
    def __init__(self, version: str):
        self.version = version
        self.children: dict[str, dict] = {}  # isvc name -> Knative Service / {uri: Deployment}
        self.seen: list[dict] = []  # (generation, spec) of each isvc generation reconciled
        self.deployments: dict[str, dict[str, dict]] = {}

    def step(self, isvc: dict) -> None:
        """One reconcile of the InferenceService and one of its children's controllers."""
        meta = isvc["metadata"]
        if not self.seen or self.seen[-1].get("uid") != (meta["name"], meta["generation"]):
            self.seen.append(
                {
                    "generation": meta["generation"],
                    "spec": copy.deepcopy(isvc["spec"]),
                    "uid": (meta["name"], meta["generation"]),
                }
            )
        status = isvc.setdefault("status", {})
        mode = status.setdefault(
            "deploymentMode", effective_mode(meta["annotations"].get(MODE), self.version)
        )
        if mode == "Knative":
            self._knative(isvc, status)
        else:
            self._raw(isvc, status)
        status["url"] = f"http://{meta['name']}.{meta['namespace']}.example.com"

    # --- Knative mode ---------------------------------------------------------------------
    def _knative(self, isvc: dict, status: dict) -> None:
        predictor = isvc["spec"]["predictor"]
        template = {
            "metadata": _pod_meta(isvc, predictor["model"]["storageUri"]),
            "spec": {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"},
        }
        traffic = predictor.get("canaryTrafficPercent")
        ksvc = self.children.setdefault(
            isvc["metadata"]["name"],
            {"generation": 0, "observed": 0, "template": None, "traffic": None, "revisions": []},
        )
        # Knative's controller first: the previous KServe update becomes status
        if ksvc["observed"] < ksvc["generation"]:
            ksvc["observed"] = ksvc["generation"]
        elif ksvc["revisions"] and not ksvc["revisions"][-1]["ready"]:
            ksvc["revisions"][-1]["ready"] = True
        # then KServe's: the child takes the InferenceService's spec
        if ksvc["template"] != template or ksvc["traffic"] != traffic:
            if ksvc["template"] != template:
                name = f"{isvc['metadata']['name']}-predictor-{len(ksvc['revisions']) + 1:05d}"
                ksvc["pending"] = {"name": name, "ready": False, "template": template}
            ksvc["template"], ksvc["traffic"] = template, traffic
            ksvc["generation"] += 1
        if ksvc["observed"] == ksvc["generation"] and ksvc.get("pending"):
            ksvc["revisions"].append(ksvc.pop("pending"))
        created = ksvc["revisions"][-1]["name"] if ksvc["revisions"] else ""
        ready = [r["name"] for r in ksvc["revisions"] if r["ready"]]
        all_ready = bool(ready) and ready[-1] == created and ksvc["observed"] == ksvc["generation"]
        status["observedGeneration"] = ksvc["observed"]
        status["components"] = {
            "predictor": {
                "latestCreatedRevision": created,
                "latestReadyRevision": ready[-1] if ready else "",
            }
        }
        state = "True" if all_ready else "Unknown"
        status["conditions"] = [
            {"type": "PredictorReady", "status": state},
            {"type": "Ready", "status": state},
        ]

    # --- RawDeployment / Standard mode -----------------------------------------------------
    def _raw(self, isvc: dict, status: dict) -> None:
        meta, spec = isvc["metadata"], isvc["spec"]
        predictors = [spec["predictor"]] + [c["predictor"] for c in spec.get("canary", [])]
        mine = self.deployments.setdefault(meta["name"], {})
        # the deployment controller first: it acts on what KServe wrote before
        for deployment in mine.values():
            s = deployment["status"]
            if s["observedGeneration"] < deployment["metadata"]["generation"]:
                s.update(observedGeneration=deployment["metadata"]["generation"], updatedReplicas=1)
                s.update(replicas=2, availableReplicas=1)  # the old pod still serves
            else:
                s.update(replicas=1, updatedReplicas=1, availableReplicas=1)
        # then KServe: one Deployment per predictor, its pod template from the InferenceService
        wanted = {}
        for pred in predictors:
            uri = pred["model"]["storageUri"]
            template = {"metadata": _pod_meta(isvc, uri), "spec": copy.deepcopy(pred)}
            suffix = f"-{pred['name']}" if pred is not spec["predictor"] and "name" in pred else ""
            name = f"{meta['name']}{suffix}-predictor"
            deployment = mine.get(uri) or {
                "metadata": {"name": name, "namespace": meta["namespace"], "generation": 0},
                "spec": {"replicas": 1, "template": None},
                "status": {"observedGeneration": 0, "replicas": 0},
            }
            deployment["metadata"]["labels"] = template["metadata"]["labels"]
            if deployment["spec"]["template"] != template:
                deployment["spec"]["template"] = template
                deployment["metadata"]["generation"] += 1
            wanted[uri] = deployment
        self.deployments[meta["name"]] = wanted
        first = next(iter(wanted.values()))
        available = first["status"].get("availableReplicas", 0) >= 1
        status["observedGeneration"] = first["status"]["observedGeneration"]
        state = "True" if available else "False"
        status["conditions"] = [
            {"type": "PredictorReady", "status": state},
            {"type": "Ready", "status": state},
        ]

    def serving(self, name: str) -> list[dict]:
        """The pod templates that serve now: Knative, the latest ready revision's (the canary
        split aside); Standard, those of the Deployments with no old replica left."""
        ksvc = self.children.get(name)
        if ksvc is not None:
            ready = [r["template"] for r in ksvc["revisions"] if r["ready"]]
            return ready[-1:]
        return [
            d["spec"]["template"]
            for d in self.deployments.get(name, {}).values()
            if d["status"].get("replicas") == d["status"].get("updatedReplicas") == 1
            and d["status"]["observedGeneration"] == d["metadata"]["generation"]
        ]

    def deployment_list(self, namespace: str) -> list[dict]:
        return [
            copy.deepcopy(d)
            for mine in self.deployments.values()
            for d in mine.values()
            if d["metadata"]["namespace"] == namespace
        ]
