"""The pipeline's release task (imagelingo.release) against a real MLflow store: it registers a
version once per MLflow run (a re-run after a cached evaluation finds it), gates on min_score and,
when asked, on production's score + margin, and writes the links the KFP UI shows."""

import json

import pytest

from imagelingo.artifacts import write_metadata
from imagelingo.registry import LOGGED_MODEL, set_production, versions
from imagelingo.release import release


def echo(model_input):
    """A stand-in for the captioner's pyfunc model: registering reads only its logged record."""
    return model_input


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", str(tmp_path / "artifacts"))
    return uri


def evaluated_model(root, bleu4: float, uri: str):
    """A trained model with its MLflow run, its dataset and its evaluation, as the pipeline's
    train, ingest and evaluate leave them."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("imagelingo")  # not an experiment id an earlier test left active
    with mlflow.start_run() as run:  # evaluate logs the captioner as a pyfunc model to the run
        mlflow.pyfunc.log_model(name=LOGGED_MODEL, python_model=echo, pip_requirements=[])
    model, dataset, evaluation = root / "model", root / "dataset", root / "evaluation"
    write_metadata(model, "train", {}, {}, {}, mlflow_run_id=run.info.run_id)
    dataset.mkdir(parents=True)
    (dataset / "captions.jsonl").write_text(json.dumps({"image": "a.jpg"}) + "\n")
    write_metadata(dataset, "ingest", {"source": "synthetic"}, {}, {})
    metrics = {"bleu4": bleu4, "cider": 0.5, "beam_width": 3, "images": 18, "split": "test"}
    write_metadata(evaluation, "evaluate", {}, {}, {}, metrics=metrics)
    return model, dataset, evaluation


def test_release_registers_once_per_run_and_gates_on_min_score(tracking, tmp_path):
    model, dataset, evaluation = evaluated_model(tmp_path / "a", 0.20, tracking)
    first = release(model, dataset, evaluation, tmp_path / "r1", "bleu4", 0.1, margin=None)
    assert first["deploy"] is True and first["model_version"] == "1"
    assert "test_images" not in json.dumps(versions())  # context keys are not scores
    again = release(model, dataset, evaluation, tmp_path / "r2", "bleu4", 0.1, margin=None)
    assert again["model_version"] == "1" and len(versions()) == 1
    low = release(model, dataset, evaluation, tmp_path / "r3", "bleu4", 0.25, margin=None)
    assert low["deploy"] is False and "bleu4 0.2000 < 0.2500" in low["gate"]
    links = (tmp_path / "r1" / "release.md").read_text()
    assert first["run_id"] in links and "Registry version:** 1" in links


def test_with_a_margin_the_gate_asks_for_production_plus_margin(tracking, tmp_path):
    serving = evaluated_model(tmp_path / "a", 0.20, tracking)
    set_production(release(*serving, tmp_path / "r1", "bleu4", 0.0, margin=None)["model_version"])
    challenger = evaluated_model(tmp_path / "b", 0.21, tracking)
    strict = release(*challenger, tmp_path / "r2", "bleu4", 0.0, margin=0.02)
    assert strict["deploy"] is False and "production 0.2000 + margin 0.0200" in strict["gate"]
    assert strict["model_version"] == "2"  # registered all the same
    lenient = release(*challenger, tmp_path / "r3", "bleu4", 0.0, margin=0.005)
    assert lenient["deploy"] is True and lenient["model_version"] == "2"
    unasked = release(*challenger, tmp_path / "r4", "bleu4", 0.0, margin=None)
    assert unasked["deploy"] is True and unasked["production_score"] is None


def test_an_evaluation_without_the_gate_metric_is_refused(tracking, tmp_path):
    model, dataset, evaluation = evaluated_model(tmp_path / "a", 0.2, tracking)
    with pytest.raises(ValueError, match="no 'meteor' score"):
        release(model, dataset, evaluation, tmp_path / "r", "meteor", 0.0, margin=None)


def test_links_point_at_the_mlflow_ui_of_a_tracking_server():
    from imagelingo.release import markdown

    links = {
        "tracking_uri": "http://mlflow:5000",
        "run_id": "abc",
        "model_version": "3",
        "run_url": "http://mlflow:5000/#/experiments/1/runs/abc",
        "version_url": "http://mlflow:5000/#/models/imagelingo/versions/3",
    }
    text = markdown(links, "bleu4 0.2 >= 0.1", True, {"bleu4": 0.2})
    assert "[abc](http://mlflow:5000/#/experiments/1/runs/abc)" in text
    assert "[imagelingo v3](http://mlflow:5000/#/models/imagelingo/versions/3)" in text
