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
        expected = "imagelingo-deploy" if "deploy" in name else "imagelingo:"
        assert image.startswith("ghcr.io/imagelingo/") and expected in image, (name, image)


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
    for name in ("source", "encoder", "epochs", "lr", "min_bleu4", "deploy_target"):
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


def test_gate_caching_retries_resources_and_secrets_are_in_the_spec():
    spec, platform = documents(PIPELINE_YAML)
    tasks = spec["root"]["dag"]["tasks"]
    gate = tasks["condition-1"]
    assert gate["taskInfo"]["name"] == "quality-gate"
    condition = gate["triggerPolicy"]["condition"]
    assert "evaluate" in condition and "min_bleu4" in condition
    gated = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(gated) == {"package", "deploy"}
    for task in ("ingest",):
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 3
    assert gated["deploy"]["retryPolicy"]["maxRetryCount"] == 3
    assert all(t["cachingOptions"]["enableCache"] for t in tasks.values() if "cachingOptions" in t)
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert train["cpuRequest"] and train["memoryLimit"]
    for name, executor in platform["deploymentSpec"]["executors"].items():
        secrets = {s["secretName"] for s in executor["secretAsEnv"]}
        assert secrets == {"imagelingo-s3", "imagelingo-mlflow"}, name
