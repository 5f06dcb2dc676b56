"""The compiled KFP specs: in sync with the code, load back, name the configured images, and
expose the documented parameters and typed artifacts. Offline: no cluster, no run."""

import os
import subprocess
import sys

import pytest
import yaml
from kfp import components as kfp_components

from imagelingo.cluster.platforms import DEFAULT_TARGET, TARGETS
from imagelingo.config import REPO_ROOT
from imagelingo.orchestration import PIPELINES, STAGES, compile_all

TARGET_YAML = {name: PIPELINES / t.pipeline_file for name, t in TARGETS.items()}
COMMITTED = [REPO_ROOT / "components" / s / "component.yaml" for s in STAGES]
COMMITTED += list(TARGET_YAML.values())
DEFAULT_FILE = TARGETS[DEFAULT_TARGET].pipeline_file


@pytest.fixture(params=list(TARGETS))
def target(request):
    """Each supported target: its name, its Target and its committed pipeline YAML."""
    return request.param, TARGETS[request.param], TARGET_YAML[request.param]


def test_committed_yaml_is_what_the_code_compiles_to(tmp_path):
    fresh = compile_all(tmp_path)
    for committed, compiled in zip(COMMITTED, fresh, strict=True):
        assert committed.read_text() == compiled.read_text(), (
            f"{committed.relative_to(REPO_ROOT)} is stale: run `imagelingo compile`"
        )


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_specs_load_back_with_kfp(path):
    component = kfp_components.load_component_from_file(str(path))
    assert component.name


def documents(path) -> tuple[dict, dict]:
    """The pipeline spec and its Kubernetes platform spec (kfp-kubernetes)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]


def executors(spec: dict) -> dict[str, str]:
    return {
        name: executor["container"]["image"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }


def on_deploy_image(executor: str) -> bool:
    """release and deploy need mlflow/kserve, not torch: the deploy image."""
    return executor in ("exec-deploy", "exec-release")


def test_every_component_names_the_default_images(target):
    name, chosen, path = target
    images = executors(documents(path)[0])
    assert len(images) == len(STAGES) - (0 if chosen.fan_in else 1)  # merge: only with fan-in
    for name, image in images.items():
        expected = "imagelingo-deploy:0.1.0" if on_deploy_image(name) else "imagelingo:0.1.0"
        assert image == f"ghcr.io/imagelingo/{expected}", (name, image)


def test_images_pinned_by_digest_are_what_the_pipeline_names(tmp_path):
    """What images.yml does after pushing: compile with name:tag@sha256 references."""
    digest = "sha256:" + "ab" * 32
    code = (
        "import sys; from pathlib import Path; "
        "from imagelingo.orchestration import compile_all; compile_all(Path(sys.argv[1]))"
    )
    env = {
        **os.environ,
        "IMAGELINGO_IMAGE": f"ghcr.io/me/imagelingo:0.1.0@{digest}",
        "IMAGELINGO_DEPLOY_IMAGE": f"ghcr.io/me/imagelingo-deploy:0.1.0@{digest}",
    }
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True)
    images = executors(documents(tmp_path / "pipelines" / DEFAULT_FILE)[0])
    assert all(image.endswith(f":0.1.0@{digest}") for image in images.values())
    env["IMAGELINGO_IMAGE"] = "not an image"
    bad = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True)
    assert bad.returncode != 0 and b"not an image reference" in bad.stderr


def test_images_are_configurable_at_compile_time(tmp_path):
    code = (
        "import sys; from pathlib import Path; "
        "from imagelingo.orchestration import compile_all; compile_all(Path(sys.argv[1]))"
    )
    env = {
        **os.environ,
        "IMAGELINGO_IMAGE": "registry.local/il:7",
        "IMAGELINGO_DEPLOY_IMAGE": "r/d:7",
    }
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True)
    images = executors(documents(tmp_path / "pipelines" / DEFAULT_FILE)[0])
    assert {images[n] for n in images if not on_deploy_image(n)} == {"registry.local/il:7"}
    assert {images[n] for n in images if on_deploy_image(n)} == {"r/d:7"}


def test_pipeline_parameters_and_artifact_types_are_as_documented(target):
    spec, _ = documents(target[2])
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("source", "encoder", "epochs", "lr", "min_score", "gate_margin", "deploy_target"):
        assert name in parameters
    # strings: the driver resolves accelerator placeholders with GetStringValue (kfp_rules)
    assert parameters["accelerator_count"]["parameterType"] == "STRING"
    assert parameters["accelerator_count"]["defaultValue"] == "0"
    assert parameters["canary_traffic_percent"]["defaultValue"] == -1
    outputs = {
        name: {
            k: v["artifactType"]["schemaTitle"]
            for k, v in c.get("outputDefinitions", {}).get("artifacts", {}).items()
        }
        for name, c in spec["components"].items()
    }
    assert outputs["comp-evaluate"] == {
        "evaluation": "system.Artifact",
        "metrics": "system.Metrics",
        "report": "system.HTML",
    }
    assert outputs["comp-train"] == {"model": "system.Model"}
    assert outputs["comp-ingest"] == {"dataset": "system.Dataset"}
    assert outputs["comp-package"] == {"model_store": "system.Model"}
    assert outputs["comp-release"] == {
        "registration": "system.Artifact",
        "links": "system.Markdown",
    }


def test_gate_retries_and_resources_are_in_the_spec(target):
    _, chosen, path = target
    spec, _ = documents(path)
    tasks = spec["root"]["dag"]["tasks"]
    gate = tasks[gate_task(spec)]
    assert gate["taskInfo"]["name"] == "quality-gate"
    condition = gate["triggerPolicy"]["condition"]
    assert "release" in condition and "true" in condition
    gated = spec["components"][f"comp-{gate_task(spec)}"]["dag"]["tasks"]
    assert set(gated) == {"package", "deploy"}
    for task in ("ingest",):
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 3
    # a retry inside the gate only where the backend honours it (kfp_rules.nested_retry_problems)
    assert ("retryPolicy" in gated["deploy"]) is chosen.nested_retry
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["cpuRequest"] and train["memoryLimit"]


def gate_task(spec: dict) -> str:
    """The dsl.If group's task: condition-N, N counting the groups (the features ParallelFor)
    compiled before it."""
    tasks = spec["root"]["dag"]["tasks"]
    return next(name for name, task in tasks.items() if task["taskInfo"]["name"] == "quality-gate")


def all_tasks(spec: dict) -> dict:
    """Every task by name: the root DAG's and those in sub-DAGs (the gate, the feature shards)."""
    nested = [c["dag"]["tasks"] for c in spec["components"].values() if "dag" in c]
    return {k: v for tasks in [spec["root"]["dag"]["tasks"], *nested] for k, v in tasks.items()}


def test_caching_data_changes_rerun_ingest_and_side_effects_are_never_cached(target):
    """KFP's cache key is the task's inputs: ingest's includes the fingerprint task's answer
    (the data, not only the source string); the fingerprint, the release (registry, gate) and
    deploy are never served from cache."""
    spec, _ = documents(target[2])
    tasks = all_tasks(spec)
    for name in ("fingerprint", "release", "deploy"):
        assert tasks[name]["cachingOptions"].get("enableCache", False) is False, name
    for name in ("ingest", "vocab", "features", "train", "evaluate", "package"):
        assert tasks[name]["cachingOptions"]["enableCache"] is True, name
    ingest_inputs = tasks["ingest"]["inputs"]["parameters"]
    fed = ingest_inputs["data_fingerprint"]["taskOutputParameter"]
    assert fed == {"producerTask": "fingerprint", "outputParameterKey": "Output"}
    assert "data_fingerprint" not in spec["root"]["inputDefinitions"]["parameters"]


MLFLOW_TASKS = {"train", "evaluate", "release", "deploy"}
SECRETS = {
    "fingerprint": {"imagelingo-s3"},
    "ingest": {"imagelingo-s3"},
    "vocab": set(),
    "features": set(),
    "train": {"imagelingo-s3", "imagelingo-mlflow"},
    "evaluate": {"imagelingo-s3", "imagelingo-mlflow"},
    "release": {"imagelingo-s3", "imagelingo-mlflow"},
    "package": set(),
    "deploy": {"imagelingo-s3", "imagelingo-mlflow"},
}


def test_secrets_are_required_where_needed_and_mlflow_tasks_know_they_run_on_a_cluster(target):
    _, chosen, path = target
    _, platform = documents(path)
    executors = platform["deploymentSpec"]["executors"]
    for stage, expected in SECRETS.items():
        executor = executors.get(f"exec-{stage}", {})
        secrets = executor.get("secretAsEnv", [])
        assert {s["secretName"] for s in secrets} == expected, stage
        # required: `optional: false` where the proto has the field, no field (required) before
        assert all(s.get("optional", False) is False for s in secrets), stage
        assert all(("optional" in s) is (chosen.kfp_backend != "2.5.0") for s in secrets)
        marker = [e for e in executor.get("fieldPathAsEnv", [])]
        if stage in MLFLOW_TASKS:
            assert marker == [
                {"name": "IMAGELINGO_POD_NAMESPACE", "fieldPath": "metadata.namespace"}
            ], stage
        else:
            assert not marker, stage


def test_pod_settings_deadlines_shm_scratch_and_a_resuming_train_retry(target):
    spec, platform = documents(target[2])
    executors = platform["deploymentSpec"]["executors"]
    for stage in STAGES:
        if stage == "merge" and not target[1].fan_in:
            continue
        assert int(executors[f"exec-{stage}"]["activeDeadlineSeconds"]) > 0, stage
    for stage in ("features", "train"):
        mounts = {m["mountPath"]: m for m in executors[f"exec-{stage}"]["emptyDirMounts"]}
        assert mounts["/dev/shm"]["medium"] == "Memory", stage
        assert mounts["/tmp"]["sizeLimit"], stage
    assert executors["exec-ingest"]["emptyDirMounts"][0]["mountPath"] == "/tmp"
    tasks = all_tasks(spec)
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] >= 1
    assert tasks["train"]["inputs"]["parameters"]["checkpoint_root"] == {
        "componentInputParameter": "checkpoint_root"
    }


# What KFP's backend (2.1 and later, kubeflow/pipelines#10538; argocompiler/container.go) mounts
# into every task pod itself: emptyDirs where the launcher copies input and output artifacts
# (/gcs, /s3, /minio: the large ones live there, not on the container's root filesystem) and pip's
# home dirs, plus the launcher binary. A task volume mounted at one of these paths again makes the
# pod invalid (duplicate mountPath), so none of ours may.
LAUNCHER_MOUNTS = ("/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config", "/kfp-launcher")


def test_no_task_mounts_over_the_launchers_own_volumes(target):
    _, platform = documents(target[2])
    for name, executor in platform["deploymentSpec"]["executors"].items():
        paths = [
            mount["mountPath"]
            for key, mounts in executor.items()
            if isinstance(mounts, list)
            for mount in mounts
            if isinstance(mount, dict) and "mountPath" in mount
        ]
        unmounted = ("exec-vocab", "exec-merge", "exec-package", "exec-evaluate", "exec-deploy")
        unmounted += ("exec-fingerprint", "exec-release")
        assert paths or name in unmounted
        for path in paths:
            clash = [p for p in LAUNCHER_MOUNTS if path == p or path.startswith(p + "/")]
            assert not clash, f"{name} mounts {path} over the KFP launcher's {clash[0]}"


def test_a_retried_train_attempt_gets_the_same_checkpoint_location(pipeline_dirs, tmp_path):
    """What the train component derives from checkpoint_root: one location per training
    (stable across attempts), another for other inputs or settings."""
    from imagelingo.train import TrainConfig, checkpoint_location

    args = (pipeline_dirs["dataset"], pipeline_dirs["vocab"] / "vocab.json")
    args += (pipeline_dirs["features"],)
    first = checkpoint_location("s3://b/ckpt", *args, TrainConfig(seed=1))
    assert first == checkpoint_location("s3://b/ckpt/", *args, TrainConfig(seed=1))
    assert first.startswith("s3://b/ckpt/")
    assert first == checkpoint_location("s3://b/ckpt", *args, TrainConfig(seed=1, epochs=99))
    assert first != checkpoint_location("s3://b/ckpt", *args, TrainConfig(seed=2))
