from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import DEPLOY_IMAGE


@dsl.component(base_image=DEPLOY_IMAGE, install_kfp_package=False)
def deploy(
    model_store: Input[Model],
    target: str,
    name: str,
    namespace: str,
    storage_uri: str,
    canary_traffic_percent: int,
    protocol_version: str,
    mode: str,
    runtime: str,
    service_account: str,
    s3_secret: str,
    cpu_request: str,
    cpu_limit: str,
    memory_request: str,
    memory_limit: str,
    min_replicas: int,
    max_replicas: int,
    timeout_s: int,
    kserve_version: str,
    registration: Input[Artifact],
    deployment: Output[Artifact],
) -> str:
    """Upload the model store to its own versioned prefix and create or replace the
    InferenceService ("kserve": checks the namespace, Secret, runtime and bucket first), or render
    it ("local"); then mark the evaluated registry version as production. Returns the URL.
    The settings: params.yaml `deploy`; `kserve_version`: the KServe release of the pipeline's
    target (the annotation names and fields it knows; imagelingo.cluster.kserve)."""
    import os
    from pathlib import Path

    from imagelingo.artifacts import read_metadata
    from imagelingo.deploy import DeployConfig, deploy

    config = DeployConfig(
        name=name,
        namespace=namespace,
        storage_uri=storage_uri,
        canary_traffic_percent=canary_traffic_percent,
        protocol_version=protocol_version,
        mode=mode,
        runtime=runtime,
        service_account=service_account,
        s3_secret=s3_secret,
        cpu_request=cpu_request,
        cpu_limit=cpu_limit,
        memory_request=memory_request,
        memory_limit=memory_limit,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        timeout_s=timeout_s,
    )
    record = deploy(
        Path(model_store.path),
        Path(deployment.path),
        target,
        config,
        s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        model_version=read_metadata(Path(registration.path)).get("model_version", ""),
        kserve_version=kserve_version,
    )
    deployment.metadata.update({"action": record["action"], "url": record["url"]})
    return record["url"]
