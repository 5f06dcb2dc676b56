"""The ImageLingo DAG, compiled for one target Kubeflow release (imagelingo.cluster.platforms):
fingerprint, ingest, vocab, features (sharded where the backend fans in), train, evaluate, release
(registry + gate), package, deploy.

    imagelingo compile                  # pipelines/imagelingo_pipeline.<target>.yaml, every target
    imagelingo run                      # the whole DAG on this machine (kfp.local)
    imagelingo submit --host URL        # a run on Kubeflow Pipelines, compiled for its backend

Settings come from params.yaml, every key of a stage's section to its component: the pipeline
parameters (what one run varies: data, training budget and rate, beam, gate, where and how to
deploy) take their defaults from it; every other key is a compile-time constant read from it
(`constants`): after changing one, run `imagelingo compile`. On a cluster the MLflow URI and S3
credentials come from the Secrets `imagelingo-mlflow` and `imagelingo-s3` (see README, "On a
cluster"); the tasks that need them do not start without them. Pod settings (kfp-kubernetes,
ignored by kfp.local): a deadline on every task, /dev/shm in memory where DataLoader workers run,
a size-limited scratch folder for the data-heavy tasks, image pull secrets when given. What each
backend runs of this (fan-in, nested retries, accelerator placeholders) is checked on every
compile by imagelingo.cluster.kfp_rules.
"""

from kfp import dsl, kubernetes

from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.features.component import features
from components.fingerprint.component import fingerprint
from components.images import TRAINING_CUDA_IMAGE, TRAINING_IMAGE
from components.ingest.component import ingest
from components.merge.component import merge
from components.package.component import package
from components.release.component import release
from components.train.component import train
from components.vocab.component import vocab
from imagelingo.cluster.gpu_nodes import GpuNodes
from imagelingo.cluster.platforms import DEFAULT_TARGET, TARGETS, Target
from imagelingo.cluster.pod_options import PodOptions
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
    "fingerprint": (S3_SECRET,),  # lists an s3:// source
    "ingest": (S3_SECRET,),  # an s3:// source
    "train": (S3_SECRET, MLFLOW_SECRET),  # the MLflow run; checkpoints under an s3:// root
    "evaluate": (S3_SECRET, MLFLOW_SECRET),  # logs the test metrics to the MLflow run
    "release": (S3_SECRET, MLFLOW_SECRET),  # registers the model version, reads production's
    "deploy": (S3_SECRET, MLFLOW_SECRET),  # uploads the model store, moves the registry alias
}
# Pod deadline (activeDeadlineSeconds) per task: a hung task fails instead of holding a node.
# Sized for Flickr8k on CPU (benchmarks/RESULTS.md: ~35 min end to end) with a wide margin.
TIMEOUTS = {
    "fingerprint": 900,
    "ingest": 2 * 3600,
    "vocab": 1800,
    "features": 4 * 3600,
    "merge": 3600,
    "train": 12 * 3600,
    "evaluate": 4 * 3600,
    "release": 900,
    "package": 3600,
    "deploy": 1800,
}
# DataLoader workers share tensors through /dev/shm; the container default is 64 MiB.
SHM = {"features": "2Gi", "train": "2Gi"}
# A scratch /tmp (IMAGELINGO_CACHE lives there: the downloaded source, encoder weights) with a size
# limit: a task that outgrows it is evicted with a message naming the volume, not the node's disk.
SCRATCH = {"ingest": "20Gi", "features": "10Gi", "train": "10Gi", "evaluate": "10Gi"}
# Never served from KFP's cache, whose key is a task's inputs, image and command
# (kubeflow/pipelines 2.15.0 backend/src/v2/cacheutils/cache.go:173-225; 2.5.0 cache.go:52-105):
# the data's fingerprint (what is behind `source` changes under the same string), the registry
# version and gate (imagelingo.release), and the side effects (an InferenceService, the alias).
NEVER_CACHED = ("fingerprint", "release", "deploy")
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
# The GPU request of features and train is two STRING pipeline parameters, chosen per run:
# accelerator_count "0" (the default) runs on CPU; e.g. "1" asks for one `accelerator_type`
# (nvidia.com/gpu) each. Strings, because the KFP driver resolves both placeholders with
# GetStringValue and writes the limit only when both are non-empty (2.5.0 driver.go:557-589,
# 2.15.0 driver.go:361-393; cluster-reference R4): an int parameter gives "" and no GPU.
# kfp.local ignores both; the features task fails when a requested GPU is not visible.


def constants(section: str, *run_time: str) -> dict:
    """params.yaml's `section` less the keys passed as pipeline parameters (`run_time`)."""
    return {key: value for key, value in P[section].items() if key not in run_time}


def resources(task, target: Target, cpu: str, memory: str, accelerator=None, pull_secrets=()):
    """Requests and limits, then the per-task settings above (by component name). `accelerator`:
    the (type, count) pipeline parameters (features and train)."""
    stage = task.component_spec.name
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory)
    task.set_memory_limit(memory)
    if accelerator is not None:
        accelerator_type, accelerator_count = accelerator
        task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
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
    if pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(pull_secrets))
    if stage in NEVER_CACHED:
        task.set_caching_options(enable_caching=False)
    return task


def on_gpu_nodes(task, gpu: GpuNodes):
    """The GPU tasks' image and placement (imagelingo.cluster.gpu_nodes): the CUDA image, and the
    tolerations and node selector of the cluster's GPU nodes."""
    if gpu.cuda:
        task.set_container_image(TRAINING_CUDA_IMAGE)
    for toleration in gpu.tolerations:
        kubernetes.add_toleration(task, **toleration.kfp_arguments())
    for label, value in gpu.node_selector:
        kubernetes.add_node_selector(task, label, value)
    return task


def retry(task, target: Target, nested: bool, attempts: int, backoff: str):
    """Retries where the target's backend honours them: a task in a sub-DAG (dsl.If,
    ParallelFor) gets its retry policy only from KFP 2.14 on (Target.nested_retry); before, the
    policy would be dropped without a word, so it is not written."""
    if not nested or target.nested_retry:
        task.set_retry(num_retries=attempts, backoff_duration=backoff)
    return task


def build(target: Target = TARGETS[DEFAULT_TARGET], pods: PodOptions = PodOptions()):
    """The pipeline function for `target`; `pods`: image pull Secrets for every pod (e.g. for
    private GHCR images), the image and nodes of features and train."""

    def setup(task, cpu: str, memory: str, accelerator=None):
        task = resources(task, target, cpu, memory, accelerator, pods.pull_secrets)
        return task if accelerator is None else on_gpu_nodes(task, pods.gpu)

    @dsl.pipeline(
        name="imagelingo",
        description=f"Flickr8k captioning: train, evaluate, serve (for {target.name}: KFP "
        f"{target.kfp_backend}, KServe {target.kserve})",
    )
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
        scst_epochs: int = P["train"]["scst_epochs"],
        checkpoint_root: str = "",
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: str = "0",
        train_engine: str = "task",
        train_nodes: int = 1,
        train_procs_per_node: int = 1,
        train_gpus_per_node: int = 0,
        beam_width: int = P["evaluate"]["beam_width"],
        min_score: float = P["evaluate"]["min_score"],
        # with compare_production, the new model must also reach production's gate_metric +
        # gate_margin (when a version is in production): what retraining from CI asks
        compare_production: bool = False,
        gate_margin: float = 0.0,
        deploy_target: str = "local",
        service_name: str = P["deploy"]["name"],
        namespace: str = P["deploy"]["namespace"],
        storage_uri: str = P["deploy"]["storage_uri"],
        canary_traffic_percent: int = P["deploy"]["canary_traffic_percent"],
        protocol_version: str = P["deploy"]["protocol_version"],
        deploy_mode: str = P["deploy"]["mode"],
        serving_runtime: str = P["deploy"]["runtime"],
    ):
        # What the data behind `source` is, never cached: ingest's cache key changes with it.
        data_id = setup(fingerprint(source=source), "500m", "512Mi")
        data = ingest(
            source=source,
            data_fingerprint=data_id.output,
            synthetic_images=synthetic_images,
            **constants("ingest", "synthetic_images"),
        )
        retry(setup(data, "1", "2Gi"), target, nested=False, attempts=3, backoff="30s")
        words = setup(vocab(dataset=data.output, **constants("vocab")), "1", "1Gi")
        accelerators = (accelerator_type, accelerator_count)

        def feature_task(shard, shards: int):
            task = features(
                dataset=data.output,
                encoder=encoder,
                shard=shard,
                shards=shards,
                # also what puts the GPU parameters into a ParallelFor's sub-DAG (kfp passes a
                # pipeline parameter there only as some task's input, not for set_accelerator_*)
                accelerator_resource=accelerator_type,
                accelerator_request=accelerator_count,
                **constants("features", "encoder"),
            )
            return setup(task, "4", "8Gi", accelerators)

        if target.fan_in:
            # shards side by side (kfp.local: threads), then `merge` joins their stores, in
            # shard order, into the store one task would have written
            with dsl.ParallelFor(list(range(target.feature_shards))) as shard:
                part = feature_task(shard, target.feature_shards)
            grids = merge(dataset=data.output, shards=dsl.Collected(part.outputs["features"]))
            grids = setup(grids, "1", "2Gi").output
        else:
            grids = feature_task(0, 1).outputs["features"]
        fit = train(
            dataset=data.output,
            vocab=words.output,
            features=grids,
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
            image=TRAINING_CUDA_IMAGE if pods.gpu.cuda else TRAINING_IMAGE,
            trainer_version=target.trainer,  # "": no Kubeflow Trainer there, `trainjob` refuses
            **constants(
                "train", "seed", "epochs", "batch_size", "lr", "lr_decay", "patience", "scst_epochs"
            ),
        )
        # A retried attempt resumes from the last epoch's checkpoint under checkpoint_root.
        retry(setup(fit, "4", "8Gi", accelerators), target, nested=False, attempts=2, backoff="60s")
        scored = evaluate(
            model=fit.outputs["model"],
            features=grids,
            dataset=data.output,
            beam_width=beam_width,
            # min_score is the release task's gate, on the evaluation's value of params.yaml's
            # evaluate.gate_metric: a low score skips package and deploy, it does not fail the run
            **constants("evaluate", "beam_width", "min_score"),
        )
        setup(scored, "2", "4Gi")
        decision = release(
            model=fit.outputs["model"],
            dataset=data.output,
            evaluation=scored.outputs["evaluation"],
            gate_metric=P["evaluate"]["gate_metric"],
            min_score=min_score,
            compare_production=compare_production,
            gate_margin=gate_margin,
        )
        setup(decision, "500m", "512Mi")
        # A low score skips package and deploy; it does not fail the run.
        with dsl.If(decision.outputs["Output"] == True, name="quality-gate"):  # noqa: E712
            store = setup(package(model=fit.outputs["model"], **constants("package")), "2", "4Gi")
            live = deploy(
                model_store=store.output,
                target=deploy_target,
                name=service_name,
                namespace=namespace,
                storage_uri=storage_uri,
                canary_traffic_percent=canary_traffic_percent,
                protocol_version=protocol_version,
                mode=deploy_mode,
                runtime=serving_runtime,
                registration=decision.outputs["registration"],
                kserve_version=target.kserve,  # the release the target's Kubeflow installs
                **constants("deploy", *DEPLOY_PARAMETERS),
            )
            retry(setup(live, "500m", "512Mi"), target, nested=True, attempts=3, backoff="30s")

    return imagelingo_pipeline


imagelingo_pipeline = build()  # the default target: what `imagelingo run` runs through kfp.local
