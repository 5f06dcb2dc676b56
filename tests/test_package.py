"""The model archive: what it holds, and that it runs where only torch, torchvision and Pillow
exist (KServe's stock TorchServe image): imagelingo, timm and nltk are blocked from import."""

import base64
import json
import subprocess
import sys
import textwrap
import zipfile

import torch

from imagelingo.captioner import caption_image_files
from imagelingo.data.dataset import load_records
from imagelingo.serving.torchserve import read_properties


def test_mar_holds_weights_config_vocab_and_runtime_code(model_store, tmp_path):
    mar = model_store / "model-store" / "imagelingo.mar"
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    for name in ("encoder.pt", "decoder.pt", "config.json", "vocab.json", "imagelingo_handler.py"):
        assert name in names
    assert "imagelingo_runtime/serving/handler.py" in names
    manifest = json.loads((tmp_path / "MAR-INF" / "MANIFEST.json").read_text())
    assert manifest["model"]["handler"] == "imagelingo_handler.py"
    # decoder weights are plain tensors: loading them runs no pickled code
    state = torch.load(tmp_path / "decoder.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert isinstance(torch.jit.load(str(tmp_path / "encoder.pt")), torch.jit.ScriptModule)


def test_config_properties_has_the_layout_kserve_expects(model_store):
    properties = read_properties(model_store / "config" / "config.properties")
    snapshot = json.loads(properties["model_snapshot"])
    model = snapshot["models"]["imagelingo"]["1.0"]
    assert model["marName"] == "imagelingo.mar" and model["defaultVersion"] is True
    for key in ("batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout"):
        assert isinstance(model[key], int)
    assert properties["model_store"] == "/mnt/models/model-store"
    assert properties["enable_metrics_api"] == "true"
    assert properties["disable_token_authorization"] == "true"
    assert properties["enable_model_api"] == "true"
    assert int(properties["max_request_size"]) > 0


BLOCKED_RUN = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("imagelingo", "timm", "nltk"):
                raise ImportError(f"{name} is not in the stock TorchServe image")

    sys.meta_path.insert(0, Block())
    for name in [m for m in sys.modules if m.split(".")[0] in ("imagelingo", "timm", "nltk")]:
        del sys.modules[name]
    model_dir = sys.argv[1]
    sys.path.insert(0, model_dir)

    class Context:
        system_properties = {"model_dir": model_dir}
        manifest = {"model": {"modelName": "imagelingo"}}
        statuses = {}
        def set_response_status(self, code, phrase, idx=0):
            self.statuses[idx] = code

    import imagelingo_handler
    context = Context()
    body = sys.stdin.buffer.read()
    answers = imagelingo_handler.handle([{"body": body}, {"body": b"not json"}], context)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("imagelingo", "timm", "nltk"))
    print(json.dumps({"answers": answers, "statuses": context.statuses, "loaded": loaded}))
    """
)


def test_handler_runs_from_the_unpacked_mar_without_imagelingo_timm_or_nltk(
    model_store, trained_model, pipeline_dirs, tmp_path
):
    with zipfile.ZipFile(model_store / "model-store" / "imagelingo.mar") as archive:
        archive.extractall(tmp_path / "mar")
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = pipeline_dirs["dataset"] / "images" / record.image
    body = {"instances": [{"data": base64.b64encode(image.read_bytes()).decode()}]}
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(tmp_path / "mar")],
        input=json.dumps(body).encode(),
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    output = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert output["loaded"] == []
    assert output["statuses"] == {"1": 400}  # the second row was not JSON; the first is served
    served = output["answers"][0]["predictions"][0]
    expected = caption_image_files(trained_model, [image], beam_width=3, max_len=30)[0]
    assert served["caption"] == expected.text
    assert served["tokens"] == expected.words
