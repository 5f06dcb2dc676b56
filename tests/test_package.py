"""The model archive: what it holds, and that it runs where only torch, torchvision and Pillow
exist (KServe's stock TorchServe image): imagelingo, timm and nltk are blocked from import."""

import base64
import json
import re
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import pytest
import torch

from imagelingo.captioning import caption_image_files
from imagelingo.config import REPO_ROOT
from imagelingo.data.dataset import load_records
from imagelingo.errors import ImageLingoError
from imagelingo.serving.package import allowed_urls, package_model
from imagelingo.serving.store import read_properties


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
    assert int(properties["max_request_size"]) > 0
    # behind the kserve wrapper (8080, gRPC 8081): inference on 8085, as the wrapper expects
    assert properties["inference_address"] == "http://0.0.0.0:8085"


def test_both_configs_are_locked_down_and_differ_only_in_the_inference_address(model_store):
    stock = read_properties(model_store / "config" / "config.properties")
    direct = read_properties(model_store / "config" / "direct.properties")
    assert direct["inference_address"] == "http://0.0.0.0:8080"
    assert {k: v for k, v in stock.items() if stock[k] != direct.get(k)} == {
        "inference_address": "http://0.0.0.0:8085"
    }
    assert stock.keys() == direct.keys()
    for properties in (stock, direct):
        # TS_* variables (KServe sets TS_SERVICE_ENVELOPE) cannot override anything
        assert properties["enable_envvars_config"] == "false"
        assert "service_envelope" not in properties
        # nobody outside the pod can reach the management API; nothing can be registered
        assert properties["management_address"].startswith("http://127.0.0.1:")
        assert properties["grpc_management_address"] == "127.0.0.1"
        assert properties["enable_model_api"] == "false"
        assert properties["allowed_urls"] == "file:///mnt/models/model-store/[^/]+[.]mar"
        ports = {properties[k].rsplit(":", 1)[1] for k in ("management_address", "metrics_address")}
        assert not ports & {"8080", "8081", "8085"}  # the wrapper's HTTP and gRPC, inference


def test_allowed_urls_match_only_archives_in_the_store():
    pattern = re.compile(allowed_urls("/tmp/a.b/store+1"), re.IGNORECASE)  # Java: whole match
    assert pattern.fullmatch("file:///tmp/a.b/store+1/imagelingo.mar")
    for url in (
        "file:///tmp/aXb/store+1/imagelingo.mar",
        "file:///tmp/a.b/store1/imagelingo.mar",
        "file:///tmp/a.b/store+1/sub/evil.mar",
        "file:///etc/passwd",
        "https://example.com/evil.mar",
    ):
        assert not pattern.fullmatch(url), url
    for bad in ("relative/store", "/tmp/a,b", "/tmp/a[b]", "/tmp/a\\b"):
        with pytest.raises(ImageLingoError):
            allowed_urls(bad)


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


# The MAR's code runs under our Python and under the runtime's (Python 3.9, torch 2.1: the
# .venv-kfs that `make runtime-rehearsal` builds), with the same answers.
KFS_PYTHON = REPO_ROOT / ".venv-kfs" / "bin" / "python"
INTERPRETERS = [
    pytest.param(sys.executable, id="this-python"),
    pytest.param(
        str(KFS_PYTHON),
        id="runtime-python-3.9",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(
                not KFS_PYTHON.is_file(), reason="no .venv-kfs (make runtime-rehearsal)"
            ),
        ],
    ),
]


@pytest.mark.parametrize("python", INTERPRETERS)
def test_handler_runs_from_the_unpacked_mar_without_imagelingo_timm_or_nltk(
    python, model_store, trained_model, pipeline_dirs, tmp_path
):
    with zipfile.ZipFile(model_store / "model-store" / "imagelingo.mar") as archive:
        archive.extractall(tmp_path / "mar")
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = pipeline_dirs["dataset"] / "images" / record.image
    body = {"instances": [{"data": base64.b64encode(image.read_bytes()).decode()}]}
    result = subprocess.run(
        [python, "-c", BLOCKED_RUN, str(tmp_path / "mar")],
        input=json.dumps(body).encode(),
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    output = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert output["loaded"] == []
    assert output["statuses"] == {"1": 400}  # the second row was not JSON; the first is served
    served = output["answers"][0]["predictions"][0]
    expected = caption_image_files(trained_model, [image], beam_width=3, max_len=30)[0]
    assert served["caption"] == expected.text
    assert served["tokens"] == expected.words


@pytest.mark.slow
def test_packaging_leaves_the_shared_temp_dir_alone(trained_model, tmp_path, monkeypatch):
    # torch-model-archiver empties $TMPDIR/<model name> before staging there: without its own
    # temp dir, a packaging running at the same time loses its files (seen: decoder.pt missing)
    shared = tmp_path / "shared-tmp"
    (shared / "imagelingo").mkdir(parents=True)
    (shared / "imagelingo" / "decoder.pt").write_text("another packaging's file")
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    package_model(trained_model, tmp_path / "store")
    assert (shared / "imagelingo" / "decoder.pt").read_text() == "another packaging's file"
    assert (tmp_path / "store" / "model-store" / "imagelingo.mar").stat().st_size > 0
