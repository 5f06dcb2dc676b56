"""Training on the Kubeflow Trainer: the same `imagelingo train`, under torchrun, on N pods.

The pipeline's train task does it when its `train_engine` parameter is `trainjob`: it creates a
TrainJob (trainer.kubeflow.org/v1alpha1) on the `torch-distributed` ClusterTrainingRuntime, waits
for it, logs its conditions, and fills its Model artifact from what the job wrote. The TrainJob is
written for the Trainer release the cluster runs (TRAINER_VERSIONS): v2.1.0 is what Kubeflow 1.11.0
installs, v2.3.0 the newest release; Kubeflow 1.10 ships no Trainer (training-operator v1 only) and
gets the `task` engine only (imagelingo.cluster.platforms). Why v2 and not the training-operator's
v1 PyTorchJob: v2 is the maintained line (the v1 tags continue only as release-1.9 backports), the
default runtime already starts torchrun from the PET_* variables it sets per pod (nodes, processes
per node, node rank, master address and port; /work/shared/cluster-reference/README.md, Kubeflow
Trainer facts 3-5), so the job is a command and a size; v1 would need a Master/Worker split and
its WORLD_SIZE counts pods (facts 6-8).

The pods see none of the KFP artifacts, so data moves through S3 (the bucket the pipeline already
uses for `checkpoint_root`), under <checkpoint_root>/<key>/ (the key is resume.inputs_digest of
the inputs and settings, as in train.checkpoint_location: a retried task finds its job again):

    inputs/dataset/ inputs/vocab/ inputs/features/   uploaded by the task before the job
    model/                                           train's checkpoint_uri: rank 0 mirrors the
                                                     checkpoint and best weights every epoch and
                                                     metadata.json at the end

Every pod downloads inputs/ (`python -m imagelingo.trainjob fetch`), then runs
`torchrun -m imagelingo.cli train ... --checkpoint-uri <key>/model` (render_trainjob). What it
needs on the cluster: the Kubeflow Trainer (v2.1.0 or v2.3.0) and its `torch-distributed`
ClusterTrainingRuntime; RBAC for the pipeline's ServiceAccount to create/get/delete
trainjobs.trainer.kubeflow.org in its namespace (manifests/base/trainjob-rbac.yaml); the Secrets
imagelingo-s3 and imagelingo-mlflow in that namespace (the pods read them as env); the training
image, pullable from the nodes.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from decimal import Decimal
from pathlib import Path

from imagelingo.errors import ImageLingoError
from imagelingo.resume import inputs_digest

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime v2.1.0 and v2.3.0 install
# The Trainer releases whose TrainJob schema this module writes (../shared/cluster-reference
# README, R7: both v1alpha1). What differs for us: `spec.activeDeadlineSeconds` exists only from
# v2.3.0 (v2.3.0 CRD line 63; absent from v2.1.0's, whose spec has no such field), and
# numProcPerNode is int-or-string in v2.1.0 (lines 4196-4204) but int32 in v2.3.0 (line 5795):
# an integer fits both. The CRDs are in tests/fixtures/kubeflow-trainer/<version>/.
TRAINER_VERSIONS = ("v2.1.0", "v2.3.0")
DEADLINE_FROM = "v2.3.0"  # the first release with spec.activeDeadlineSeconds
# The job's deadline: under the train task's own pod deadline (the pipeline's TIMEOUTS["train"],
# 12 h), so that the task is still alive to delete a late job and fail with the reason.
DEADLINE_S = 11 * 3600
WORKDIR = "/tmp/imagelingo"  # in each pod: inputs, then the local model directory
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


def pod_command(inputs_uri: str, model_uri: str, settings: dict) -> list[str]:
    """What each pod runs: fetch the inputs, then torchrun (`python3 -m torch.distributed.run`;
    its --nnodes, --nproc-per-node, --node-rank and master come from the runtime's PET_*
    variables) over `imagelingo train`."""
    overrides = " ".join(
        shlex.quote(f"--param=train.{k}={_yaml_value(v)}") for k, v in settings.items()
    )
    script = (
        "set -e\n"
        f"python3 -m imagelingo.trainjob fetch {shlex.quote(inputs_uri)} {WORKDIR}\n"
        f"exec python3 -m torch.distributed.run -m imagelingo.cli {overrides} train"
        f" --dataset {WORKDIR}/dataset --vocab {WORKDIR}/vocab/vocab.json"
        f" --features {WORKDIR}/features --out {WORKDIR}/model"
        f" --checkpoint-uri {shlex.quote(model_uri)}\n"
    )
    return ["/bin/sh", "-c", script]


def _yaml_value(value) -> str:
    """`value` as `-p` parses it back (YAML): a float keeps its point (YAML reads 5e-05 as a
    string), a bool is true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else f"{text}.0"
    return str(value)


def render_trainjob(
    name: str,
    namespace: str,
    image: str,
    inputs_uri: str,
    model_uri: str,
    settings: dict,
    num_nodes: int = 1,
    procs_per_node: int = 1,
    cpu: str = "4",
    memory: str = "8Gi",
    gpus_per_node: int = 0,
    s3_secret: str = "imagelingo-s3",
    mlflow_secret: str = "imagelingo-mlflow",
    trainer_version: str = TRAINER_VERSIONS[-1],
    deadline_s: int = DEADLINE_S,
) -> dict:
    """The TrainJob for Kubeflow Trainer `trainer_version`: `num_nodes` pods x `procs_per_node`
    torchrun processes of `image`. From v2.3.0 on the controller itself fails the job after
    `deadline_s` (spec.activeDeadlineSeconds), so a job whose watching task died does not hold
    its nodes forever; v2.1.0 has no such field, there `run`'s own deadline deletes the job."""
    from imagelingo.tracking import CLUSTER_MARKER

    check_trainer_version(trainer_version)
    if num_nodes < 1 or procs_per_node < 1:
        raise ImageLingoError(
            f"a TrainJob needs at least 1 node and 1 process per node, got {num_nodes} x "
            f"{procs_per_node}"
        )
    if gpus_per_node and gpus_per_node != procs_per_node:
        raise ImageLingoError(
            f"{gpus_per_node} GPU(s) per node for {procs_per_node} process(es) per node: on GPUs "
            "each process takes the GPU of its LOCAL_RANK, so give as many processes as GPUs"
        )
    world = num_nodes * procs_per_node
    if settings.get("batch_size", 0) % world:
        raise ImageLingoError(
            f"train.batch_size {settings.get('batch_size')} is not divisible by the "
            f"{world} processes of {num_nodes} node(s) x {procs_per_node}"
        )
    limits = {"cpu": cpu, "memory": memory}
    if gpus_per_node:
        limits["nvidia.com/gpu"] = str(gpus_per_node)
    env = [
        *(
            {"name": key, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": key}}}
            for key in S3_SECRET_KEYS
        ),
        {
            "name": "MLFLOW_TRACKING_URI",
            "valueFrom": {"secretKeyRef": {"name": mlflow_secret, "key": "MLFLOW_TRACKING_URI"}},
        },
        # imagelingo.tracking: in a cluster pod, no silent local MLflow fallback
        {"name": CLUSTER_MARKER, "value": namespace},
        # torch's threads per process: the node's CPUs shared by its processes
        {"name": "OMP_NUM_THREADS", "value": str(max(1, _cpus(cpu) // procs_per_node))},
    ]
    spec = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": RUNTIME},
        "trainer": {
            "image": image,
            "command": pod_command(inputs_uri, model_uri, settings),
            "env": env,
            "numNodes": num_nodes,
            # an integer: v2.1.0 also takes "auto" (its runtime's default), v2.3.0 only int32
            "numProcPerNode": procs_per_node,
            "resourcesPerNode": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        },
    }
    if _release(trainer_version) >= _release(DEADLINE_FROM):
        spec["activeDeadlineSeconds"] = int(deadline_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "imagelingo",
                "imagelingo/stage": "train",
                "imagelingo/trainer-version": trainer_version,
            },
        },
        "spec": spec,
    }


def check_trainer_version(trainer_version: str) -> None:
    """Refuse a Trainer release whose TrainJob schema this module does not write, naming it and
    the supported ones ("" is a cluster without a Trainer: Kubeflow 1.10)."""
    if not trainer_version:
        raise ImageLingoError(
            "train_engine trainjob needs the Kubeflow Trainer (v2), and this pipeline was "
            "compiled for a Kubeflow without one (Kubeflow 1.10 ships only the training-operator "
            "v1.9.2): use train_engine=task, or compile for kubeflow-1.11"
        )
    if trainer_version not in TRAINER_VERSIONS:
        raise ImageLingoError(
            f"Kubeflow Trainer {trainer_version!r}: the TrainJob is written for "
            f"{', '.join(TRAINER_VERSIONS)}"
        )


def _release(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.lstrip("v").split("."))


def _cpus(quantity: str) -> int:
    quantity = str(quantity)
    return max(1, int(quantity[:-1]) // 1000) if quantity.endswith("m") else int(float(quantity))


def stage_inputs(
    dataset_dir: Path, vocab_dir: Path, features_dir: Path, inputs_uri: str, endpoint=None
) -> None:
    """Upload the three artifacts the job reads (once: a retried task finds them there)."""
    from imagelingo.storage import upload_dir

    for name, local in (("dataset", dataset_dir), ("vocab", vocab_dir), ("features", features_dir)):
        upload_dir(Path(local), f"{inputs_uri.rstrip('/')}/{name}", endpoint)


def conditions(job: dict) -> dict[str, dict]:
    return {c["type"]: c for c in job.get("status", {}).get("conditions", [])}


def run(api, body: dict, poll_s: float = 15, timeout_s: float = 12 * 3600) -> dict:
    """Create the TrainJob (or find the one a previous attempt created), wait until it is
    Complete, log every new condition; a Failed job is an error with its reason. `api` is an
    imagelingo.deploy.KubeApi."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    what = f"TrainJob {namespace}/{name}"
    args = (GROUP, VERSION, namespace, PLURAL)
    existing = api._call(
        what, api.custom.get_namespaced_custom_object, *args, name, missing_ok=True
    )
    if existing is not None and "Failed" in _true(existing):
        log.info("%s failed before: deleting it, the new one resumes from the checkpoint", what)
        api._call(what, api.custom.delete_namespaced_custom_object, *args, name)
        existing = None
        _wait_gone(api, args, name, what, poll_s)
    if existing is None:
        api._call(what, api.custom.create_namespaced_custom_object, *args, body)
        log.info("created %s (%s)", what, body["spec"]["runtimeRef"]["name"])
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        job = api._call(what, api.custom.get_namespaced_custom_object, *args, name)
        for kind, condition in conditions(job).items():
            key = (kind, condition.get("status", ""))
            if key not in seen:
                seen.add(key)
                log.info(
                    "%s: %s=%s %s %s",
                    what,
                    kind,
                    condition.get("status"),
                    condition.get("reason", ""),
                    condition.get("message", ""),
                )
        done = _true(job)
        if "Complete" in done:
            return job
        if "Failed" in done:
            condition = conditions(job)["Failed"]
            raise ImageLingoError(
                f"{what} failed: {condition.get('reason', '')} {condition.get('message', '')}"
                f" (kubectl logs -n {namespace} -l jobset.sigs.k8s.io/jobset-name={name})"
            )
        if time.monotonic() > deadline:
            # not left running on its nodes (Trainer v2.1.0 has no activeDeadlineSeconds); a
            # retried task creates it again and it resumes from the checkpoint
            api._call(what, api.custom.delete_namespaced_custom_object, *args, name)
            raise ImageLingoError(f"{what}: not Complete after {timeout_s:.0f} s: deleted it")
        time.sleep(poll_s)


def _true(job: dict) -> set[str]:
    return {kind for kind, c in conditions(job).items() if c.get("status") == "True"}


def _wait_gone(api, args, name: str, what: str, poll_s: float) -> None:
    for _ in range(120):
        if api._call(what, api.custom.get_namespaced_custom_object, *args, name, missing_ok=True):
            time.sleep(poll_s)
        else:
            return
    raise ImageLingoError(f"{what}: still there after deleting it")


def train_on_kubeflow(
    dataset_dir: Path,
    vocab_dir: Path,
    features_dir: Path,
    out_dir: Path,
    settings: dict,
    checkpoint_root: str,
    image: str,
    nodes: int = 1,
    procs_per_node: int = 1,
    gpus_per_node: int = 0,
    namespace: str | None = None,
    api=None,
    poll_s: float = 15,
    trainer_version: str = TRAINER_VERSIONS[-1],
    deadline_s: int = DEADLINE_S,
) -> tuple[dict, str]:
    """What the pipeline's train task does with train_engine=trainjob: stage the inputs on S3,
    run the TrainJob (written for Kubeflow Trainer `trainer_version`), copy the model it wrote
    into `out_dir`. Returns (its metadata record, the model's S3 prefix)."""
    import os

    from imagelingo.artifacts import CROSS_ENTROPY_DIR, read_metadata
    from imagelingo.storage import get_files
    from imagelingo.tracking import CLUSTER_MARKER

    check_trainer_version(trainer_version)  # before anything is uploaded
    if not checkpoint_root.startswith("s3://"):
        raise ImageLingoError(
            f"train_engine trainjob needs checkpoint_root on S3 (s3://bucket/prefix), got "
            f"{checkpoint_root!r}: the job's pods read their inputs and write the model there"
        )
    key = inputs_digest(dataset_dir, Path(vocab_dir) / "vocab.json", features_dir, settings)
    base = f"{checkpoint_root.rstrip('/')}/trainjob-{key}"
    inputs_uri, model_uri = f"{base}/inputs", f"{base}/model"
    namespace = namespace or os.environ.get(CLUSTER_MARKER) or _pod_namespace()
    stage_inputs(dataset_dir, vocab_dir, features_dir, inputs_uri)
    body = render_trainjob(
        f"imagelingo-train-{key}",
        namespace,
        image,
        inputs_uri,
        model_uri,
        settings,
        num_nodes=nodes,
        procs_per_node=procs_per_node,
        gpus_per_node=gpus_per_node,
        trainer_version=trainer_version,
        deadline_s=deadline_s,
    )
    if api is None:
        from imagelingo.deploy import KubeApi

        api = KubeApi()
    run(api, body, poll_s=poll_s, timeout_s=deadline_s)
    copied = get_files(model_uri, out_dir)
    missing = {"decoder.safetensors", "config.json", "vocab.json", "metadata.json"} - set(copied)
    if missing:
        raise ImageLingoError(f"{model_uri}: the TrainJob finished without {sorted(missing)}")
    # after SCST, the cross-entropy model it started from (nothing there when SCST was off)
    get_files(f"{model_uri}/{CROSS_ENTROPY_DIR}", Path(out_dir) / CROSS_ENTROPY_DIR)
    return read_metadata(out_dir), model_uri


def _pod_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if not path.is_file():
        raise ImageLingoError("the TrainJob's namespace: not in a pod, pass namespace=")
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    """`python -m imagelingo.trainjob fetch S3_PREFIX DIR`: a pod's inputs, before torchrun."""
    from imagelingo.storage import download_prefix

    parser = argparse.ArgumentParser(prog="python -m imagelingo.trainjob")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download an s3:// prefix into a folder")
    fetch.add_argument("uri")
    fetch.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    download_prefix(args.uri, args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
