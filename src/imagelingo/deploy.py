"""Stage 7, deploy: upload the model store, then create or patch the KServe InferenceService.

    target "kserve": upload to `storage_uri` (s3:// through boto3, or a path the cluster mounts),
                     create the InferenceService with the kserve SDK or patch it if it exists,
                     wait for Ready, return its URL.
    target "local":  copy the model store and render inferenceservice.yaml into `out_dir`; no
                     cluster is touched (the embedded default, and what tests check).

The predictor is KServe's TorchServe runtime: `modelFormat: pytorch`, protocol v1 or v2, the
model store at storageUri (model-store/ + config/, as `imagelingo package` writes it).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imagelingo.errors import ImageLingoError

TARGETS = ("local", "kserve")


@dataclass(frozen=True)
class DeployConfig:
    name: str = "imagelingo"
    namespace: str = "imagelingo"
    storage_uri: str = ""  # s3://bucket/prefix, pvc://..., or a local path for target "local"
    service_account: str = "imagelingo-deployer"
    protocol_version: str = "v1"
    canary_traffic_percent: int = -1  # -1: no canary (all traffic to the new revision)
    cpu: str = "1"
    memory: str = "2Gi"
    min_replicas: int = 1
    max_replicas: int = 3
    timeout_s: int = 600

    def check(self) -> None:
        if self.protocol_version not in ("v1", "v2"):
            raise ImageLingoError(f"protocol_version must be v1 or v2, got {self.protocol_version}")
        if not -1 <= self.canary_traffic_percent <= 100:
            raise ImageLingoError(
                f"canary_traffic_percent must be 0-100 (or -1 for none), "
                f"got {self.canary_traffic_percent}"
            )


def inference_service(config: DeployConfig, storage_uri: str):
    """The `serving.kserve.io/v1beta1` InferenceService as a kserve SDK object."""
    import kserve
    from kubernetes.client import V1ObjectMeta, V1ResourceRequirements

    resources = {"cpu": config.cpu, "memory": config.memory}
    predictor = kserve.V1beta1PredictorSpec(
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        service_account_name=config.service_account,
        canary_traffic_percent=(
            config.canary_traffic_percent if config.canary_traffic_percent >= 0 else None
        ),
        model=kserve.V1beta1ModelSpec(
            name="kserve-container",  # KServe's default; the SDK would otherwise send ""
            model_format=kserve.V1beta1ModelFormat(name="pytorch"),
            protocol_version=config.protocol_version,
            storage_uri=storage_uri,
            resources=V1ResourceRequirements(requests=resources, limits=resources),
        ),
    )
    return kserve.V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=config.name,
            namespace=config.namespace,
            labels={"app.kubernetes.io/part-of": "imagelingo"},
        ),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=predictor),
    )


def to_manifest(isvc: Any) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def upload_store(store_dir: Path, storage_uri: str, endpoint_url: str | None = None) -> int:
    """Copy model-store/ and config/ to the storage URI; returns the number of files."""
    store_dir = Path(store_dir)
    for part in ("model-store", "config"):
        if not (store_dir / part).is_dir():
            raise ImageLingoError(f"{store_dir / part} not found: run `imagelingo package` first")
    if storage_uri.startswith("s3://"):
        from imagelingo.storage import upload_dir

        return sum(
            upload_dir(store_dir / part, f"{storage_uri.rstrip('/')}/{part}", endpoint_url)
            for part in ("model-store", "config")
        )
    if "://" in storage_uri:
        raise ImageLingoError(f"cannot upload to {storage_uri!r}: use s3:// or a local path")
    target = Path(storage_uri)
    count = 0
    for part in ("model-store", "config"):
        shutil.copytree(store_dir / part, target / part, dirs_exist_ok=True)
        count += sum(1 for p in (target / part).rglob("*") if p.is_file())
    return count


def create_or_patch(client: Any, isvc: Any, config: DeployConfig) -> str:
    """Create the InferenceService, or patch it when it exists. Returns "created" or "patched"."""
    from kubernetes.client.rest import ApiException

    try:
        client.get(config.name, namespace=config.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
    except RuntimeError as exc:  # KServeClient.get wraps the ApiException in a RuntimeError
        if "(404)" not in str(exc):
            raise
    else:
        client.patch(config.name, isvc, namespace=config.namespace)
        return "patched"
    client.create(isvc, namespace=config.namespace)
    return "created"


def deploy(
    store_dir: Path,
    out_dir: Path,
    target: str = "local",
    config: DeployConfig = DeployConfig(),
    client: Any = None,
    s3_endpoint_url: str | None = None,
    model_version: str = "",
) -> dict:
    """Deploy a packaged model store; writes inferenceservice.yaml and metadata.json to out_dir.
    After a successful deploy, `model_version` (MLflow registry) gets the `production` alias."""
    import yaml

    from imagelingo.artifacts import write_metadata

    config.check()
    if target not in TARGETS:
        raise ImageLingoError(f"unknown deploy target {target!r}; expected one of {TARGETS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage_uri = config.storage_uri or str(out_dir / "store")
    files = upload_store(store_dir, storage_uri, s3_endpoint_url)
    isvc = inference_service(config, storage_uri)
    (out_dir / "inferenceservice.yaml").write_text(yaml.safe_dump(to_manifest(isvc)))
    action, url = "rendered", ""
    if target == "kserve":
        if client is None:
            import kserve

            client = kserve.KServeClient()
        action = create_or_patch(client, isvc, config)
        client.wait_isvc_ready(
            config.name, namespace=config.namespace, timeout_seconds=config.timeout_s
        )
        status = client.get(config.name, namespace=config.namespace).get("status", {})
        url = status.get("url", "")
    if model_version:
        from imagelingo.registry import set_production

        set_production(model_version)
    return write_metadata(
        out_dir,
        "deploy",
        inputs={"model_store": str(store_dir)},
        params={**asdict(config), "target": target, "storage_uri": storage_uri},
        counts={"files_uploaded": files},
        action=action,
        url=url,
        production_version=model_version,
    )
