"""The ImageLingo DAG: ingest, vocab, features, train, evaluate, gate, package, deploy.

    imagelingo compile                  # writes pipelines/imagelingo_pipeline.yaml
    imagelingo run                      # the whole DAG on this machine (kfp.local)
    imagelingo submit --host URL        # a run on Kubeflow Pipelines

Settings come from params.yaml, every key of a stage's section to its component: the pipeline
parameters (what one run varies: data, training budget and rate, beam, gate, where and how to
deploy) take their defaults from it; every other key is a compile-time constant read from it
(`constants`): after changing one, run `imagelingo compile`. On a cluster the MLflow URI and S3
credentials come from the Secrets `imagelingo-mlflow` and `imagelingo-s3` (see README, "On a
cluster"); the tasks that need them do not start without them. Pod settings (kfp-kubernetes,
ignored by kfp.local): a deadline on every task, /dev/shm in memory where DataLoader workers run,
a size-limited scratch folder for the data-heavy tasks.
"""

from kfp import dsl, kubernetes

from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.features.component import features
from components.images import TRAINING_IMAGE
from components.ingest.component import ingest
from components.merge.component import merge
from components.package.component import package
from components.train.component import train
from components.vocab.component import vocab
from imagelingo.config import load_params
from imagelingo.tracking import CLUSTER_MARKER

P = load_params()
S3_SECRET, MLFLOW_SECRET = "imagelingo-s3", "imagelingo-mlflow"
SECRET_ENV = {
    S3_SECRET: {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")},
    MLFLOW_SECRET: {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"},
}
# Who needs which Secret. Required (not optional): a pod whose Secret is missing does not start
# (CreateContainerConfigError naming it) instead of running without credentials. vocab, features
# and package only read and write KFP artifacts and get none.
SECRETS = {
    "ingest": (S3_SECRET,),  # an s3:// source
    "train": (S3_SECRET, MLFLOW_SECRET),  # the MLflow run; checkpoints under an s3:// root
    "evaluate": (S3_SECRET, MLFLOW_SECRET),  # registers the model version (artifacts on S3)
    "deploy": (S3_SECRET, MLFLOW_SECRET),  # uploads the model store, moves the registry alias
}
# Pod deadline (activeDeadlineSeconds) per task: a hung task fails instead of holding a node.
# Sized for Flickr8k on CPU (benchmarks/RESULTS.md: ~35 min end to end) with a wide margin.
TIMEOUTS = {
    "ingest": 2 * 3600,
    "vocab": 1800,
    "features": 4 * 3600,
    "merge": 3600,
    "train": 12 * 3600,
    "evaluate": 4 * 3600,
    "package": 3600,
    "deploy": 1800,
}
# DataLoader workers share tensors through /dev/shm; the container default is 64 MiB.
SHM = {"features": "2Gi", "train": "2Gi"}
# A scratch /tmp (IMAGELINGO_CACHE lives there: the downloaded source, encoder weights) with a size
# limit: a task that outgrows it is evicted with a message naming the volume, not the node's disk.
SCRATCH = {"ingest": "20Gi", "features": "10Gi", "train": "10Gi", "evaluate": "10Gi"}
# Side effects (an InferenceService, the registry alias): never served from KFP's cache.
NEVER_CACHED = ("deploy",)
# Feature extraction runs as this many `features` tasks side by side (dsl.ParallelFor; kfp.local
# runs them in threads here), each on a contiguous shard of every split; `merge` joins their
# stores, in shard order, into the store one task would have written.
FEATURE_SHARDS = 2
# deploy's settings that are pipeline parameters (service_name, deploy_mode, serving_runtime by
# their own names); the rest of params.yaml `deploy` are constants.
DEPLOY_PARAMETERS = (
    "name",
    "namespace",
    "storage_uri",
    "canary_traffic_percent",
    "protocol_version",
    "mode",
    "runtime",
)
# The GPU request of features and train is two pipeline parameters, chosen per run:
# accelerator_count 0 (the default) runs on CPU; e.g. accelerator_count=1 asks for one
# `accelerator_type` (nvidia.com/gpu) each. The KFP driver writes the limit only when both are
# set, and a 0 limit of an extended resource asks for nothing; kfp.local ignores both.


def constants(section: str, *run_time: str) -> dict:
    """params.yaml's `section` less the keys passed as pipeline parameters (`run_time`)."""
    return {key: value for key, value in P[section].items() if key not in run_time}


def resources(task, cpu: str, memory: str, accelerator=None):
    """Requests and limits, then the per-task settings above (by component name). `accelerator`:
    the (type, count) pipeline parameters (features and train)."""
    stage = task.component_spec.name
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory)
    task.set_memory_limit(memory)
    if accelerator is not None:
        accelerator_type, accelerator_count = accelerator
        task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
        # kfp 2.17 passes a pipeline parameter into a ParallelFor's sub-DAG (the feature shards)
        # only when a task there has it as a channel input; one used only in resources is left
        # out and the loop fails ("Parent pipeline input argument ... not found").
        # (`in` would compare channels with ==, which builds a dsl.If condition: test identity)
        known = {id(c) for c in task.channel_inputs}
        task._channel_inputs.extend(p for p in accelerator if id(p) not in known)
    for secret in SECRETS.get(stage, ()):
        kubernetes.use_secret_as_env(task, secret, SECRET_ENV[secret], optional=False)
    if MLFLOW_SECRET in SECRETS.get(stage, ()):
        # Tells imagelingo.tracking it runs in a cluster pod: no silent sqlite fallback there.
        kubernetes.use_field_path_as_env(task, CLUSTER_MARKER, "metadata.namespace")
    kubernetes.set_timeout(task, TIMEOUTS[stage])
    if stage in SHM:
        kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=SHM[stage])
    if stage in SCRATCH:
        kubernetes.empty_dir_mount(task, "scratch", "/tmp", size_limit=SCRATCH[stage])
    if stage in NEVER_CACHED:
        task.set_caching_options(enable_caching=False)
    return task


@dsl.pipeline(name="imagelingo", description="Flickr8k captioning: train, evaluate, serve")
def imagelingo_pipeline(
    source: str = "synthetic",
    data_fingerprint: str = "",
    synthetic_images: int = P["ingest"]["synthetic_images"],
    encoder: str = P["features"]["encoder"],
    seed: int = P["train"]["seed"],
    epochs: int = P["train"]["epochs"],
    batch_size: int = P["train"]["batch_size"],
    lr: float = P["train"]["lr"],
    lr_decay: float = P["train"]["lr_decay"],
    patience: int = P["train"]["patience"],
    scst_epochs: int = P["train"]["scst_epochs"],
    checkpoint_root: str = "",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 0,
    train_engine: str = "task",
    train_nodes: int = 1,
    train_procs_per_node: int = 1,
    train_gpus_per_node: int = 0,
    beam_width: int = P["evaluate"]["beam_width"],
    min_score: float = P["evaluate"]["min_score"],
    deploy_target: str = "local",
    service_name: str = P["deploy"]["name"],
    namespace: str = P["deploy"]["namespace"],
    storage_uri: str = P["deploy"]["storage_uri"],
    canary_traffic_percent: int = P["deploy"]["canary_traffic_percent"],
    protocol_version: str = P["deploy"]["protocol_version"],
    deploy_mode: str = P["deploy"]["mode"],
    serving_runtime: str = P["deploy"]["runtime"],
):
    data = ingest(
        source=source,
        data_fingerprint=data_fingerprint,
        synthetic_images=synthetic_images,
        **constants("ingest", "synthetic_images"),
    )
    resources(data, "1", "2Gi").set_retry(num_retries=3, backoff_duration="30s")
    words = resources(vocab(dataset=data.output, **constants("vocab")), "1", "1Gi")
    gpu = (accelerator_type, accelerator_count)
    with dsl.ParallelFor(list(range(FEATURE_SHARDS))) as shard:
        part = features(
            dataset=data.output,
            encoder=encoder,
            shard=shard,
            shards=FEATURE_SHARDS,
            **constants("features", "encoder"),
        )
        resources(part, "4", "8Gi", gpu)
    grids = merge(dataset=data.output, shards=dsl.Collected(part.outputs["features"]))
    resources(grids, "1", "2Gi")
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
        scst_epochs=scst_epochs,  # 0: cross-entropy only; N: then up to N self-critical epochs
        checkpoint_root=checkpoint_root,
        # "task": this pod trains; "trainjob": a Kubeflow Trainer TrainJob of train_nodes x
        # train_procs_per_node torchrun processes (imagelingo.trainjob; README "Scaling out")
        engine=train_engine,
        nodes=train_nodes,
        procs_per_node=train_procs_per_node,
        gpus_per_node=train_gpus_per_node,
        image=TRAINING_IMAGE,
        **constants(
            "train", "seed", "epochs", "batch_size", "lr", "lr_decay", "patience", "scst_epochs"
        ),
    )
    # A retried attempt resumes from the last epoch's checkpoint under checkpoint_root.
    resources(fit, "4", "8Gi", gpu).set_retry(num_retries=2, backoff_duration="60s")
    scored = evaluate(
        model=fit.outputs["model"],
        features=grids.output,
        dataset=data.output,
        beam_width=beam_width,
        # min_score is the gate below, on the evaluate's Output (its value of params.yaml's
        # evaluate.gate_metric): a low score skips package and deploy, it does not fail the run
        **constants("evaluate", "beam_width", "min_score"),
    )
    resources(scored, "2", "4Gi")
    with dsl.If(scored.outputs["Output"] >= min_score, name="quality-gate"):
        store = resources(package(model=fit.outputs["model"], **constants("package")), "2", "4Gi")
        release = deploy(
            model_store=store.output,
            target=deploy_target,
            name=service_name,
            namespace=namespace,
            storage_uri=storage_uri,
            canary_traffic_percent=canary_traffic_percent,
            protocol_version=protocol_version,
            mode=deploy_mode,
            runtime=serving_runtime,
            evaluation=scored.outputs["evaluation"],
            **constants("deploy", *DEPLOY_PARAMETERS),
        )
        resources(release, "500m", "512Mi").set_retry(num_retries=3, backoff_duration="30s")
