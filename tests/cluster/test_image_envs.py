"""The component images, rehearsed: each image's Python environment built as components/Dockerfile
builds it (image_envs.build_env: a fresh venv, the image's one requirements list with the lock,
the package with --no-deps, nothing else), and the COMPILED components run in them, the way KFP
runs them (`sh -ec ... python3 -m kfp.dsl.executor_main --executor_input ...`):

- the training image runs ingest -> vocab -> features -> train -> evaluate -> package on a small
  synthetic Flickr8k-layout source, tracking to a real MLflow server on 127.0.0.1;
- the deploy image runs deploy (target=local) on that model store, and the registry's
  `production` alias moves to the evaluated version on that server;
- in a pod marked as a cluster pod, a missing MLFLOW_TRACKING_URI fails the task with a message
  naming the Secret (no silent sqlite in the pod);
- every module the deploy and training code can import (function-level imports included, e.g.
  the kserve branch that target=local does not take) resolves in its image.

A dependency missing from components/requirements/<image>.txt fails these tests (checked by
removing mlflow from deploy.txt: deploy failed with ModuleNotFoundError: No module named 'mlflow').
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imagelingo.config import REPO_ROOT, load_params
from imagelingo.data.synthetic import generate_synthetic

sys.path.insert(0, str(Path(__file__).parent))
from image_envs import build_env, run_component  # noqa: E402

P = load_params()
# evaluate's inputs from params.yaml; the gate's threshold (min_score) is the pipeline's
EVALUATE = {k: v for k, v in P["evaluate"].items() if k != "min_score"}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Both images' environments, built side by side (pip is mostly waiting on disk)."""
    root = tmp_path_factory.mktemp("image-envs")
    with ThreadPoolExecutor(2) as pool:
        futures = {t: pool.submit(build_env, t, root / t) for t in ("training", "deploy")}
        built = {t: f.result() for t, f in futures.items()}
    for target, env in built.items():
        TIMINGS[f"build {target} env"] = env.seconds
    yield built
    # The training venv alone is ~7 GB (PyPI's torch is the CUDA build); drop the venvs as soon as
    # the module is done, pass or fail, so the runtime rehearsal that CI runs next has the disk.
    # What a failure leaves to read (scratch, the image's WORKDIR) stays.
    for env in built.values():
        shutil.rmtree(env.venv, ignore_errors=True)


def test_each_image_installs_only_its_list_and_the_package(envs):
    training, deploy = envs["training"].installed(), envs["deploy"].installed()
    assert "imagelingo" in training and "imagelingo" in deploy
    assert {"torch", "timm", "mlflow", "kfp", "torch-model-archiver"} <= training
    assert {"kserve", "mlflow", "boto3", "kfp"} <= deploy
    assert "torch" not in deploy  # the deploy image stays small


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def import_closure(component_files: list[Path]) -> set[str]:
    """Third-party top-level modules reachable from the components' code: every import statement
    (top-level or inside a function) of the component and of each imagelingo module it reaches."""
    src = REPO_ROOT / "src"
    seen, third_party = set(), set()
    todo = [n for f in component_files for n in _imports(f)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top == "imagelingo":
            module = src / Path(*name.split("."))
            for path in (module.with_suffix(".py"), module / "__init__.py"):
                if path.is_file():
                    todo += _imports(path)
        elif top not in sys.stdlib_module_names and top not in ("kfp", "components"):
            third_party.add(top)
    return third_party


@pytest.mark.parametrize(
    "target,stages",
    [
        (
            "training",
            ["fingerprint", "ingest", "vocab", "features", "train", "evaluate", "package"],
        ),
        ("deploy", ["release", "deploy"]),
    ],
)
def test_every_module_the_components_can_import_resolves_in_their_image(envs, target, stages):
    files = [REPO_ROOT / "components" / s / "component.py" for s in stages]
    modules = sorted(import_closure(files))
    assert modules, files
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    env = envs[target]
    result = env.run([str(env.python), "-c", code, *modules])
    assert result.returncode == 0, f"{target} image cannot import {modules}:\n{result.stderr}"


@pytest.fixture(scope="module")
def trained(envs, mlflow_server, tmp_path_factory):
    """ingest -> ... -> package through the compiled components in the training image."""
    root = tmp_path_factory.mktemp("rehearsal")
    source = generate_synthetic(root / "source", 60, seed=0)
    env, tracking = envs["training"], {"MLFLOW_TRACKING_URI": mlflow_server}
    steps = [
        ("fingerprint", lambda o: {"source": str(source)}),
        (
            "ingest",
            lambda o: {
                **P["ingest"],
                "source": str(source),
                "data_fingerprint": o["fingerprint"]["Output"],
                "synthetic_images": 60,
                "seed": 0,
            },
        ),
        ("vocab", lambda o: {"dataset": o["ingest"]["dataset"], "min_freq": 1}),
        (
            "features",
            lambda o: {
                **P["features"],
                "dataset": o["ingest"]["dataset"],
                "batch_size": 16,
                "num_workers": 2,
                "shard": 0,  # one shard of one: the whole store, as merge would write it
                "shards": 1,
                "accelerator_resource": "nvidia.com/gpu",  # the pipeline's defaults: no GPU
                "accelerator_request": "0",
            },
        ),
        (
            "train",
            lambda o: {
                **P["train"],
                "dataset": o["ingest"]["dataset"],
                "vocab": o["vocab"]["vocab"],
                "features": o["features"]["features"],
                "seed": 1,
                "epochs": 1,
                "batch_size": 32,
                "lr": 0.001,
                "lr_decay": 1.0,
                "patience": 1,
                "checkpoint_root": str(root / "checkpoints"),
                # the pipeline's defaults: this pod trains (no Kubeflow Trainer TrainJob)
                "engine": "task",
                "nodes": 1,
                "procs_per_node": 1,
                "gpus_per_node": 0,
                "image": "",
            },
        ),
        (
            "evaluate",
            lambda o: {
                **EVALUATE,
                "model": o["train"]["model"],
                "features": o["features"]["features"],
                "dataset": o["ingest"]["dataset"],
                "beam_width": 2,
            },
        ),
        ("package", lambda o: {**P["package"], "model": o["train"]["model"]}),
    ]
    outputs = {}
    for stage, arguments in steps:
        started = time.perf_counter()
        result, outputs[stage] = run_component(
            env, stage, arguments(outputs), root / "tasks" / stage, tracking
        )
        TIMINGS[f"run {stage}"] = round(time.perf_counter() - started, 1)
        assert result.returncode == 0, f"{stage}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return {"root": root, "outputs": outputs}


def test_the_training_image_can_run_the_native_predictor_runtime(envs):
    # manifests/components/native-predictor starts `imagelingo serve --runtime kserve` in the
    # training image; without kserve in its list that is a ModuleNotFoundError at pod start
    env = envs["training"]
    code = "import imagelingo.serving.kserve_predictor, imagelingo.cli"
    result = env.run([str(env.python), "-c", code])
    assert result.returncode == 0, result.stderr
    served = env.run([str(env.venv / "bin" / "imagelingo"), "serve", "--help"])
    assert served.returncode == 0 and "--runtime" in served.stdout, served.stderr


def test_the_training_image_runs_its_compiled_components(trained):
    outputs = trained["outputs"]
    assert outputs["ingest"]["dataset"].metadata["data_fingerprint"].startswith("dir:")
    model = Path(outputs["train"]["model"].path)
    assert (model / "decoder.safetensors").is_file()
    # the checkpoint went to the stable location under checkpoint_root too
    checkpoint = outputs["train"]["model"].metadata["checkpoint_uri"]
    assert checkpoint.startswith(str(trained["root"] / "checkpoints"))
    assert (Path(checkpoint) / "checkpoint.pt").is_file()
    assert 0.0 <= outputs["evaluate"]["Output"] <= 1.0
    store = Path(outputs["package"]["model_store"].path)
    assert (store / "model-store" / "imagelingo.mar").is_file()


def test_a_cluster_pod_without_the_mlflow_secret_fails_with_a_clear_message(envs, trained):
    outputs = trained["outputs"]
    arguments = {
        **EVALUATE,
        "model": outputs["train"]["model"],
        "features": outputs["features"]["features"],
        "dataset": outputs["ingest"]["dataset"],
        "beam_width": 1,
    }
    # what the pipeline sets on a cluster (downward API); MLFLOW_TRACKING_URI absent
    marker = {"IMAGELINGO_POD_NAMESPACE": "team-a"}
    task_root = trained["root"] / "tasks" / "evaluate-no-secret"
    result, _ = run_component(envs["training"], "evaluate", arguments, task_root, marker)
    assert result.returncode != 0
    assert "MLFLOW_TRACKING_URI is not set" in result.stderr
    assert "imagelingo-mlflow" in result.stderr
    assert not list(task_root.parent.rglob("mlflow.db"))


def test_the_deploy_image_releases_deploys_and_moves_the_registry_alias(
    envs, trained, mlflow_server
):
    from mlflow import MlflowClient

    outputs = trained["outputs"]
    release = {
        "model": outputs["train"]["model"],
        "dataset": outputs["ingest"]["dataset"],
        "evaluation": outputs["evaluate"]["evaluation"],
        "gate_metric": P["evaluate"]["gate_metric"],
        "min_score": 0.0,
        "compare_production": True,
        "gate_margin": 0.0,
    }
    tracking = {"MLFLOW_TRACKING_URI": mlflow_server}
    root = trained["root"] / "tasks"
    result, released = run_component(envs["deploy"], "release", release, root / "release", tracking)
    assert result.returncode == 0, result.stderr[-4000:]
    registration = json.loads((Path(released["registration"].path) / "metadata.json").read_text())
    version = registration["model_version"]
    assert version, "release registered no model version"
    assert f"imagelingo v{version}" in Path(released["links"].path).read_text()
    arguments = {
        **P["deploy"],
        "model_store": outputs["package"]["model_store"],
        "target": "local",
        "kserve_version": "0.15.2",  # what the kubeflow-1.11 target passes
        "registration": released["registration"],
    }
    started = time.perf_counter()
    result, deployed = run_component(
        envs["deploy"],
        "deploy",
        arguments,
        trained["root"] / "tasks" / "deploy",
        {"MLFLOW_TRACKING_URI": mlflow_server},
    )
    TIMINGS["run deploy"] = round(time.perf_counter() - started, 1)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (Path(deployed["deployment"].path) / "inferenceservice.yaml").is_file()
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias("imagelingo", "production").version == version


def test_report_timings():
    print("\ncluster-check timings (s):", json.dumps(TIMINGS))
