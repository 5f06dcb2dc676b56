"""params.yaml is the one home of defaults: one settings dataclass per section reads it, and every
key reaches its stage by each road that runs the stage: the CLI, dvc.yaml and the KFP pipeline.

The roads per section (ROADS below):
  ingest, vocab, features, train, evaluate, package: CLI, DVC and pipeline
  deploy: CLI and pipeline; it changes a cluster, which is no DVC output
  serve:  CLI only; `imagelingo serve` and `imagelingo demo` start a local server, no stage
  demo:   no settings of its own: overrides `imagelingo demo` applies, each naming a real key
A key added to params.yaml fails here until its dataclass, its dvc.yaml stage and its component
read it; a section added fails until it gets a dataclass and roads.
"""

import dataclasses
import functools
import json
from pathlib import Path

import pytest
import yaml

from imagelingo.cli import build_parser, resolve_params
from imagelingo.config import (
    REPO_ROOT,
    ServeConfig,
    apply_overrides,
    from_params,
    load_params,
)
from imagelingo.deploy import DeployConfig
from imagelingo.errors import ImageLingoError
from imagelingo.evaluate import EvaluateConfig
from imagelingo.features import FeaturesConfig
from imagelingo.ingest import IngestConfig
from imagelingo.orchestration import PIPELINE_YAML
from imagelingo.serving.package import ServingConfig
from imagelingo.train import TrainConfig
from imagelingo.vocab import VocabConfig

PARAMS = load_params()
SETTINGS = {
    "ingest": IngestConfig,
    "vocab": VocabConfig,
    "features": FeaturesConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "package": ServingConfig,
    "deploy": DeployConfig,
    "serve": ServeConfig,
}
ROADS = {
    "ingest": {"cli", "dvc", "pipeline"},
    "vocab": {"cli", "dvc", "pipeline"},
    "features": {"cli", "dvc", "pipeline"},
    "train": {"cli", "dvc", "pipeline"},
    "evaluate": {"cli", "dvc", "pipeline"},
    "package": {"cli", "dvc", "pipeline"},
    "deploy": {"cli", "pipeline"},
    "serve": {"cli"},
}
# The command line that runs each section's stage (paths need not exist: nothing runs).
COMMANDS = {
    "ingest": ["ingest", "synthetic", "--out", "o"],
    "vocab": ["vocab", "--dataset", "d", "--out", "o"],
    "features": ["features", "--dataset", "d", "--out", "o"],
    "train": ["train", "--dataset", "d", "--vocab", "v", "--features", "f", "--out", "o"],
    "evaluate": ["evaluate", "--model", "m", "--features", "f", "--dataset", "d", "--out", "o"],
    "package": ["package", "--model", "m", "--out", "o"],
    "deploy": ["deploy", "store"],
    "serve": ["serve", "store"],
}
# Keys the pipeline reads outside their stage's component: the quality gate is the pipeline's
# dsl.If on this parameter (a low score skips package and deploy instead of failing the run).
PIPELINE_PARAMETER_ONLY = {"evaluate.min_score": "min_score"}
KEYS = [(s, k) for s in SETTINGS if s in PARAMS for k in PARAMS[s]]


def keys_by(road: str) -> list[tuple[str, str]]:
    return [(s, k) for s, k in KEYS if road in ROADS[s]]


def key_id(key: tuple[str, str]) -> str:
    return ".".join(key)


def test_every_section_has_a_settings_dataclass_and_roads():
    assert set(PARAMS) - {"demo"} == set(SETTINGS) == set(ROADS)


@pytest.mark.parametrize("section", SETTINGS)
def test_dataclass_fields_are_the_section_keys_and_default_to_them(section):
    cls = SETTINGS[section]
    assert [f.name for f in dataclasses.fields(cls)] == list(PARAMS[section])
    assert dataclasses.asdict(cls()) == PARAMS[section]
    assert dataclasses.asdict(from_params(cls, PARAMS)) == PARAMS[section]


def test_a_key_no_dataclass_reads_is_an_error_that_names_it():
    params = {**PARAMS, "train": {**PARAMS["train"], "warmup_epochs": 1}}
    with pytest.raises(ImageLingoError, match="warmup_epochs not read by TrainConfig"):
        from_params(TrainConfig, params)


def changed(value):
    """Another value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}-changed"


@pytest.mark.parametrize("key", keys_by("cli"), ids=key_id)
def test_cli_override_reaches_the_stage_settings(key):
    section, name = key
    new = changed(PARAMS[section][name])
    argv = ["-p", f"{section}.{name}={json.dumps(new)}", *COMMANDS[section]]
    settings = from_params(SETTINGS[section], resolve_params(build_parser().parse_args(argv)))
    assert getattr(settings, name) == new and type(getattr(settings, name)) is type(new)


@pytest.mark.parametrize(
    "argv, section, name, value",
    [
        ([*COMMANDS["evaluate"], "--beam-width", "5"], "evaluate", "beam_width", 5),
        ([*COMMANDS["features"], "--encoder", "resnet50"], "features", "encoder", "resnet50"),
        (["deploy", "store", "--namespace", "team-a"], "deploy", "namespace", "team-a"),
        (["deploy", "store", "--timeout", "7"], "deploy", "timeout_s", 7),
        (["serve", "store", "--port", "9090"], "serve", "port", 9090),
    ],
)
def test_shorthand_flags_set_the_parameter_they_stand_for(argv, section, name, value):
    settings = from_params(SETTINGS[section], resolve_params(build_parser().parse_args(argv)))
    assert getattr(settings, name) == value


@pytest.mark.parametrize("key", keys_by("dvc"), ids=key_id)
def test_dvc_stage_lists_the_key(key):
    section, name = key
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][section]
    assert stage["cmd"].startswith(f"imagelingo {section} ")
    listed = stage.get("params", [])
    assert section in listed or f"{section}.{name}" in listed, f"dvc.yaml {section}: {listed}"


@functools.cache
def compiled_pipeline() -> dict:
    return next(yaml.safe_load_all(PIPELINE_YAML.read_text()))


def dags(spec: dict) -> dict[str, dict]:
    """Every DAG of the compiled pipeline by owner: "root" and the sub-DAGs (dsl.If)."""
    owned = {name: c["dag"] for name, c in spec["components"].items() if "dag" in c}
    return {"root": spec["root"]["dag"], **owned}


def passed_value(spec: dict, stage: str, name: str):
    """What the compiled pipeline gives task `stage`'s input `name`: a constant, or a pipeline
    parameter's default followed through the sub-DAGs it crosses."""
    owner, binding = next(
        (owner, dag["tasks"][stage]["inputs"]["parameters"].get(name))
        for owner, dag in dags(spec).items()
        if stage in dag["tasks"]
    )
    assert binding is not None, f"the pipeline passes {stage} no {name}"
    while "componentInputParameter" in binding:
        parameter = binding["componentInputParameter"]
        if owner == "root":
            return spec["root"]["inputDefinitions"]["parameters"][parameter]["defaultValue"]
        owner, binding = next(
            (parent, task["inputs"]["parameters"][parameter])
            for parent, dag in dags(spec).items()
            for task in dag["tasks"].values()
            if task["componentRef"]["name"] == owner
        )
    return binding["runtimeValue"]["constant"]


@pytest.mark.parametrize("key", keys_by("pipeline"), ids=key_id)
def test_compiled_pipeline_passes_the_key_to_its_component(key):
    section, name = key
    value = PARAMS[section][name]
    spec = compiled_pipeline()
    if f"{section}.{name}" in PIPELINE_PARAMETER_ONLY:
        parameter = PIPELINE_PARAMETER_ONLY[f"{section}.{name}"]
        assert spec["root"]["inputDefinitions"]["parameters"][parameter]["defaultValue"] == value
        return
    component_yaml = REPO_ROOT / "components" / section / "component.yaml"
    component = yaml.safe_load(Path(component_yaml).read_text())["components"][f"comp-{section}"]
    declared = component["inputDefinitions"]["parameters"]
    assert name in declared, f"{component_yaml.relative_to(REPO_ROOT)} has no input {name}"
    assert "defaultValue" not in declared[name], "a default in the component repeats params.yaml"
    assert passed_value(spec, section, name) == value


def test_demo_overrides_name_real_parameters():
    demo = apply_overrides(PARAMS, PARAMS["demo"])
    assert demo["train"]["epochs"] == PARAMS["demo"]["train.epochs"]


def test_override_values_are_parsed_as_yaml():
    params = apply_overrides(PARAMS, ["train.lr=0.0005", "evaluate.beam_width=5"])
    assert params["train"]["lr"] == 0.0005
    assert params["evaluate"]["beam_width"] == 5


@pytest.mark.parametrize("override", ["train.lrr=1", "nosection.x=1", "train.lr"])
def test_bad_override_is_an_error_that_names_it(override):
    with pytest.raises(ImageLingoError, match=override.split("=")[0].replace(".", r"\.")):
        apply_overrides(PARAMS, [override])


def test_served_default_decoding_is_the_evaluated_one():
    """A request without options is decoded as evaluation decoded (inference.options.Options
    is in the MAR, which cannot read params.yaml)."""
    from imagelingo.inference.options import Options

    evaluate = PARAMS["evaluate"]
    assert (Options().beam_width, Options().max_len) == (
        evaluate["beam_width"],
        evaluate["max_len"],
    )
