"""The MLflow model registry: every evaluated model becomes a version of "imagelingo", tagged with
its test metrics (test_bleu4, test_cider, ...: imagelingo.metrics), the data it was trained on and
the code that trained it; a deploy moves the `production` alias to the version it deployed.

A version is an MLflow pyfunc model (imagelingo.mlflow_model) that evaluation logged to its run
(imagelingo.model_logging, where torch is; register needs mlflow alone, so the deploy image
reads and writes the registry without torch):

    mlflow.pyfunc.load_model("models:/imagelingo@production").predict(df)  # df["image"]: bytes
    mlflow models serve -m models:/imagelingo@production --env-manager local

    imagelingo models                      # versions, BLEU-4, CIDEr-D, which one is in production
    imagelingo models --gate --margin 0.005  # production's gate metric + margin: the retrain gate
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from imagelingo.artifacts import read_metadata
from imagelingo.errors import ImageLingoError
from imagelingo.tracking import tracking_uri

MODEL_NAME = "imagelingo"
PRODUCTION = "production"
LOGGED_MODEL = "captioner"  # the logged pyfunc model's name in its run
SCORE_TAG = "test_"  # test_<metric>: one tag per test metric (imagelingo.metrics, not imported:
# the deploy image, which reads the registry, has none of the metrics' packages)


def _client(uri: str | None = None):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(uri))
    return MlflowClient()


def dataset_digest(dataset_dir: Path) -> str:
    """sha256 of the ingested captions.jsonl: which images, splits and captions were used."""
    return hashlib.sha256((Path(dataset_dir) / "captions.jsonl").read_bytes()).hexdigest()


def dvc_md5(source: str) -> str:
    """The DVC hash of the raw data when ingest read a DVC-tracked folder (data/flickr8k.dvc)."""
    import yaml

    pointer = Path(str(source).rstrip("/") + ".dvc")
    if not pointer.is_file():
        return ""
    return str(yaml.safe_load(pointer.read_text())["outs"][0].get("md5", ""))


def register(
    model_dir: Path, dataset_dir: Path, scores: dict, uri: str | None = None, run_id: str = ""
) -> str:
    """A new version of MODEL_NAME: the pyfunc model that evaluation logged to the MLflow run
    `run_id` (default: the model's training run), tagged with its test `scores` (metric name ->
    value); returns its number, or "" when the model was trained without an MLflow run. Needs
    mlflow alone (the deploy image registers too): the model was logged where torch is."""
    import mlflow

    trained = read_metadata(model_dir)
    if not trained.get("mlflow_run_id"):
        return ""
    ingested = read_metadata(dataset_dir)
    tags = {f"{SCORE_TAG}{name}": f"{value:.4f}" for name, value in scores.items()}
    tags |= {
        "data_sha256": dataset_digest(dataset_dir),
        "data_dvc_md5": dvc_md5(ingested.get("inputs", {}).get("source", "")),
        "git_commit": trained.get("code_version", ""),
        "params": json.dumps(trained.get("params", {}), sort_keys=True),
    }
    model_id = logged_captioner(run_id or trained["mlflow_run_id"], uri)
    version = mlflow.register_model(f"models:/{model_id}", MODEL_NAME, tags=tags)
    return str(version.version)


def logged_captioner(run_id: str, uri: str | None = None) -> str:
    """The id of the newest pyfunc model LOGGED_MODEL in run `run_id`."""
    import mlflow

    experiment = _client(uri).get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment],
        filter_string=f"source_run_id = '{run_id}' AND name = '{LOGGED_MODEL}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
        output_format="list",
    )
    if not found:
        raise ImageLingoError(
            f"MLflow run {run_id} has no logged model {LOGGED_MODEL!r} to register: "
            "`imagelingo evaluate` on the test split logs it"
        )
    return found[0].model_id


def set_production(version: str, uri: str | None = None) -> None:
    _client(uri).set_registered_model_alias(MODEL_NAME, PRODUCTION, version)


def versions(uri: str | None = None) -> list[dict]:
    """Every version, newest first: number, its test metrics (those it was tagged with), commit,
    data hash, production or not."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        production = client.get_model_version_by_alias(MODEL_NAME, PRODUCTION).version
    except MlflowException:
        production = None
    rows = []
    for v in client.search_model_versions(f"name='{MODEL_NAME}'"):
        rows.append(
            {
                "version": str(v.version),
                **{
                    tag[len(SCORE_TAG) :]: float(value)
                    for tag, value in v.tags.items()
                    if tag.startswith(SCORE_TAG)
                },
                "git_commit": v.tags.get("git_commit", ""),
                "data_sha256": v.tags.get("data_sha256", "")[:12],
                "production": str(v.version) == str(production),
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def production_score(metric: str, uri: str | None = None) -> float | None:
    """The production version's test `metric`; None when no version is in production."""
    production = next((r for r in versions(uri) if r["production"]), None)
    if production is None:
        return None
    if metric not in production:
        # e.g. a version registered before CIDEr-D was measured: comparing with nothing would
        # let any model through, so the gate refuses instead
        raise ImageLingoError(
            f"production version {production['version']} of {MODEL_NAME} has no test_{metric} "
            "tag to gate on (registered before that metric was measured): gate on a metric it "
            "has (-p evaluate.gate_metric=bleu4) until a version with one is in production"
        )
    return production[metric]
