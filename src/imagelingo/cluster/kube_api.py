"""The few Kubernetes API calls deploy makes (kubernetes client), each failure turned into one
ImageLingoError line; a 409 Conflict is its own exception, for apply's retry."""

from __future__ import annotations

import functools
from typing import Any

from imagelingo.cluster.kserve import (
    ISVC_CRD,
)
from imagelingo.errors import ImageLingoError

# As kubectl writes: a field the CRD's schema does not know fails the write. The API server's
# default for other clients (Warn) prunes it from the stored object with only a warning header, so
# a field deploy renders wrong would vanish (shown on the box: tests/box/test_deploy_on_kserve.py).
STRICT = "Strict"


class KubeApi:
    """The few Kubernetes calls deploy makes, each failure turned into one ImageLingoError line.
    `api_client` is a kubernetes.client.ApiClient (default: kubeconfig, or in-cluster config)."""

    def __init__(self, api_client: Any = None, request_timeout: float = 15):
        import os

        from kubernetes import client, config

        if api_client is None:
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config()
                else:  # KUBECONFIG read now: the library reads it once, at import
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                raise ImageLingoError(
                    f"no Kubernetes cluster configured ({str(exc).splitlines()[0]}): "
                    f"set KUBECONFIG or run inside a pod"
                ) from exc
            configuration = client.Configuration.get_default_copy()
            configuration.retries = 1
            api_client = client.ApiClient(configuration)
        self.host = api_client.configuration.host
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout = request_timeout

    def _call(
        self,
        what: str,
        fn,
        *args,
        missing_ok: bool = False,
        forbidden_ok: bool = False,
        **query,
    ):
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **query)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status == 403 and forbidden_ok:
                return ...
            reason = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(
                exc.status, f"HTTP {exc.status} {exc.reason}"
            )
            error = Conflict if exc.status == 409 else ImageLingoError
            raise error(f"{what}: {reason}{_api_message(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise ImageLingoError(
                f"Kubernetes API {self.host} unreachable ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _dict(obj: Any) -> dict:
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(obj)

    def namespace_labels(self, namespace: str) -> dict | None:
        """The namespace's labels; None if it does not exist; ... when this account may not
        read namespaces (a namespaced Role cannot)."""
        got = self._call(
            f"namespace {namespace}",
            self.core.read_namespace,
            namespace,
            missing_ok=True,
            forbidden_ok=True,
        )
        if got is None or got is ...:
            return got
        return dict(got.metadata.labels or {})

    def isvc_crd(self) -> dict | None:
        """The served InferenceService CRD, or None when absent or not readable (it is
        cluster-scoped: the namespaced deploy Role does not grant it)."""
        import json

        got = self._call(
            f"CRD {ISVC_CRD}",
            functools.partial(
                self.extensions.read_custom_resource_definition, _preload_content=False
            ),
            ISVC_CRD,
            missing_ok=True,
            forbidden_ok=True,
        )  # the raw JSON: 1-2 MB of schema, not worth the client's model classes
        return None if got is None or got is ... else json.loads(got.data)

    def _items(self, what: str, list_call, namespace: str, tolerant: bool = False, **query):
        """A list call's items as raw JSON (the client's models would insist on fields we do not
        read); `tolerant`: [] where this account may not list them or the kind is unknown."""
        import json

        call = functools.partial(list_call, _preload_content=False, **query)
        got = self._call(what, call, namespace, missing_ok=tolerant, forbidden_ok=tolerant)
        return [] if got is None or got is ... else json.loads(got.data)["items"]

    def predictor_deployments(self, namespace: str, name: str) -> list[dict]:
        """The Deployments KServe made for the InferenceService's predictor (Standard mode),
        found by the labels it puts on them (v0.15.2 components/predictor.go:450-457)."""
        found = self._items(
            f"Deployments of {namespace}/{name}",
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=_predictor_selector(name),
        )
        wanted = {"serving.kserve.io/inferenceservice": name, "component": "predictor"}
        return [d for d in found if wanted.items() <= d["metadata"].get("labels", {}).items()]

    def predictor_pods(self, namespace: str, name: str) -> list[dict]:
        """The predictor's Pods (KServe labels them like its Deployments); [] when this account
        may not list pods (they only explain a rollout that does not finish)."""
        return self._items(
            f"Pods of {namespace}/{name}",
            self.core.list_namespaced_pod,
            namespace,
            tolerant=True,
            label_selector=_predictor_selector(name),
        )

    def pod_warnings(self, namespace: str) -> list[dict]:
        """The namespace's Warning events about Pods (core/v1 Events): the kubelet's probe
        failures, pull errors; [] when this account may not list events."""
        return self._items(
            f"Events of {namespace}",
            self.core.list_namespaced_event,
            namespace,
            tolerant=True,
            field_selector="involvedObject.kind=Pod,type=Warning",
        )

    def service_account(self, namespace: str, name: str) -> dict | None:
        got = self._call(
            f"ServiceAccount {namespace}/{name}",
            self.core.read_namespaced_service_account,
            name,
            namespace,
            missing_ok=True,
        )
        return None if got is None else self._dict(got)

    def secret(self, namespace: str, name: str) -> dict | None:
        """{"keys": the non-empty data keys, "annotations": ...}, or None if absent."""
        got = self._call(
            f"Secret {namespace}/{name}",
            self.core.read_namespaced_secret,
            name,
            namespace,
            missing_ok=True,
        )
        if got is None:
            return None
        data = (got.data or {}) | (got.string_data or {})
        return {
            "keys": {k for k, v in data.items() if v},
            "annotations": dict(got.metadata.annotations or {}),
        }

    def runtime_exists(self, namespace: str, name: str, kind: str) -> bool | None:
        group, version = "serving.kserve.io", "v1alpha1"
        if kind == "ClusterServingRuntime":
            fn, args = (
                self.custom.get_cluster_custom_object,
                (group, version, "clusterservingruntimes", name),
            )
        else:
            fn = self.custom.get_namespaced_custom_object
            args = (group, version, namespace, "servingruntimes", name)
        got = self._call(f"{kind} {name}", fn, *args, missing_ok=True, forbidden_ok=True)
        return None if got is ... else got is not None

    def get_isvc(self, namespace: str, name: str) -> dict | None:
        return self._call(
            f"InferenceService {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            namespace,
            "inferenceservices",
            name,
            missing_ok=True,
        )

    def create_isvc(self, isvc: dict) -> dict:
        meta = isvc["metadata"]
        return self._call(
            f"create InferenceService {meta['namespace']}/{meta['name']}",
            self.custom.create_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            meta["namespace"],
            "inferenceservices",
            isvc,
            field_validation=STRICT,
        )

    def replace_isvc(self, isvc: dict) -> dict:
        """PUT: the stored spec becomes exactly `isvc` (a merge patch would keep every field the
        new spec omits, e.g. an earlier canaryTrafficPercent). `isvc` carries resourceVersion."""
        meta = isvc["metadata"]
        return self._call(
            f"replace InferenceService {meta['namespace']}/{meta['name']}",
            self.custom.replace_namespaced_custom_object,
            "serving.kserve.io",
            "v1beta1",
            meta["namespace"],
            "inferenceservices",
            meta["name"],
            isvc,
            field_validation=STRICT,
        )


class Conflict(ImageLingoError):
    """409 from the API server: the object changed since it was read (resourceVersion)."""


def _api_message(exc: Any) -> str:
    import json

    try:
        return f": {json.loads(exc.body)['message']}"
    except (TypeError, ValueError, KeyError):
        return ""


def _predictor_selector(name: str) -> str:
    """The labels KServe puts on a predictor's Deployments and Pods."""
    return f"serving.kserve.io/inferenceservice={name},component=predictor"
