"""The Kubeflow Trainer engine (imagelingo.trainjob): the TrainJob written for each supported
Trainer release (v2.1.0, Kubeflow 1.11's; v2.3.0, the newest) is valid against that release's CRD
schema (tests/trainer_crds.py, exact upstream copies), names the runtime that exists, runs
`imagelingo train` with exactly the task's settings under torchrun, and the task waits for it,
logs its conditions and fails with the job's reason. No cluster: the Kubernetes API is a stub that
answers from a list of states."""

from __future__ import annotations

import copy
import dataclasses
import shlex
import sys

import pytest
import trainer_crds
import yaml

from imagelingo.cli import build_parser, resolve_params
from imagelingo.cluster.platforms import TARGETS
from imagelingo.config import REPO_ROOT, from_params
from imagelingo.errors import ImageLingoError
from imagelingo.train import TrainConfig
from imagelingo.trainjob import (
    TRAINER_VERSIONS,
    pod_command,
    render_trainjob,
    run,
    train_on_kubeflow,
)

# the pipeline and component modules import from the repository root (pipelines/, components/),
# which a run of this file alone does not have on sys.path
sys.path.insert(0, str(REPO_ROOT))

SETTINGS = dataclasses.asdict(TrainConfig())


def job(**kwargs) -> dict:
    args = {
        "name": "imagelingo-train-0123456789abcdef",
        "namespace": "kubeflow-user",
        "image": "ghcr.io/imagelingo/imagelingo:0.1.0",
        "inputs_uri": "s3://bucket/ckpt/trainjob-0123456789abcdef/inputs",
        "model_uri": "s3://bucket/ckpt/trainjob-0123456789abcdef/model",
        "settings": SETTINGS,
        **kwargs,
    }
    return render_trainjob(**args)


def test_the_supported_trainers_are_the_fixtures_and_cover_every_target():
    assert TRAINER_VERSIONS == trainer_crds.VERSIONS == ("v2.1.0", "v2.3.0")
    # every Kubeflow release that installs a Trainer gets a TrainJob written for it
    assert {t.trainer for t in TARGETS.values() if t.trainer} <= set(TRAINER_VERSIONS)


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"num_nodes": 4, "procs_per_node": 2},
        {"num_nodes": 2, "procs_per_node": 4, "gpus_per_node": 4, "cpu": "16", "memory": "64Gi"},
    ],
)
def test_the_trainjob_is_valid_against_its_trainers_crd(version, shape):
    document = job(trainer_version=version, **shape)
    assert trainer_crds.errors(document, version) == []
    trainer = document["spec"]["trainer"]
    assert trainer["numNodes"] == shape.get("num_nodes", 1)
    assert trainer["numProcPerNode"] == shape.get("procs_per_node", 1)


def test_the_deadline_is_the_controllers_from_v2_3_and_absent_before():
    assert job(trainer_version="v2.3.0", deadline_s=3600)["spec"]["activeDeadlineSeconds"] == 3600
    assert "activeDeadlineSeconds" not in job(trainer_version="v2.1.0")["spec"]


def test_a_v2_3_trainjob_does_not_fit_v2_1_and_an_auto_one_not_v2_3():
    """The check can fail: what one release's schema has and the other's lacks (cluster-reference
    README, R7) is an error against the other."""
    newest = job(trainer_version="v2.3.0")
    found = trainer_crds.errors(newest, "v2.1.0")
    assert any("activeDeadlineSeconds" in e for e in found), found
    auto = job(trainer_version="v2.1.0")
    auto["spec"]["trainer"]["numProcPerNode"] = "auto"  # v2.1.0's int-or-string
    assert trainer_crds.errors(auto, "v2.1.0") == []
    found = trainer_crds.errors(auto, "v2.3.0")
    assert any("numProcPerNode" in e and "integer" in e for e in found), found


def test_an_unknown_or_missing_trainer_is_refused_by_name():
    with pytest.raises(ImageLingoError, match=r"'v2\.2\.0'.*v2\.1\.0, v2\.3\.0"):
        job(trainer_version="v2.2.0")
    with pytest.raises(ImageLingoError, match="Kubeflow 1.10 ships only the training-operator"):
        job(trainer_version="")


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_the_validator_rejects_what_the_api_server_rejects(version):
    bad = copy.deepcopy(job(trainer_version=version))
    bad["spec"]["trainer"]["numNodes"] = "2"  # a string where the CRD says integer
    bad["spec"]["trainer"]["replicas"] = 2  # no such field: strict field validation rejects it
    del bad["spec"]["runtimeRef"]  # required
    found = trainer_crds.errors(bad, version)
    assert any("numNodes" in e and "integer" in e for e in found), found
    assert any("replicas" in e for e in found), found
    assert any("runtimeRef" in e for e in found), found


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_it_names_the_torch_distributed_cluster_runtime_and_sets_no_reserved_env(version):
    fixture = trainer_crds.fixtures(version) / "torch_distributed.yaml"
    runtime = yaml.safe_load(fixture.read_text())
    ref = job(trainer_version=version)["spec"]["runtimeRef"]
    assert (ref["kind"], ref["name"]) == (runtime["kind"], runtime["metadata"]["name"])
    assert "torch" in runtime["spec"]["mlPolicy"]  # the runtime that sets PET_* for torchrun
    # the controller rejects a TrainJob setting its PET_* names (README facts, 5)
    names = {e["name"] for e in job()["spec"]["trainer"]["env"]}
    assert not {n for n in names if n.startswith("PET_")}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"} <= names


def test_the_pod_runs_imagelingo_train_with_the_tasks_settings_under_torchrun():
    changed = {**SETTINGS, "lr": 5e-05, "batch_size": 128, "device": "cuda", "dropout": 0.25}
    shell, flag, script = pod_command("s3://b/in", "s3://b/model", changed)
    assert (shell, flag) == ("/bin/sh", "-c")
    fetch, launch = [shlex.split(line) for line in script.strip().splitlines()[1:]]
    assert fetch == [
        "python3",
        "-m",
        "imagelingo.trainjob",
        "fetch",
        "s3://b/in",
        "/tmp/imagelingo",
    ]
    assert launch[:5] == ["exec", "python3", "-m", "torch.distributed.run", "-m"]
    # no --nnodes/--nproc-per-node: torchrun takes them from the runtime's PET_* variables
    argv = launch[launch.index("imagelingo.cli") + 1 :]
    args = build_parser().parse_args(argv)
    assert args.command == "train" and args.checkpoint_uri == "s3://b/model"
    assert dataclasses.asdict(from_params(TrainConfig, resolve_params(args))) == changed


def test_shapes_that_cannot_work_are_refused():
    with pytest.raises(ImageLingoError, match="not divisible by the 3 processes"):
        job(num_nodes=3, procs_per_node=1)
    with pytest.raises(ImageLingoError, match="as many processes as GPUs"):
        job(procs_per_node=1, gpus_per_node=2)


class StubApi:
    """imagelingo.deploy.KubeApi's surface that trainjob uses; `states` are what successive GETs
    of the TrainJob return (None: 404)."""

    def __init__(self, states):
        self.states, self.created, self.deleted = list(states), [], []
        self.custom = self

    def _call(self, what, fn, *args, missing_ok=False):
        return fn(*args)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(body)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)


def state(*conditions):
    return {"status": {"conditions": [{"type": t, "status": "True", **c} for t, c in conditions]}}


def test_run_creates_the_job_and_waits_until_complete(caplog):
    api = StubApi([None, state(), state(("Created", {})), state(("Complete", {"reason": "Done"}))])
    with caplog.at_level("INFO", logger="imagelingo.trainjob"):
        run(api, job(), poll_s=0)
    assert len(api.created) == 1
    assert "Complete=True Done" in caplog.text


def test_a_failed_job_fails_the_task_with_its_reason():
    failed = state(("Failed", {"reason": "DeadlineExceeded", "message": "took too long"}))
    api = StubApi([None, failed])
    with pytest.raises(ImageLingoError, match="DeadlineExceeded took too long.*kubectl logs"):
        run(api, job(), poll_s=0)


def test_a_retried_task_replaces_a_failed_job_and_waits_on_a_running_one():
    failed = state(("Failed", {"reason": "x"}))
    api = StubApi([failed, None, state(("Complete", {}))])
    run(api, job(), poll_s=0)
    assert api.deleted == ["imagelingo-train-0123456789abcdef"] and len(api.created) == 1
    running = StubApi([state(("Created", {})), state(("Complete", {}))])
    run(running, job(), poll_s=0)
    assert running.created == []  # the previous attempt's job, not a second one


def test_a_job_past_the_tasks_deadline_is_deleted_not_left_on_its_nodes():
    api = StubApi([None, state(("Created", {}))])
    with pytest.raises(ImageLingoError, match="not Complete after 0 s: deleted it"):
        run(api, job(trainer_version="v2.1.0"), poll_s=0, timeout_s=0)
    assert api.deleted == ["imagelingo-train-0123456789abcdef"]


def test_the_job_ends_before_the_task_that_watches_it():
    from imagelingo.trainjob import DEADLINE_S
    from pipelines.imagelingo_pipeline import TIMEOUTS

    assert TIMEOUTS["train"] > DEADLINE_S  # else the pod dies first and nobody deletes the job
    assert job(trainer_version="v2.3.0")["spec"]["activeDeadlineSeconds"] == DEADLINE_S


def test_the_train_task_refuses_the_trainjob_engine_without_a_trainer(tmp_path):
    """Compiled for Kubeflow 1.10 (trainer_version ""), engine trainjob fails with the reason and
    the way out, before anything is uploaded or created."""
    from types import SimpleNamespace

    from components.train.component import train

    folder = SimpleNamespace(path=str(tmp_path))
    args = dict(dataset=folder, vocab=folder, features=folder, model=folder, **SETTINGS)
    engine = dict(engine="trainjob", nodes=1, procs_per_node=1, gpus_per_node=0, image="i")
    with pytest.raises(
        ImageLingoError, match=r"ships only the training-operator v1\.9\.2\): use train_engine=task"
    ):
        train.python_func(**args, **engine, checkpoint_root="s3://b/c", trainer_version="")
    # and on Kubeflow 1.11 it goes on to the Trainer (here: stops at the S3 requirement)
    with pytest.raises(ImageLingoError, match="needs checkpoint_root on S3"):
        train.python_func(**args, **engine, checkpoint_root="", trainer_version="v2.1.0")


def test_the_engine_needs_checkpoint_root_on_s3(tmp_path):
    with pytest.raises(ImageLingoError, match="needs checkpoint_root on S3"):
        train_on_kubeflow(tmp_path, tmp_path, tmp_path, tmp_path / "model", SETTINGS, "", image="i")


def test_the_rbac_role_allows_the_calls_the_task_makes():
    from imagelingo.config import REPO_ROOT

    role = next(
        yaml.safe_load_all((REPO_ROOT / "manifests" / "trainjob" / "rbac.yaml").read_text())
    )
    (rule,) = role["rules"]
    assert (rule["apiGroups"], rule["resources"]) == (["trainer.kubeflow.org"], ["trainjobs"])
    # run(): get (follow, find a previous attempt's), create, delete (a failed one, on retry)
    assert {"get", "create", "delete"} <= set(rule["verbs"])


def compiled_pipeline(target: str) -> dict:
    from imagelingo.cluster.platforms import TARGETS
    from imagelingo.orchestration import PIPELINES

    return next(yaml.safe_load_all((PIPELINES / TARGETS[target].pipeline_file).read_text()))


@pytest.mark.parametrize("target", ["kubeflow-1.10", "kubeflow-1.11"])
def test_the_gpu_request_and_the_engine_are_chosen_per_run(target):
    spec = compiled_pipeline(target)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    # CPU unless a run asks: count "0" (a 0 limit of nvidia.com/gpu requests nothing); a string,
    # which is what the KFP driver resolves (imagelingo.cluster.kfp_rules)
    assert parameters["accelerator_count"]["defaultValue"] == "0"
    assert parameters["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"
    assert parameters["train_engine"]["defaultValue"] == "task"
    for stage in ("features", "train"):
        resources = spec["deploymentSpec"]["executors"][f"exec-{stage}"]["container"]["resources"]
        assert resources["accelerator"] == {
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}",
            "resourceType": "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}",
        }
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    for task_input, parameter in (
        ("engine", "train_engine"),
        ("nodes", "train_nodes"),
        ("procs_per_node", "train_procs_per_node"),
        ("gpus_per_node", "train_gpus_per_node"),
    ):
        assert train[task_input] == {"componentInputParameter": parameter}
    assert train["image"]["runtimeValue"]["constant"].split("/")[-1].startswith("imagelingo:")
    # the Trainer the target's Kubeflow installs: none on 1.10 (trainjob refuses there)
    trainer = {"kubeflow-1.10": "", "kubeflow-1.11": "v2.1.0"}[target]
    assert train["trainer_version"] == {"runtimeValue": {"constant": trainer}}


def test_the_task_copies_back_the_model_and_the_cross_entropy_model_beside_it(s3_server, tmp_path):
    """What rank 0 of the job left under <key>/model/ (after SCST: the SCST model, and the CE
    model it started from in cross_entropy/) is what the task's Model artifact holds."""
    import json

    import boto3

    from imagelingo.resume import inputs_digest

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="ckpt")
    dataset, vocab, features = (tmp_path / d for d in ("dataset", "vocab", "features"))
    for folder, name in ((dataset, "captions.jsonl"), (vocab, "vocab.json"), (features, "x")):
        folder.mkdir()
        (folder / name).write_text("{}\n")
    key = inputs_digest(dataset, vocab / "vocab.json", features, SETTINGS)
    model = f"root/trainjob-{key}/model"
    files = ("decoder.safetensors", "config.json", "vocab.json")
    for name in (*files, "metadata.json"):
        body = json.dumps({"stage": "train", "phase": "scst"}) if name == "metadata.json" else name
        s3.put_object(Bucket="ckpt", Key=f"{model}/{name}", Body=body.encode())
    for name in files:
        s3.put_object(
            Bucket="ckpt", Key=f"{model}/cross_entropy/{name}", Body=b"ce " + name.encode()
        )
    api = StubApi([None, state(("Complete", {}))])

    out = tmp_path / "out"
    record, uri = train_on_kubeflow(
        dataset,
        vocab,
        features,
        out,
        SETTINGS,
        "s3://ckpt/root",
        "i",
        namespace="ns",
        api=api,
        poll_s=0,
    )
    assert uri == f"s3://ckpt/{model}" and record["phase"] == "scst"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*files, "metadata.json", "cross_entropy"]
    )
    assert (out / "cross_entropy" / "config.json").read_text() == "ce config.json"
    assert s3.list_objects_v2(Bucket="ckpt", Prefix=f"root/trainjob-{key}/inputs/")["KeyCount"] == 3
