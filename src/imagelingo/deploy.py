"""Stage 7, deploy: upload the model store, then create or replace the KServe InferenceService.

    target "kserve": check the cluster (namespace, ServiceAccount, S3 Secret, runtime, bucket),
                     upload the store to its own versioned prefix `<storage_uri>/<version>/`,
                     create the InferenceService or replace it (PUT: what is not rendered is gone),
                     wait for Ready, return its URL.
    target "local":  copy the model store and render inferenceservice.yaml into `out_dir`; no
                     cluster is touched (the embedded default, and what tests check).

This module is the one source of truth for the InferenceService: `manifests/base/
inferenceservice.yaml` is `render_manifest()` written out (tests/test_manifests.py keeps them
equal), and every InferenceService it can render is validated against the CRD schemas of KServe
0.15.0 (Kubeflow 1.10), 0.15.2 (Kubeflow 1.11) and 0.20.0 (tests/test_kserve_schemas.py). What
differs between those releases (mode names, spec.canary, what readiness means) is
imagelingo/cluster/kserve.py; deploy's `kserve_version` picks one (auto: read from the served
CRD; without a cluster, 0.15's API, which every release from 0.15 on accepts).

Where it lives (imagelingo/cluster/): isvc.py renders the InferenceService and its rollout
steps (pure), kube_api.py makes the Kubernetes calls, object_store.py checks and fills the model
store's prefix, rollout.py writes the InferenceService and waits for it; this module is the
stage that runs them in order, and re-exports their public names.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from imagelingo.cluster.isvc import (  # noqa: F401 - re-exported: deploy's public names
    CONTAINER_SECURITY,
    LABELS,
    MODEL_FORMAT,
    MODES,
    POD_SECURITY,
    PREVIOUS_URI_ANNOTATION,
    REGISTRY_ANNOTATION,
    RUNTIMES,
    TARGETS,
    DeployConfig,
    inference_service,
    promote,
    render_manifest,
    rollback,
    rollout,
    store_version,
    to_yaml,
    versioned_uri,
    with_overrides,
)
from imagelingo.cluster.kserve import (
    PORTABLE,
    KServe,
    version_from_crd,
)
from imagelingo.cluster.kube_api import (  # noqa: F401 - re-exported: deploy's public names
    KubeApi,
)
from imagelingo.cluster.object_store import (  # noqa: F401 - re-exported: deploy's public names
    S3_ENDPOINT_ANNOTATION,
    check_bucket,
    check_object_store_reachable,
    check_s3_secret,
    check_storage_uri,
    check_store,
    upload_store,
)
from imagelingo.cluster.rollout import (  # noqa: F401 - re-exported: deploy's public names
    apply,
    changed_by_write,
    wait_ready,
)
from imagelingo.errors import ImageLingoError


def preflight(api: KubeApi, config: DeployConfig) -> None:
    """Everything the InferenceService needs that deploy does not create, checked before any
    upload or change: the namespace, the ServiceAccount the predictor runs as, the S3 Secret
    KServe's storage initializer reads through it, and the runtime."""
    ns = config.namespace
    labels = api.namespace_labels(ns)
    if labels is None:
        raise ImageLingoError(f"namespace {ns!r} not found: kubectl apply -k manifests/overlays/…")
    account = api.service_account(ns, config.service_account)
    if account is None:
        raise ImageLingoError(
            f"ServiceAccount {config.service_account!r} not found in namespace {ns!r} "
            f"(does the namespace exist? kubectl apply -k manifests/overlays/…)"
        )
    if config.storage_uri.startswith("s3://"):
        secret = api.secret(ns, config.s3_secret)
        check_s3_secret(secret, config)
        endpoint = secret["annotations"].get(S3_ENDPOINT_ANNOTATION, "")
        check_object_store_reachable(endpoint, ns, labels)
        attached = {s.get("name") for s in account.get("secrets") or []}
        if config.s3_secret not in attached:
            raise ImageLingoError(
                f"ServiceAccount {ns}/{config.service_account} does not list Secret "
                f"{config.s3_secret!r}, so KServe will not use it"
            )
    kind = RUNTIMES[config.runtime]
    if api.runtime_exists(ns, config.runtime, kind) is False:
        raise ImageLingoError(
            f"{kind} {config.runtime!r} not found"
            + (f" in namespace {ns!r}" if kind == "ServingRuntime" else "")
        )


def deploy(
    store_dir: Path,
    out_dir: Path,
    target: str = "local",
    config: DeployConfig | None = None,
    client: KubeApi | None = None,
    s3_endpoint_url: str | None = None,
    model_version: str = "",
    kserve_version: str = "auto",
) -> dict:
    """Deploy a packaged model store; writes inferenceservice.yaml and metadata.json to out_dir.
    Every check runs before anything is uploaded or changed. After a successful deploy,
    `model_version` (MLflow registry) gets the `production` alias. `kserve_version`: the
    cluster's KServe (0.15 for Kubeflow 1.10/1.11, 0.20), or auto: read from the served CRD
    (target kserve), else 0.15's API, which every release from 0.15 on accepts."""

    from imagelingo.artifacts import write_metadata

    config = config or DeployConfig()
    config.check()
    if kserve_version != "auto":
        KServe.parse(kserve_version)  # a bad value stops here, before any upload
    if target not in TARGETS:
        raise ImageLingoError(f"unknown deploy target {target!r}; expected one of {TARGETS}")
    check_storage_uri(target, config.storage_uri)
    check_store(store_dir, config.runtime)
    version = store_version(store_dir)
    out_dir = Path(out_dir)
    if config.storage_uri:
        storage_uri = versioned_uri(config.storage_uri, version)
    else:  # local target, nothing given: the run's own folder is already unique
        storage_uri = str(out_dir / "store")
    if model_version:  # it gets the production alias at the end: it must exist
        from imagelingo.registry import versions

        if str(model_version) not in {str(row["version"]) for row in versions()}:
            raise ImageLingoError(
                f"the model registry has no version {model_version} of imagelingo"
            )
    current, api = None, None
    kserve = None if kserve_version == "auto" else KServe.parse(kserve_version)
    if target == "kserve":
        api = client or KubeApi()
        preflight(api, config)
        check_bucket(storage_uri, s3_endpoint_url)
        current = api.get_isvc(config.namespace, config.name)
        kserve = kserve or served_kserve(api)
    desired = rollout(current, config, storage_uri, version, kserve)
    if model_version:
        desired["metadata"]["annotations"][REGISTRY_ANNOTATION] = f"{model_version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = upload_store(store_dir, storage_uri, s3_endpoint_url)
    (out_dir / "inferenceservice.yaml").write_text(to_yaml(desired))
    action, url = "rendered", ""
    if api is not None:
        action, before, written = apply(api, desired, current)
        url = wait_ready(api, config, before, written)
    if model_version:
        from imagelingo.registry import set_production

        set_production(model_version)
    return write_metadata(
        out_dir,
        "deploy",
        inputs={"model_store": str(store_dir)},
        params={
            **asdict(config),
            "target": target,
            "storage_uri": storage_uri,
            "kserve_version": (kserve or KServe.parse(PORTABLE)).name,  # what it was written for
        },
        counts={"files_uploaded": files},
        action=action,
        url=url,
        store_version=version,
        production_version=model_version,
    )


def change_traffic(
    action: str, config: DeployConfig, out_dir: Path | None = None, client: KubeApi | None = None
) -> dict:
    """`promote` or `rollback` the live InferenceService (no upload); returns what was applied."""

    config.check()
    api = client or KubeApi()
    current = api.get_isvc(config.namespace, config.name)
    if current is None:
        raise ImageLingoError(f"InferenceService {config.namespace}/{config.name} not found")
    desired = {"promote": promote, "rollback": rollback}[action](current)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "inferenceservice.yaml").write_text(to_yaml(desired))
    _, before, written = apply(api, desired, current)
    url = wait_ready(api, config, before, written)
    return {"action": action, "url": url, "spec": desired["spec"]}


def served_kserve(api: KubeApi) -> KServe:
    """kserve_version auto: the release family of the served InferenceService CRD; when this
    account cannot read CRDs, the API every release from 0.15 on accepts."""
    crd = api.isvc_crd()
    return version_from_crd(crd) if crd else KServe.parse(PORTABLE)


if __name__ == "__main__":  # regenerate manifests/base/inferenceservice.yaml
    from imagelingo.config import REPO_ROOT

    path = REPO_ROOT / "manifests" / "base" / "inferenceservice.yaml"
    path.write_text(render_manifest())
    print(f"wrote {path}")
