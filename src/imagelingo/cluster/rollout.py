"""Writing the InferenceService and waiting for it: replace with what is ours (PUT), retried
when only others' fields moved; "changed" judged from the API server's answer to our write;
Ready as the served KServe release defines it (cluster/kserve.py)."""

from __future__ import annotations

import time

from imagelingo.cluster.isvc import DeployConfig
from imagelingo.cluster.kserve import (
    knative_rolled_out,
    mode_of,
    pods_not_serving,
    standard_rolled_out,
)
from imagelingo.cluster.kube_api import Conflict, KubeApi
from imagelingo.errors import ImageLingoError


def wait_ready(api: KubeApi, config: DeployConfig, before: dict | None, written: dict) -> str:
    """Poll until our write serves; return the URL. `before` is the object our write replaced
    (None: created), `written` the API server's answer to the write (apply): what changed and
    where the rollout starts are read from it (changed_by_write). Not status.observedGeneration
    against the InferenceService's generation: KServe copies it from the child (cluster/
    kserve.py). Knative mode: after a change, the child's observedGeneration moves past the one
    in our write's answer, and its latest created revision is the latest ready one; Standard
    mode: every predictor Deployment carries the update and finished its rollout."""
    deadline, pause = time.monotonic() + config.timeout_s, 0.05
    changed = changed_by_write(before, written)
    at_write = None if before is None else written.get("status", {})
    while True:
        isvc = api.get_isvc(config.namespace, config.name) or {}
        status = isvc.get("status", {})
        if mode_of(written) == "Knative":
            done, why = knative_rolled_out(status, at_write, changed)
        else:
            deployments = api.predictor_deployments(config.namespace, config.name)
            done, why = standard_rolled_out(deployments, written)
        if done:
            return status.get("url", "")
        if time.monotonic() > deadline:
            if mode_of(written) != "Knative":
                why = _with_pod_reasons(api, config, why)
            raise ImageLingoError(
                f"InferenceService {config.namespace}/{config.name} not rolled out after "
                f"{config.timeout_s} s: {why}"
            )
        time.sleep(pause)
        pause = min(5, pause * 2)  # a quick answer when the cluster is quick, then every 5 s


def _with_pod_reasons(api: KubeApi, config: DeployConfig, why: str) -> str:
    """`why`, and what the predictor's Pods and Events say; `why` alone when they cannot be
    read (the timeout's message must not turn into an error about listing pods)."""
    try:
        pods = api.predictor_pods(config.namespace, config.name)
        said = pods_not_serving(pods, api.pod_warnings(config.namespace))
    except (ImageLingoError, KeyError, TypeError, AttributeError):
        return why
    return f"{why}; {said}" if said else why


def changed_by_write(before: dict | None, written: dict) -> bool:
    """Whether our write changed what KServe rolls out, as the API server says. Not our spec
    against the live one: KServe's defaulting webhook writes fields we never render
    (spec.predictor.model.name "" always, automountServiceAccountToken when configured), so
    they never match. The API server bumps metadata.generation only when the stored spec
    changes (after defaulting); our imagelingo.io/ annotations, which do not bump it, count too
    (KServe copies them to the pods: cluster/kserve.py)."""
    if before is None:
        return True
    old, new = before["metadata"], written["metadata"]
    return old.get("generation") != new.get("generation") or _ours(
        old.get("annotations", {})
    ) != _ours(new.get("annotations", {}))


def _ours(annotations: dict) -> dict:
    return {k: v for k, v in annotations.items() if k.startswith("imagelingo.io/")}


def apply(
    api: KubeApi, desired: dict, current: dict | None, attempts: int = 5
) -> tuple[str, dict | None, dict]:
    """Create, or replace (PUT) the spec with exactly `desired`'s. The metadata others own
    survives: KServe's finalizer, owner references, foreign labels and annotations (those of
    imagelingo.io/ are ours: one we no longer render is removed). Returns the action, the object
    the write replaced and the API server's answer: the object as stored, after admission
    (what wait_ready starts from).

    `current` was read before the upload; KServe's controller writes the object's status and
    finalizer meanwhile, and each write is a new resourceVersion, so the PUT gets 409 Conflict
    (seen on the box: box/NOTES-kserve.md). Then the object is read again and the PUT repeated,
    as long as only others' fields moved: a spec or imagelingo.io/ annotation that changed means
    someone else deployed, and `desired` (computed from `current`) would undo it."""
    if current is None:
        return "created", None, api.create_isvc(desired)
    meta = current["metadata"]
    for _ in range(attempts):
        try:
            return "replaced", current, api.replace_isvc(replacement(desired, current))
        except Conflict:
            fresh = api.get_isvc(meta["namespace"], meta["name"])
            if fresh is None or not changed_by_others_only(current, fresh):
                raise ImageLingoError(
                    f"InferenceService {meta['namespace']}/{meta['name']} was changed by someone "
                    "else while deploy ran (its spec or imagelingo.io/ annotations moved): "
                    "nothing was written; look at it and run deploy again"
                ) from None
            current = fresh
    raise ImageLingoError(
        f"InferenceService {meta['namespace']}/{meta['name']}: still 409 Conflict after "
        f"{attempts} writes (something rewrites it continuously)"
    )


def changed_by_others_only(read: dict, fresh: dict) -> bool:
    """Whether `fresh` differs from `read` only in what others own (status, finalizers...)."""
    return read.get("spec") == fresh.get("spec") and _ours(
        read["metadata"].get("annotations", {})
    ) == _ours(fresh["metadata"].get("annotations", {}))


def replacement(desired: dict, current: dict) -> dict:
    live, meta = current["metadata"], dict(desired["metadata"])
    meta["labels"] = {**live.get("labels", {}), **meta.get("labels", {})}
    kept = {
        k: v for k, v in live.get("annotations", {}).items() if not k.startswith("imagelingo.io/")
    }
    meta["annotations"] = {**kept, **meta.get("annotations", {})}
    for key in ("finalizers", "ownerReferences"):
        if key in live:
            meta[key] = live[key]
    meta["resourceVersion"] = live["resourceVersion"]  # a conflict (409) if it changed meanwhile
    return {**desired, "metadata": meta}
