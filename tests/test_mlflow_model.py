"""A registry version is an MLflow pyfunc model, against a real MLflow server on 127.0.0.1:
`mlflow.pyfunc.load_model("models:/imagelingo@production")` and `mlflow models serve` caption
real Flickr8k test images as `imagelingo caption` does on the same model, the logged MLmodel has
a signature and an input example, and `imagelingo deploy` of the MAR built from the same model
moves the alias to that version."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import FLICKR8K, needs_flickr8k
from mlflow import MlflowClient

from imagelingo.cli import main
from imagelingo.deploy import deploy
from imagelingo.evaluate import evaluate
from imagelingo.registry import MODEL_NAME, PRODUCTION
from imagelingo.serving.torchserve import free_port

PRODUCTION_URI = f"models:/{MODEL_NAME}@{PRODUCTION}"


@pytest.fixture(scope="module")
def flickr8k_images() -> list[Path]:
    names = (FLICKR8K / "Flickr_8k.testImages.txt").read_text().split()[:4]
    return [FLICKR8K / "images" / name for name in names]


@pytest.fixture(scope="module")
def production(mlflow_server, trained_model, model_store, pipeline_dirs, tmp_path_factory):
    """Evaluate (registers a version), then deploy the MAR built from the same model with it."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    work = tmp_path_factory.mktemp("registered")
    result = evaluate(trained_model, pipeline_dirs["features"], pipeline_dirs["dataset"], work)
    deploy(model_store, work / "deploy", "local", model_version=result["model_version"])
    yield result["model_version"]
    os.environ["MLFLOW_TRACKING_URI"] = previous or ""


def cli_captions(model_dir: Path, images: list[Path], capsys) -> list[str]:
    """What `imagelingo caption --model` prints, one caption per image."""
    assert main(["caption", "--model", str(model_dir), *map(str, images)]) == 0
    return [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]


def wrapped_base64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def test_the_version_the_deploy_promoted_is_a_logged_pyfunc_model_with_its_tags(production):
    version = MlflowClient().get_model_version_by_alias(MODEL_NAME, PRODUCTION)
    assert version.version == production
    assert version.source.startswith("models:/m-")  # a logged model, not a run's files
    assert {"test_bleu4", "test_cider", "data_sha256", "git_commit"} <= set(version.tags)
    logged = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.name == "captioner" and logged.source_run_id == version.run_id


def test_the_mlmodel_has_a_signature_an_input_example_and_only_the_inference_code(
    production, tmp_path
):
    local = Path(mlflow.artifacts.download_artifacts(PRODUCTION_URI, dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["inputs"]) == [
        {"type": "binary", "name": "image", "required": True}
    ]
    assert json.loads(mlmodel["signature"]["outputs"])[0]["name"] == "caption"
    assert {p["name"] for p in json.loads(mlmodel["signature"]["params"])} == {
        "beam_width",
        "max_len",
    }
    example = mlmodel["saved_input_example_info"]
    assert (local / example["artifact_path"]).is_file()
    code = local / mlmodel["flavors"]["python_function"]["code"] / "imagelingo"
    assert sorted(p.name for p in code.iterdir()) == ["__init__.py", "inference", "mlflow_model.py"]
    assert {"encoder.pt", "decoder.pt", "config.json", "vocab.json"} <= {
        p.name for p in (local / "artifacts" / "bundle").iterdir()
    }


@needs_flickr8k
def test_load_model_on_the_alias_captions_flickr8k_like_imagelingo_caption(
    production, trained_model, flickr8k_images, capsys
):
    expected = cli_captions(trained_model, flickr8k_images, capsys)
    model = mlflow.pyfunc.load_model(PRODUCTION_URI)
    # bytes, and base64 text (with RFC 2045 line breaks): the signature's binary column takes both
    images = [p.read_bytes() for p in flickr8k_images]
    images[1] = wrapped_base64(images[1])
    predicted = model.predict(pd.DataFrame({"image": images}))
    assert list(predicted["caption"]) == expected
    with pytest.raises(mlflow.exceptions.MlflowException, match="image 0: not a readable"):
        model.predict(pd.DataFrame({"image": [b"not an image"]}))


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@needs_flickr8k
def test_mlflow_models_serve_answers_with_the_same_captions(
    production, trained_model, flickr8k_images, tmp_path, capsys
):
    expected = cli_captions(trained_model, flickr8k_images, capsys)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    env.pop("PYTHONPATH", None)  # the model's own code (code_paths) must be enough
    # `mlflow models serve` execs `uvicorn` from PATH: this environment's, as an activated venv has
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(tmp_path / "serve.log", "wb")
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
    command += ["-m", PRODUCTION_URI, "--env-manager", "local", "-h", "127.0.0.1"]
    command += ["-p", str(port), "-w", "1"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(
                f"mlflow models serve not up: {(tmp_path / 'serve.log').read_text()[-3000:]}"
            )
        encoded = [[base64.b64encode(p.read_bytes()).decode()] for p in flickr8k_images]
        body = {"dataframe_split": {"columns": ["image"], "data": encoded}}
        status, answer = post(f"{url}/invocations", body)
        assert status == 200, answer
        assert [p["caption"] for p in answer["predictions"]] == expected
        status, answer = post(f"{url}/invocations", {**body, "params": {"beam_width": 99}})
        assert status == 400 and "beam_width must be an integer from 1 to 10" in answer["message"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
