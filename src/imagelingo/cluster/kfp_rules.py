"""What a KFP backend does with a compiled pipeline, encoded once, each rule citing the backend's
source at its tag (../shared/cluster-reference/README.md, "Kubeflow releases", R2-R4; files under
kubeflow/pipelines at 2.5.0 and 2.15.0).

`problems(spec, platform, target)` lists what `target`'s backend would not run as written (empty:
it runs it); `imagelingo compile` refuses to write a spec with problems. `fit_platform` drops the
fields an older backend's proto lacks where dropping them keeps the meaning, and refuses where it
would not. `driver_limits` renders the resource limits the driver writes for a run's arguments.
Field-level strictness (every field known to the target's protos) is checked by the tests, which
compile those protos (tests/kfp_protos.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from imagelingo.cluster.platforms import Target, _version
from imagelingo.errors import ImageLingoError

PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
CHANNEL_PREFIX = "pipelinechannel--"


def tasks(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(dag, task name, task) for every task of the root DAG and of every sub-DAG component."""
    yield from (("root", n, t) for n, t in spec["root"]["dag"]["tasks"].items())
    for name, component in spec.get("components", {}).items():
        yield from ((name, n, t) for n, t in component.get("dag", {}).get("tasks", {}).items())


def _loops(spec: dict) -> set[str]:
    """Tasks that are a ParallelFor (an iterator over their component's DAG)."""
    return {
        name
        for _, name, task in tasks(spec)
        if "parameterIterator" in task or "artifactIterator" in task
    }


def fan_in_problems(spec: dict, target: Target) -> list[str]:
    """Before 2.14.0 the driver skips ParallelFor DAGs when it gathers a task's upstream outputs
    ("Found a ParallelFor task ... Skipping it", 2.5.0 backend/src/v2/driver/driver.go:1764-1772):
    a consumer of dsl.Collected fails in its driver (driver.go:1908-1911). 2.14.0 resolves it
    (PR #11725; 2.15.0 driver/resolve.go:78-83, :625-641)."""
    if target.fan_in:
        return []
    loops, found = _loops(spec), []
    for dag, name, task in tasks(spec):
        for kind in ("artifacts", "parameters"):
            for key, value in task.get("inputs", {}).get(kind, {}).items():
                producer = (
                    value.get("taskOutputArtifact") or value.get("taskOutputParameter") or {}
                ).get("producerTask")
                if producer in loops:
                    found.append(
                        f"{dag}/{name}: input {key} collects the outputs of ParallelFor "
                        f"{producer}; KFP {target.kfp_backend}'s driver cannot fan in (from 2.14.0)"
                    )
    return found


def nested_retry_problems(spec: dict, target: Target) -> list[str]:
    """Before 2.14.0 the Argo compiler looks a task's retry policy up among the root DAG's tasks
    only (2.5.0 backend/src/v2/compiler/argocompiler/container.go:508-518, used at :280-284 and
    :329): a task in dsl.If or ParallelFor gets no retryStrategy and no error. 2.14.0 reads it
    from the task at any depth (PR #11908; 2.15.0 container.go:345-358, 575-591)."""
    if target.nested_retry:
        return []
    return [
        f"{dag}/{name}: retryPolicy inside a sub-DAG is dropped by KFP {target.kfp_backend} "
        "(honoured from 2.14.0)"
        for dag, name, task in tasks(spec)
        if dag != "root" and "retryPolicy" in task
    ]


def accelerator_inputs(spec: dict) -> Iterator[tuple[str, str, str, str]]:
    """(executor label, field, parameter name, parameter type) for each accelerator placeholder:
    the task feeds the placeholder's input from its DAG's input parameter (componentInputParameter),
    whose type the DAG's inputDefinitions declare (the root's are the pipeline parameters)."""
    components = spec.get("components", {})
    for dag, _, task in tasks(spec):
        label = components[task["componentRef"]["name"]].get("executorLabel")
        if not label:
            continue
        container = spec["deploymentSpec"]["executors"][label].get("container", {})
        accelerator = container.get("resources", {}).get("accelerator", {})
        scope = spec["root"] if dag == "root" else components[dag]
        declared = scope.get("inputDefinitions", {}).get("parameters", {})
        for field in ("resourceType", "resourceCount"):
            match = PLACEHOLDER.fullmatch(str(accelerator.get(field, "")))
            if match:
                feed = task["inputs"]["parameters"][match[1]].get("componentInputParameter", "")
                yield label, field, feed, declared.get(feed, {}).get("parameterType", "")


def accelerator_problems(spec: dict, target: Target) -> list[str]:
    """The driver resolves accelerator type and count placeholders with GetStringValue (2.5.0
    driver.go:557-589 and driver/util.go:69-82; 2.15.0 driver.go:361-393 and resolve.go:798-811,
    identical): a parameter that is not a STRING resolves to "" and the GPU limit is silently
    not written."""
    return [
        f"{label}: accelerator {field} comes from parameter {name} of type {kind}; KFP "
        f"{target.kfp_backend}'s driver resolves it only from a STRING"
        for label, field, name, kind in accelerator_inputs(spec)
        if kind != "STRING"
    ]


def placeholder_input_problems(spec: dict, target: Target) -> list[str]:
    """A component input fed by a constant that is itself an input placeholder. The SDK writes
    one when a task input shares its name with a ResourceSpec field set from a pipeline
    parameter (cpu_limit, accelerator_count, ...): it copies the resource's channel into the
    task's inputs under that name (kfp 2.17.3 compiler/pipeline_spec_builder.py:137-141),
    replacing the input. The driver passes such a constant through unresolved (2.5.0
    driver.go:1638-1660); the component reads it from the executor input's JSON, and 2.5.0's
    launcher replaces `{{$}}` and the input placeholders in one pass over a Go map, in random
    order (launcher_v2.go:363-377): in about half the runs the component gets the placeholder
    itself. 2.14.0 replaces `{{$}}` first (kubeflow/pipelines #11925; 2.15.0
    launcher_v2.go:818-842). An input the component does not declare is never read."""
    if _version(target.kfp_backend) >= (2, 14, 0):
        return []
    components = spec.get("components", {})
    found = []
    for dag, name, task in tasks(spec):
        component = components[task["componentRef"]["name"]]
        declared = component.get("inputDefinitions", {}).get("parameters", {})
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            constant = source.get("runtimeValue", {}).get("constant")
            if key in declared and PLACEHOLDER.search(str(constant)):
                found.append(
                    f"{dag}/{name}: input {key} is the constant {constant}; KFP "
                    f"{target.kfp_backend}'s launcher resolves it in about half the runs "
                    "(always from 2.14.0): rename the input so it is not a resource field's name"
                )
    return found


def problems(spec: dict, platform: dict, target: Target) -> list[str]:
    """Everything `target`'s backend would not run as written."""
    del platform  # field-level checks are the protos' (tests/kfp_protos.py)
    return [
        *fan_in_problems(spec, target),
        *nested_retry_problems(spec, target),
        *accelerator_problems(spec, target),
        *placeholder_input_problems(spec, target),
    ]


def knows_optional_env(target: Target) -> bool:
    """SecretAsEnv.optional / ConfigMapAsEnv.optional exist in 2.15.0's
    kubernetes_executor_config.proto (lines 77, 182), not in 2.5.0's."""
    return _version(target.kfp_backend) >= (2, 15, 0)


def fit_platform(platform: dict, target: Target) -> dict:
    """The Kubernetes platform spec as `target`'s driver reads it. A backend without `optional`
    treats every Secret / ConfigMap env as required, which `optional: false` says anyway: that
    field is dropped; `optional: true` cannot be expressed there and is an error."""
    if knows_optional_env(target):
        return platform
    executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    for label, config in executors.get("executors", {}).items():
        for field in ("secretAsEnv", "configMapAsEnv"):
            for entry in config.get(field, []):
                if entry.pop("optional", False):
                    raise ImageLingoError(
                        f"{label}: an optional {field} entry cannot run on KFP "
                        f"{target.kfp_backend} (its proto has no `optional`)"
                    )
    return platform


def driver_limits(spec: dict, label: str, arguments: dict[str, Any]) -> dict[str, str]:
    """The accelerator limit the driver writes for executor `label` when the run's pipeline
    `arguments` are given: each placeholder resolves to the argument as the backend stores it
    (a STRING parameter as a string value; a number as a number value, which GetStringValue reads
    as ""); the limit is set only when type and count are both non-empty (2.15.0
    driver.go:361-393; with no placeholder, the static `type` and `count`)."""
    root = spec["root"]["inputDefinitions"]["parameters"]
    container = spec["deploymentSpec"]["executors"][label]["container"]
    accelerator = container.get("resources", {}).get("accelerator", {})
    resolved = {}
    for executor, field, name, kind in accelerator_inputs(spec):
        if executor == label:
            name = name.removeprefix(CHANNEL_PREFIX)
            value = arguments.get(name, root[name].get("defaultValue"))
            resolved[field] = str(value) if kind == "STRING" else ""
    kind = resolved.get("resourceType", accelerator.get("resourceType") or accelerator.get("type"))
    count = resolved.get(
        "resourceCount", accelerator.get("resourceCount") or accelerator.get("count")
    )
    return {str(kind): str(count)} if kind and count else {}
