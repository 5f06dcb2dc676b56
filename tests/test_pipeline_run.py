"""`imagelingo run`: the whole DAG through the KFP local runner on a small synthetic dataset.

Every artifact exists, and the BLEU scores equal those of the same stages run one by one through
the CLI with the same settings (tests/test_dataset_formats.py runs the DAG with the quality gate
above the achieved BLEU-4: package and deploy are skipped). With kfp.local's task cache on
(kfp 2.17.3 honours caching options and keys tasks on their inputs, like KFP), the weekly
retraining run, started with nothing but its source (as from the KFP UI or a recurring run), is
served from cache when the data did not change (its first task fingerprints the data), retrains
when it did, and always registers and deploys.
"""

import json

import pytest

from imagelingo.cli import main
from imagelingo.data.synthetic import generate_synthetic
from imagelingo.orchestration import STAGES, run_local

SMALL = {"synthetic_images": 60, "epochs": 2, "patience": 2, "batch_size": 32}
SMALL_PARAMS = [
    "ingest.synthetic_images=60",
    "train.epochs=2",
    "train.patience=2",
    "train.batch_size=32",
]

pytestmark = pytest.mark.slow
# The weekly runs take Kubeflow 1.10's layout (one features task, no merge, no retry inside the
# gate); `imagelingo run` below and tests/test_dataset_formats.py run the default 1.11 layout:
# each target's DAG runs end to end here.
WEEKLY_TARGET = "kubeflow-1.10"
WEEKLY_STAGES = tuple(stage for stage in STAGES if stage != "merge")


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    """A weekly retraining run through kfp.local with its task cache on, given only its source.
    (The source is the synthetic scenes `source=synthetic` would generate, as a folder in the
    Flickr8k layout, so that its data can change under the same source string.)"""
    root = tmp_path_factory.mktemp("kfp")
    source = generate_synthetic(tmp_path_factory.mktemp("data") / "flickr8k", 60, seed=0)

    def run() -> list[dict]:
        return run_local(root, {**SMALL, "source": str(source)}, cache=True, target=WEEKLY_TARGET)

    return {"run": run, "source": source}


@pytest.fixture(scope="module")
def pipeline_run(weekly, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("IMAGELINGO_CACHE", str(tmp_path_factory.mktemp("cache")))
    rows = weekly["run"]()
    return {row["stage"]: row for row in rows}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_stage_ran_and_wrote_its_artifacts(pipeline_run):
    from pathlib import Path

    for stage in WEEKLY_STAGES:
        assert pipeline_run[stage]["status"] == "done", stage
    assert pipeline_run["merge"]["status"] == "skipped"  # no fan-in on KFP 2.5
    deploy_dir = Path(pipeline_run["deploy"]["path"])
    assert (deploy_dir / "inferenceservice.yaml").is_file()
    assert (deploy_dir / "store" / "model-store" / "imagelingo.mar").is_file()
    package_dir = Path(pipeline_run["package"]["path"])
    assert (package_dir / "config" / "config.properties").is_file()
    eval_dir = Path(pipeline_run["evaluate"]["path"])
    assert (eval_dir / "report.html").is_file()


def test_the_pipeline_model_is_in_the_registry_with_bleu_data_hash_and_commit(pipeline_run):
    from pathlib import Path

    from imagelingo.artifacts import read_metadata
    from imagelingo.registry import dataset_digest, versions

    evaluated = read_metadata(Path(pipeline_run["evaluate"]["path"]))
    released = read_metadata(Path(pipeline_run["release"]["path"]))
    registered = {v["version"]: v for v in versions()}[released["model_version"]]
    assert (
        (Path(pipeline_run["release"]["path"]) / "release.md").read_text().count(released["run_id"])
    )
    assert registered["bleu4"] == pytest.approx(evaluated["metrics"]["bleu4"], abs=1e-4)
    dataset = Path(evaluated["inputs"]["dataset"])
    assert registered["data_sha256"] == dataset_digest(dataset)[:12]
    assert registered["git_commit"] == evaluated["code_version"]
    assert registered["production"]  # the run's deploy step promoted it


def test_pipeline_bleu_equals_the_cli_stages_run_one_by_one(pipeline_run, tmp_path):
    work, cache = tmp_path / "cli", tmp_path / "cache"
    overrides = [a for p in SMALL_PARAMS for a in ("-p", p)]
    steps = [
        ["ingest", "synthetic", "--out", f"{work}/dataset", "--cache", str(cache)],
        ["vocab", "--dataset", f"{work}/dataset", "--out", f"{work}/vocab"],
        ["features", "--dataset", f"{work}/dataset", "--out", f"{work}/features"],
        ["train", "--dataset", f"{work}/dataset", "--vocab", f"{work}/vocab/vocab.json"]
        + ["--features", f"{work}/features", "--out", f"{work}/model"],
        ["evaluate", "--model", f"{work}/model", "--features", f"{work}/features"]
        + ["--dataset", f"{work}/dataset", "--out", f"{work}/eval"],
    ]
    for step in steps:
        assert main([*overrides, *step]) == 0, step
    cli = json.loads((work / "eval" / "metrics.json").read_text())
    assert pipeline_run["evaluate"]["outputs"] == cli


def test_weekly_retraining_skips_unchanged_data_and_retrains_changed_data(pipeline_run, weekly):
    """Runs after the tests above (same pipeline root, same cache): week 1 is `pipeline_run`."""
    from imagelingo.registry import versions

    assert all(pipeline_run[stage]["status"] == "done" for stage in WEEKLY_STAGES)

    def statuses(rows):
        return {row["stage"]: row["status"] for row in rows if row["stage"] in WEEKLY_STAGES}

    # week 2, same data: everything up to package from the cache; the fingerprint, the release
    # (registry, gate) and deploy are never cached; the release finds its version, adds none
    count = len(versions())
    same = statuses(weekly["run"]())
    never = ("fingerprint", "release", "deploy")
    assert same == {stage: "done" if stage in never else "cached" for stage in WEEKLY_STAGES}
    assert len(versions()) == count
    # week 3, new captions under the same source folder: a new fingerprint, everything runs again
    token = weekly["source"] / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    lines[0] = lines[0].split("\t")[0] + "\ta brand new caption written this week"
    token.write_text("\n".join(lines) + "\n")
    changed = statuses(weekly["run"]())
    assert changed == {stage: "done" for stage in WEEKLY_STAGES}
