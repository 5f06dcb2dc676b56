"""The model registry against a real MLflow server on 127.0.0.1 (sqlite backend, local artifact
root): evaluation registers a version with its test metrics, data hash and commit; a deploy moves
the `production` alias; `imagelingo models` lists them and prints the retrain gate."""

import pytest
from mlflow import MlflowClient

from imagelingo.artifacts import code_version
from imagelingo.cli import main
from imagelingo.deploy import deploy
from imagelingo.evaluate import evaluate
from imagelingo.registry import MODEL_NAME, dataset_digest, versions
from imagelingo.train import TrainConfig, train


@pytest.fixture
def served_tracking(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


def test_evaluate_registers_deploy_promotes_and_models_lists(
    served_tracking, pipeline_dirs, tmp_path, capsys
):
    model = tmp_path / "model"
    train(
        pipeline_dirs["dataset"],
        pipeline_dirs["vocab_file"],
        pipeline_dirs["features"],
        model,
        TrainConfig(epochs=1, batch_size=32, scst_epochs=0),
    )
    first = evaluate(model, pipeline_dirs["features"], pipeline_dirs["dataset"], tmp_path / "e1")
    second = evaluate(model, pipeline_dirs["features"], pipeline_dirs["dataset"], tmp_path / "e2")
    # the session's server may hold other tests' versions (test_mlflow_model.py): count on
    version = first["model_version"]
    assert int(second["model_version"]) == int(version) + 1

    registered = {v["version"]: v for v in versions()}
    assert registered[version]["bleu4"] == pytest.approx(first["metrics"]["bleu4"], abs=1e-4)
    assert registered[version]["git_commit"] == code_version()
    assert registered[version]["data_sha256"] == dataset_digest(pipeline_dirs["dataset"])[:12]
    assert not any(
        v["production"] for v in registered.values() if int(v["version"]) >= int(version)
    )

    store = tmp_path / "store"
    (store / "model-store").mkdir(parents=True)
    (store / "config").mkdir()
    (store / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    deploy(store, tmp_path / "deploy", "local", model_version=version)
    assert [v["version"] for v in versions() if v["production"]] == [version]

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    production_rows = [line for line in listing.splitlines() if line.rstrip().endswith("*")]
    assert len(production_rows) == 1 and production_rows[0].split()[0] == version
    assert main(["models", "--gate", "--margin", "0.01"]) == 0
    gate = float(capsys.readouterr().out.strip())
    assert gate == pytest.approx(registered[version]["bleu4"] + 0.01, abs=1e-4)
    # like with like: the gate on CIDEr-D is production's CIDEr-D + margin
    assert registered[version]["cider"] == pytest.approx(first["metrics"]["cider"], abs=1e-4)
    assert main(["-p", "evaluate.gate_metric=cider", "models", "--gate", "--margin", "0.05"]) == 0
    gate = float(capsys.readouterr().out.strip())
    assert gate == pytest.approx(registered[version]["cider"] + 0.05, abs=1e-4)
    # a production version without the gate metric's tag (registered before it was measured)
    # fails the gate with a message instead of comparing with nothing
    MlflowClient().delete_model_version_tag(MODEL_NAME, version, "test_cider")
    assert main(["-p", "evaluate.gate_metric=cider", "models", "--gate"]) == 2
    assert (
        f"production version {version} of imagelingo has no test_cider tag"
        in capsys.readouterr().err
    )
