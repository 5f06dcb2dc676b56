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
    evaluation: Input[Artifact],
    deployment: Output[Artifact],
    mode: str = "Knative",
    runtime: str = "imagelingo-torchserve",
) -> str:
    """Upload the model store to its own versioned prefix and create or replace the
    InferenceService ("kserve": checks the namespace, Secret, runtime and bucket first), or render
    it ("local"); then mark the evaluated registry version as production. Returns the URL."""
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
    )
    record = deploy(
        Path(model_store.path),
        Path(deployment.path),
        target,
        config,
        s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        model_version=read_metadata(Path(evaluation.path)).get("model_version", ""),
    )
    deployment.metadata.update({"action": record["action"], "url": record["url"]})
    return record["url"]
