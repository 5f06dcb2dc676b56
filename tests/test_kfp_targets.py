"""Each committed pipeline YAML runs on the KFP backend it names, checked against that backend's
own definitions: its protos parse every part strictly (a field the backend would drop silently
fails here), and its fan-in, nested-retry and accelerator rules (imagelingo.cluster.kfp_rules,
each citing the backend's source) find nothing. The same checks find the problems of the YAML
committed before the targets existed, so none of them is a check that cannot fail."""

import re
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp_protos import BACKENDS, parse_pipeline

from imagelingo.cli import main
from imagelingo.cluster.gpu_nodes import GpuNodes
from imagelingo.cluster.kfp_rules import (
    accelerator_problems,
    driver_limits,
    fan_in_problems,
    fit_platform,
    nested_retry_problems,
    placeholder_input_problems,
    problems,
)
from imagelingo.cluster.platforms import TARGETS, target_for_backend
from imagelingo.cluster.pod_options import PodOptions
from imagelingo.errors import ImageLingoError
from imagelingo.orchestration import PIPELINES, compile_target

BEFORE = (
    PIPELINES.parent / "tests/fixtures/kubeflow-pipelines/imagelingo_pipeline.before-issue-21.yaml"
)


def documents(path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


@pytest.fixture(params=list(TARGETS))
def target(request):
    return TARGETS[request.param]


def test_every_backend_kubeflow_ships_is_a_target():
    assert sorted(t.kfp_backend for t in TARGETS.values()) == sorted(BACKENDS)
    assert target_for_backend("2.5.0").kubeflow == "1.10.2"
    assert target_for_backend("v2.15.0").kubeflow == "1.11.0"
    with pytest.raises(ImageLingoError, match=r"KFP backend 2\.3\.0 is not supported.*2\.5\.0"):
        target_for_backend("2.3.0")


def test_target_yaml_names_its_target_in_file_name_and_header(target):
    path = PIPELINES / target.pipeline_file
    assert target.name in path.name
    assert path.read_text().startswith(f"# Target: {target.name} ({target.description})")


def test_target_yaml_parses_strictly_with_its_backends_protos(target):
    spec, platform = documents(PIPELINES / target.pipeline_file)
    assert parse_pipeline(target.kfp_backend, spec, platform) == []


def test_image_pull_secrets_parse_strictly_on_each_target(target, tmp_path):
    pods = PodOptions(pull_secrets=("ghcr-pull",))
    path = compile_target(target, tmp_path / target.pipeline_file, pods)
    spec, platform = documents(path)
    assert parse_pipeline(target.kfp_backend, spec, platform) == []
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(e["imagePullSecret"][0]["secretName"] == "ghcr-pull" for e in executors.values())


def test_target_yaml_passes_its_backends_rules(target):
    spec, platform = documents(PIPELINES / target.pipeline_file)
    assert problems(spec, platform, target) == []


def test_the_yaml_before_targets_fails_the_strict_parse_of_kfp_2_5():
    """kfp-kubernetes 2.17 writes SecretAsEnv.optional, which 2.5.0's proto lacks: the 2.5
    driver would drop it. (2.15.0's proto has every field of that YAML.)"""
    spec, platform = documents(BEFORE)
    found = parse_pipeline("2.5.0", spec, platform)
    assert found and all('no field named "optional"' in p for p in found)
    assert parse_pipeline("2.15.0", spec, platform) == []


def test_the_yaml_before_targets_fails_the_rules_of_the_backend_each_names():
    spec, _ = documents(BEFORE)
    kubeflow_110, kubeflow_111 = TARGETS["kubeflow-1.10"], TARGETS["kubeflow-1.11"]
    # 2.5: merge collects the ParallelFor's shards; deploy's retry sits inside the gate
    assert [p.split(":")[0] for p in fan_in_problems(spec, kubeflow_110)] == ["root/merge"]
    assert [p.split(":")[0] for p in nested_retry_problems(spec, kubeflow_110)] == [
        "comp-condition-3/deploy"
    ]
    assert fan_in_problems(spec, kubeflow_111) == []
    assert nested_retry_problems(spec, kubeflow_111) == []
    # every backend: the int accelerator_count resolves to "" (features and train, type + count
    # each; the type is a STRING already)
    for chosen in (kubeflow_110, kubeflow_111):
        found = accelerator_problems(spec, chosen)
        assert found and all("accelerator_count" in p and "NUMBER_INTEGER" in p for p in found)


def test_the_newest_layout_is_refused_for_kfp_2_5():
    """What compile would say if the 1.11 pipeline were aimed at 1.10: fan-in and the gated
    retry (compile_target refuses to write it)."""
    spec, platform = documents(PIPELINES / TARGETS["kubeflow-1.11"].pipeline_file)
    found = problems(spec, platform, TARGETS["kubeflow-1.10"])
    assert any("collects the outputs of ParallelFor" in p for p in found)
    assert any("retryPolicy inside a sub-DAG" in p for p in found)


@pytest.mark.parametrize("executor", ["exec-features", "exec-train"])
def test_accelerator_count_1_yields_a_gpu_limit_by_the_drivers_rule(target, executor):
    spec, _ = documents(PIPELINES / target.pipeline_file)
    assert driver_limits(spec, executor, {"accelerator_count": "1"}) == {"nvidia.com/gpu": "1"}
    # the default asks for none: a 0 limit of an extended resource requests nothing
    assert driver_limits(spec, executor, {}) == {"nvidia.com/gpu": "0"}
    # CPU tasks have no accelerator at all
    assert driver_limits(spec, "exec-evaluate", {"accelerator_count": "1"}) == {}


def test_gpu_nodes_give_features_and_train_the_cuda_image_tolerations_and_selector(
    target, tmp_path
):
    """Issue 27, defect 4: a GPU run needs the CUDA image and a way onto tainted GPU nodes; on
    every target the options reach only the GPU tasks and parse with the backend's protos."""
    options = ["--cuda", "--gpu-toleration", "nvidia.com/gpu:NoSchedule"]
    options += [
        "--gpu-toleration",
        "dedicated=ml",
        "--gpu-node-selector",
        "nvidia.com/gpu.present=true",
    ]
    assert main(["compile", "--target", target.name, *options, "--out", str(tmp_path)]) == 0
    spec, platform = documents(tmp_path / "pipelines" / target.pipeline_file)
    assert parse_pipeline(target.kfp_backend, spec, platform) == []
    images = {
        label: executor["container"]["image"]
        for label, executor in spec["deploymentSpec"]["executors"].items()
    }
    cuda = {label for label, image in images.items() if "/imagelingo-cuda:" in image}
    assert cuda == {"exec-features", "exec-train"}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placed = {label for label, config in executors.items() if "tolerations" in config}
    assert placed == {"exec-features", "exec-train"}
    assert executors["exec-train"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "dedicated", "operator": "Equal", "value": "ml"},
    ]
    assert executors["exec-features"]["nodeSelector"] == {
        "labels": {"nvidia.com/gpu.present": "true"}
    }
    for label in ("exec-features", "exec-train"):
        assert driver_limits(spec, label, {"accelerator_count": "1"}) == {"nvidia.com/gpu": "1"}
    # the TrainJob engine's pods run the image train names
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert "/imagelingo-cuda:" in train["image"]["runtimeValue"]["constant"]


@pytest.mark.parametrize(
    "option,text",
    [
        ("tolerations", "nvidia.com/gpu:NoScheduled"),
        ("tolerations", "=gpu"),
        ("node_selector", "nvidia.com/gpu.present"),
    ],
)
def test_gpu_node_options_are_refused_naming_what_was_expected(option, text):
    flag = {"tolerations": "--gpu-toleration", "node_selector": "--gpu-node-selector"}[option]
    with pytest.raises(ImageLingoError, match=f"{flag} '{re.escape(text)}': expected"):
        GpuNodes.from_options(**{option: [text]})


def test_the_yaml_before_targets_never_got_its_gpu():
    spec, _ = documents(BEFORE)
    assert driver_limits(spec, "exec-train", {"accelerator_count": 1}) == {}


def _gpu_pipeline(component, input_name: str) -> dict:
    """A one-task pipeline: `component` gets the GPU count pipeline parameter as `input_name`,
    and its pod the accelerator from the same parameter; compiled by the pinned SDK."""
    from kfp import compiler, dsl

    @dsl.pipeline(name="gpu")
    def gpu(accelerator_count: str = "0"):
        task = component(**{input_name: accelerator_count})
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(accelerator_count)

    path = Path(tempfile.mkdtemp()) / "gpu.yaml"
    compiler.Compiler().compile(gpu, str(path))
    return yaml.safe_load(path.read_text())


def test_an_input_named_like_a_resource_field_is_a_placeholder_kfp_2_5_resolves_by_chance():
    """Issue 27, defect 1: the SDK replaces an input named accelerator_count with the resource's
    placeholder; 2.5.0's launcher resolves it in about half the runs. The features component's
    input had that name (the committed kubeflow-1.10 YAML failed this rule for accelerator_count
    and accelerator_type); it is renamed."""
    from kfp import dsl

    @dsl.component(base_image="python:3.11")
    def check(accelerator_count: str):
        print(accelerator_count)

    @dsl.component(base_image="python:3.11")
    def check_renamed(accelerator_request: str):
        print(accelerator_request)

    named_like_the_field = _gpu_pipeline(check, "accelerator_count")
    source = named_like_the_field["root"]["dag"]["tasks"]["check"]["inputs"]["parameters"]
    placeholder = "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    assert source["accelerator_count"] == {"runtimeValue": {"constant": placeholder}}
    found = placeholder_input_problems(named_like_the_field, TARGETS["kubeflow-1.10"])
    assert found == [
        "root/check: input accelerator_count is the constant "
        "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}; KFP 2.5.0's launcher "
        "resolves it in about half the runs (always from 2.14.0): rename the input so it is not "
        "a resource field's name"
    ]
    assert placeholder_input_problems(named_like_the_field, TARGETS["kubeflow-1.11"]) == []
    renamed = _gpu_pipeline(check_renamed, "accelerator_request")
    source = renamed["root"]["dag"]["tasks"]["check-renamed"]["inputs"]["parameters"]
    assert source["accelerator_request"] == {"componentInputParameter": "accelerator_count"}
    assert placeholder_input_problems(renamed, TARGETS["kubeflow-1.10"]) == []


def test_fit_platform_drops_optional_false_for_kfp_2_5_and_refuses_optional_true():
    config = {"secretAsEnv": [{"secretName": "s", "keyToEnv": [], "optional": False}]}
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-x": config}}}}}
    fitted = fit_platform(platform, TARGETS["kubeflow-1.10"])
    assert (
        "optional"
        not in fitted["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-x"][
            "secretAsEnv"
        ][0]
    )
    config["secretAsEnv"][0]["optional"] = True
    with pytest.raises(ImageLingoError, match="optional secretAsEnv .* KFP 2.5.0"):
        fit_platform(platform, TARGETS["kubeflow-1.10"])
    config["secretAsEnv"][0]["optional"] = True
    assert fit_platform(platform, TARGETS["kubeflow-1.11"]) is platform  # 2.15 knows the field


def test_the_readme_matrix_is_the_modules():
    """One matrix: the README's table row per target says what platforms.py says."""
    readme = (PIPELINES.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `kubeflow-")]
    rows += [line for line in readme.splitlines() if line.startswith("| `kfp-")]
    assert len(rows) == len(TARGETS)
    for row, chosen in zip(rows, TARGETS.values(), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[:5] == [
            f"`{chosen.name}`",
            chosen.kubeflow or "(standalone)",
            chosen.kfp_backend,
            chosen.kserve,
            chosen.knative,
        ]
        assert ("`trainjob`" in cells[5]) is ("trainjob" in chosen.train_engines)
        assert cells[6] == f"`pipelines/{chosen.pipeline_file}`"
