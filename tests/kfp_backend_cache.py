"""A stand-in for the KFP backend's execution cache, run over a compiled pipeline spec.

What it models, from kubeflow/pipelines at 2.15.0 (2.5.0 has the same rule:
cacheutils/cache.go:52-105, driver/driver.go:1315):
- the cache key of a container task is its input artifact *names*, input parameter values,
  output artifact and parameter specs, image and command+args, hashed
  (backend/src/v2/cacheutils/cache.go:173-225 GenerateCacheKey, :151-170 GenerateFingerPrint);
- an input artifact's name is the upstream execution's output artifact: a re-executed producer
  writes new artifacts, so every consumer's key changes; a cache hit reuses the cached
  execution's outputs, so its consumers' keys stay (driver/cache.go:104-120);
- a task is served from the cache only when its caching option is on
  (`opts.Task.GetCachingOptions().GetEnableCache()`, driver/cache.go:120, k8s.go:817);
- dsl.If runs its sub-DAG when its condition holds; ParallelFor runs its sub-DAG per item and its
  DAG outputs collect every iteration's artifact (driver/resolve.go:625-641).
What a task computes is the test's `behaviour` (its output parameters), not modelled here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable

CONDITION_VALUE = re.compile(r"inputs\.parameter_values\['([^']+)'\]")
_serial = itertools.count()


class BackendCache:
    def __init__(self, spec: dict, behaviour: Callable[[str, dict], dict]):
        self.spec, self.behaviour = spec, behaviour
        self.entries: dict[str, dict] = {}

    def run(self, arguments: dict) -> dict[str, str]:
        """One pipeline run; returns task name -> "done" | "cached" (tasks never reached are
        absent). The cache persists across runs of this object."""
        root = self.spec["root"]
        values = {
            name: arguments.get(name, definition.get("defaultValue"))
            for name, definition in root["inputDefinitions"]["parameters"].items()
        }
        self.status: dict[str, str] = {}
        self._dag(root["dag"], values)
        return self.status

    def _dag(self, dag: dict, inputs: dict) -> dict:
        outputs: dict[str, dict] = {}
        pending = dict(dag["tasks"])
        while pending:
            ready = [
                n
                for n, t in pending.items()
                if all(d in outputs for d in t.get("dependentTasks", []))
            ]
            for name in sorted(ready):
                outputs[name] = self._task(name, pending.pop(name), inputs, outputs)
        return outputs

    def _inputs(self, task: dict, scope: dict, outputs: dict) -> tuple[dict, dict]:
        params, artifacts = {}, {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                params[key] = scope[source["componentInputParameter"]]
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                params[key] = outputs[ref["producerTask"]][ref["outputParameterKey"]]
            else:
                params[key] = source["runtimeValue"]["constant"]
        # A constant that is itself a placeholder ({{$.inputs.parameters[...]}}: the SDK's copy
        # of a resource field's channel) is passed through unresolved by the driver, so the cache
        # key holds the placeholder, not the value (2.5.0 driver.go:1638-1660; 2.15.0
        # resolve.go:419-432).
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "componentInputArtifact" in source:
                artifacts[key] = scope[source["componentInputArtifact"]]
            else:
                ref = source["taskOutputArtifact"]
                artifacts[key] = outputs[ref["producerTask"]][ref["outputArtifactKey"]]
        return params, artifacts

    def _task(self, name: str, task: dict, scope: dict, outputs: dict) -> dict:
        params, artifacts = self._inputs(task, scope, outputs)
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition and not holds(condition, params):
            return {}
        component = self.spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            return self._sub_dag(task, component, {**params, **artifacts})
        return self._container(name, task, component, params, artifacts)

    def _sub_dag(self, task: dict, component: dict, scope: dict) -> dict:
        iterator = task.get("parameterIterator")
        items = json.loads(iterator["items"]["raw"]) if iterator else [None]
        collected: dict[str, list] = {}
        for item in items:
            inner = {**scope, iterator["itemInput"]: item} if iterator else scope
            produced = self._dag(component["dag"], inner)
            for key, out in component["dag"].get("outputs", {}).get("artifacts", {}).items():
                for selector in out["artifactSelectors"]:
                    value = produced[selector["producerSubtask"]][selector["outputArtifactKey"]]
                    collected.setdefault(key, []).append(value)
        return {k: v if iterator else v[0] for k, v in collected.items()}

    def _container(self, name, task, component, params, artifacts) -> dict:
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        container = executor["container"]
        declared = component.get("outputDefinitions", {})
        key = {  # GenerateCacheKey's fields
            "inputArtifactNames": {
                k: v if isinstance(v, list) else [v] for k, v in artifacts.items()
            },
            "inputParameterValues": params,
            "outputArtifactsSpec": {
                k: v["artifactType"] for k, v in declared.get("artifacts", {}).items()
            },
            "outputParametersSpec": {
                k: v["parameterType"] for k, v in declared.get("parameters", {}).items()
            },
            "containerSpec": {
                "image": container["image"],
                "cmdArgs": [*container.get("command", []), *container.get("args", [])],
            },
        }
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        cacheable = task.get("cachingOptions", {}).get("enableCache", False)
        if cacheable and fingerprint in self.entries:
            self.status[name] = "cached"
            return self.entries[fingerprint]
        produced = {k: f"{name}/artifact-{next(_serial)}" for k in key["outputArtifactsSpec"]}
        produced |= self.behaviour(name, params)
        self.entries[fingerprint] = produced
        self.status[name] = "done"
        return produced


def holds(condition: str, params: dict) -> bool:
    """A dsl.If condition (CEL, as the driver evaluates it) of the simple forms the SDK writes:
    `inputs.parameter_values['a'] == true`, `... >= inputs.parameter_values['b']`."""
    expression = CONDITION_VALUE.sub(lambda m: repr(params[m[1]]), condition)
    expression = expression.replace("true", "True").replace("false", "False")
    return bool(eval(expression, {"__builtins__": {}}))  # noqa: S307 (our own spec's condition)
