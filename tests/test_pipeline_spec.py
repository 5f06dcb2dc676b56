"""The compiled KFP specs: in sync with the code, load back, name the configured images, and
expose the documented parameters and typed artifacts. Offline: no cluster, no run."""

import os
import subprocess
import sys

import pytest
import yaml
from kfp import components as kfp_components

from imagelingo.config import REPO_ROOT
from imagelingo.orchestration import PIPELINE_YAML, STAGES, compile_all

COMMITTED = [REPO_ROOT / "components" / s / "component.yaml" for s in STAGES] + [PIPELINE_YAML]


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


def test_every_component_names_the_default_images():
    images = executors(documents(PIPELINE_YAML)[0])
    assert len(images) == len(STAGES)
    for name, image in images.items():
        expected = "imagelingo-deploy:0.1.0" if "deploy" in name else "imagelingo:0.1.0"
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
    images = executors(documents(tmp_path / "pipelines" / "imagelingo_pipeline.yaml")[0])
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
    images = executors(documents(tmp_path / "pipelines" / "imagelingo_pipeline.yaml")[0])
    assert {images[n] for n in images if "deploy" not in n} == {"registry.local/il:7"}
    assert [images[n] for n in images if "deploy" in n] == ["r/d:7"]


def test_pipeline_parameters_and_artifact_types_are_as_documented():
    spec, _ = documents(PIPELINE_YAML)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("source", "encoder", "epochs", "lr", "min_score", "deploy_target"):
        assert name in parameters
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


def test_gate_retries_and_resources_are_in_the_spec():
    spec, _ = documents(PIPELINE_YAML)
    tasks = spec["root"]["dag"]["tasks"]
    gate = tasks[gate_task(spec)]
    assert gate["taskInfo"]["name"] == "quality-gate"
    condition = gate["triggerPolicy"]["condition"]
    assert "evaluate" in condition and "min_score" in condition
    gated = spec["components"][f"comp-{gate_task(spec)}"]["dag"]["tasks"]
    assert set(gated) == {"package", "deploy"}
    for task in ("ingest",):
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 3
    assert gated["deploy"]["retryPolicy"]["maxRetryCount"] == 3
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


def test_caching_data_changes_rerun_ingest_and_deploy_is_never_cached():
    """KFP's cache key is the task's inputs: ingest's includes data_fingerprint (the data, not
    only the source string), and deploy, which has side effects, is never served from cache."""
    spec, _ = documents(PIPELINE_YAML)
    tasks = all_tasks(spec)
    assert tasks["deploy"]["cachingOptions"].get("enableCache", False) is False
    for name in ("ingest", "vocab", "features", "train", "evaluate", "package"):
        assert tasks[name]["cachingOptions"]["enableCache"] is True, name
    ingest_inputs = tasks["ingest"]["inputs"]["parameters"]
    assert ingest_inputs["data_fingerprint"] == {"componentInputParameter": "data_fingerprint"}
    assert "data_fingerprint" in spec["root"]["inputDefinitions"]["parameters"]


MLFLOW_TASKS = {"train", "evaluate", "deploy"}
SECRETS = {
    "ingest": {"imagelingo-s3"},
    "vocab": set(),
    "features": set(),
    "train": {"imagelingo-s3", "imagelingo-mlflow"},
    "evaluate": {"imagelingo-s3", "imagelingo-mlflow"},
    "package": set(),
    "deploy": {"imagelingo-s3", "imagelingo-mlflow"},
}


def test_secrets_are_required_where_needed_and_mlflow_tasks_know_they_run_on_a_cluster():
    _, platform = documents(PIPELINE_YAML)
    executors = platform["deploymentSpec"]["executors"]
    for stage, expected in SECRETS.items():
        executor = executors.get(f"exec-{stage}", {})
        secrets = executor.get("secretAsEnv", [])
        assert {s["secretName"] for s in secrets} == expected, stage
        assert all(s["optional"] is False for s in secrets), stage
        marker = [e for e in executor.get("fieldPathAsEnv", [])]
        if stage in MLFLOW_TASKS:
            assert marker == [
                {"name": "IMAGELINGO_POD_NAMESPACE", "fieldPath": "metadata.namespace"}
            ], stage
        else:
            assert not marker, stage


def test_pod_settings_deadlines_shm_scratch_and_a_resuming_train_retry():
    spec, platform = documents(PIPELINE_YAML)
    executors = platform["deploymentSpec"]["executors"]
    for stage in STAGES:
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


def test_no_task_mounts_over_the_launchers_own_volumes():
    _, platform = documents(PIPELINE_YAML)
    for name, executor in platform["deploymentSpec"]["executors"].items():
        paths = [
            mount["mountPath"]
            for key, mounts in executor.items()
            if isinstance(mounts, list)
            for mount in mounts
            if isinstance(mount, dict) and "mountPath" in mount
        ]
        unmounted = ("exec-vocab", "exec-merge", "exec-package", "exec-evaluate", "exec-deploy")
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
