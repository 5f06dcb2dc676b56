"""Training: deterministic per seed, resumable from its checkpoint, tracked in MLflow."""

import dataclasses

import mlflow
import pytest
import trained
from trained import assert_same_weights

from imagelingo.errors import ImageLingoError
from imagelingo.train import TrainConfig

pytestmark = pytest.mark.slow  # every test trains

# Small and fast: two short epochs on the synthetic data.
QUICK = TrainConfig(
    epochs=2,
    batch_size=32,
    embed_dim=32,
    hidden_dim=64,
    attention_dim=32,
    context_dim=64,
    lr=2e-3,
    patience=5,
    scst_epochs=0,  # the CE phase alone: test_scst.py trains the SCST one
)


def run(dirs, out, config=QUICK, resume=False):
    return trained.run(dirs, out, config, resume)


def test_same_seed_gives_identical_weights(pipeline_dirs, tmp_path):
    first, second = run(pipeline_dirs, tmp_path / "a"), run(pipeline_dirs, tmp_path / "b")
    assert [h["val_bleu4"] for h in first["history"]] == [h["val_bleu4"] for h in second["history"]]
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_resume_after_a_stop_equals_an_uninterrupted_run(pipeline_dirs, tmp_path):
    run(pipeline_dirs, tmp_path / "straight")
    run(pipeline_dirs, tmp_path / "resumed", dataclasses.replace(QUICK, epochs=1))
    # A stop after epoch 1 leaves the checkpoint; --resume continues to epoch 2.
    record = run(pipeline_dirs, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    # what it learns may not change on resume: the error names the setting and both values
    with pytest.raises(ImageLingoError, match=r"different settings \(lr: 0\.002 -> 0\.001\)"):
        run(pipeline_dirs, tmp_path / "resumed", dataclasses.replace(QUICK, lr=1e-3), resume=True)


def test_training_logs_params_metrics_and_model_to_mlflow(pipeline_dirs, tmp_path):
    record = run(pipeline_dirs, tmp_path / "m", dataclasses.replace(QUICK, epochs=1))
    client = mlflow.MlflowClient()
    run_data = client.get_run(record["mlflow_run_id"]).data
    assert run_data.params["hidden_dim"] == "64"
    assert "val_bleu4" in run_data.metrics and "train_loss" in run_data.metrics
    artifacts = {a.path for a in client.list_artifacts(record["mlflow_run_id"], "model")}
    assert {"model/decoder.safetensors", "model/config.json", "model/vocab.json"} <= artifacts
