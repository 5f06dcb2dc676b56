"""The ImageLingo DAG: ingest, vocab, features, train, evaluate, gate, package, deploy.

    imagelingo compile                  # writes pipelines/imagelingo_pipeline.yaml
    imagelingo run                      # the whole DAG on this machine (kfp.local)
    imagelingo submit --host URL        # a run on Kubeflow Pipelines

Parameter defaults come from params.yaml. On a cluster the MLflow URI and S3 credentials come
from the Secrets `imagelingo-mlflow` and `imagelingo-s3` (see README, "On a cluster").
"""

from kfp import dsl, kubernetes

from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.features.component import features
from components.ingest.component import ingest
from components.package.component import package
from components.train.component import train
from components.vocab.component import vocab
from imagelingo.config import load_params

P = load_params()
S3_ENV = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
USE_GPU = False  # set True (then compile) to request one GPU for features and train


def resources(task, cpu: str, memory: str, gpu: bool = False):
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory)
    task.set_memory_limit(memory)
    if gpu and USE_GPU:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.use_secret_as_env(task, "imagelingo-s3", S3_ENV, optional=True)
    kubernetes.use_secret_as_env(
        task, "imagelingo-mlflow", {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}, optional=True
    )
    return task


@dsl.pipeline(name="imagelingo", description="Flickr8k captioning: train, evaluate, serve")
def imagelingo_pipeline(
    source: str = "synthetic",
    synthetic_images: int = P["ingest"]["synthetic_images"],
    encoder: str = P["features"]["encoder"],
    seed: int = P["train"]["seed"],
    epochs: int = P["train"]["epochs"],
    batch_size: int = P["train"]["batch_size"],
    lr: float = P["train"]["lr"],
    lr_decay: float = P["train"]["lr_decay"],
    patience: int = P["train"]["patience"],
    beam_width: int = P["evaluate"]["beam_width"],
    min_bleu4: float = P["evaluate"]["min_bleu4"],
    deploy_target: str = "local",
    service_name: str = "imagelingo",
    namespace: str = "imagelingo",
    storage_uri: str = "",
    canary_traffic_percent: int = -1,
    protocol_version: str = "v1",
):
    data = ingest(source=source, synthetic_images=synthetic_images, seed=P["ingest"]["seed"])
    resources(data, "1", "2Gi").set_retry(num_retries=3, backoff_duration="30s")
    words = resources(vocab(dataset=data.output, min_freq=P["vocab"]["min_freq"]), "1", "1Gi")
    grids = features(
        dataset=data.output,
        encoder=encoder,
        batch_size=P["features"]["batch_size"],
        num_workers=P["features"]["num_workers"],
    )
    resources(grids, "4", "8Gi", gpu=True)
    fit = train(
        dataset=data.output,
        vocab=words.output,
        features=grids.output,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_decay=lr_decay,
        patience=patience,
    )
    resources(fit, "4", "8Gi", gpu=True)
    scored = evaluate(
        model=fit.outputs["model"],
        features=grids.output,
        dataset=data.output,
        beam_width=beam_width,
    )
    resources(scored, "2", "4Gi")
    with dsl.If(scored.outputs["Output"] >= min_bleu4, name="quality-gate"):
        store = resources(package(model=fit.outputs["model"]), "2", "4Gi")
        release = deploy(
            model_store=store.output,
            target=deploy_target,
            name=service_name,
            namespace=namespace,
            storage_uri=storage_uri,
            canary_traffic_percent=canary_traffic_percent,
            protocol_version=protocol_version,
            evaluation=scored.outputs["evaluation"],
        )
        resources(release, "500m", "512Mi").set_retry(num_retries=3, backoff_duration="30s")
