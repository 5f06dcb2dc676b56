"""The runtime KServe deploys (pytorch/torchserve-kfs:0.9.0: Python 3.9, torch 2.1, TorchServe
0.9.0) is not the one in our venv. The cheap guards of what `make runtime-rehearsal` shows in full:

- every module the MAR carries needs at most Python 3.9 (vermin, annotations evaluated too);
- where the rehearsal's Python 3.9 environment (.venv-kfs) exists, the handler unpacked from the
  MAR captions in it (test_package.py runs that test under both interpreters);
- the MAR's request parser, unpacked and run by a Python 3.9 interpreter (pyenv's, or .venv-kfs),
  reads every client form (tests/client_forms.py) and refuses the malformed ones alike;
- KServe always sets TS_SERVICE_ENVELOPE on a TorchServe predictor: a TorchServe started from the
  packaged config with that variable set still hands the handler the raw body.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from client_forms import client_forms, malformed_forms

from imagelingo.config import REPO_ROOT
from imagelingo.data.dataset import load_records
from imagelingo.serving.client import caption_remote, post_json
from imagelingo.serving.package import (
    HANDLER_ENTRY,
    PACKAGE_ROOT,
    POD_ENTRYPOINT,
    POD_MODULES,
    RUNTIME_MODULES,
    RUNTIME_PACKAGE,
)
from imagelingo.serving.torchserve import LocalTorchServe

VERMIN = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
KFS_PYTHON = REPO_ROOT / ".venv-kfs" / "bin" / "python"
# the Makefile's PYTHON39: pyenv's 3.9, which `make runtime-rehearsal` builds .venv-kfs from
PYENV_PYTHON39 = sorted(
    Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob("versions/3.9.*/bin/python3.9")
)
PYTHONS_39 = [str(p) for p in [KFS_PYTHON, *PYENV_PYTHON39[-1:]] if p.is_file()]


def vermin(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VERMIN, "--no-tips", "--violations", "--eval-annotations", "-t=3.9-", *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_vermin_catches_what_broke_the_runtime_before(tmp_path):
    # zip(strict=True) made every request fail on the runtime's Python 3.9 (issue 13)
    canary = tmp_path / "canary.py"
    canary.write_text("def pairs(a, b):\n    return list(zip(a, b, strict=True))\n")
    result = vermin([canary])
    assert result.returncode != 0 and "zip(strict)" in result.stdout


def test_every_module_in_the_mar_and_the_pod_runs_on_python_3_9():
    files = [PACKAGE_ROOT / relative for relative in RUNTIME_MODULES] + [HANDLER_ENTRY]
    # PID 1 of the runtime pod and the protocol front it imports, run by the image's Python
    files += [POD_ENTRYPOINT, *(POD_ENTRYPOINT.with_name(m) for m in POD_MODULES)]
    files = sorted(set(files))  # oip.py is in both
    assert all(path.is_file() for path in files)
    result = vermin(files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Analyzing {len(files)} files" in result.stdout


def absolute_imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported inside a function) for each absolute import in a file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                found.append((child.module.split(".")[0], in_function))
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, in_function or inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_the_mar_code_imports_only_torch_torchvision_pillow_and_the_stdlib():
    # the inference package is the boundary: the MAR ships it as it is, with the request parsing
    # and the handler, into an image that has nothing else (test_package.py runs it there)
    allowed = set(sys.stdlib_module_names) | {"torch", "torchvision", "PIL"}
    for relative in RUNTIME_MODULES:
        for module, in_function in absolute_imports(PACKAGE_ROOT / relative):
            # a model directory's weights are safetensors, read only where training ran
            if module == "safetensors" and in_function and relative.startswith("inference/"):
                continue
            assert module in allowed, f"{relative} imports {module}"
    assert {"inference/captioner.py", "serving/handler.py"} <= set(RUNTIME_MODULES)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java")
def test_kserve_service_envelope_in_the_environment_is_ignored(
    model_store, pipeline_dirs, tmp_path, monkeypatch
):
    # what KServe's kserve-torchserve runtime sets ("{{.Labels.serviceEnvelope}}", always kserve
    # or kservev2 for a TorchServe predictor); honoured, the handler would get `instances`
    monkeypatch.setenv("TS_SERVICE_ENVELOPE", "kserve")
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", "true")
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = (pipeline_dirs["dataset"] / "images" / record.image).read_bytes()
    with LocalTorchServe(model_store, tmp_path) as server:  # `imagelingo serve`'s launcher
        for protocol in ("v1", "v2"):
            assert caption_remote(server.url, [image, image], protocol)[1]["caption"]
        status, answer = post_json(f"{server.url}/v1/models/imagelingo:predict", {"image": "x"})
        assert status == 400 and "instances" in answer["error"]
        status, answer = post_json(f"{server.url}/v1/models/imagelingo:predict", b"{not json")
        assert status == 400 and "not valid JSON" in answer["error"]


# Run by Python 3.9 in the unpacked MAR: the parser alone needs only the standard library.
PARSE_FORMS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from imagelingo_runtime.serving.protocol import BadRequest, parse_v1, parse_v2
answers = {}
for name, (protocol, body) in json.load(sys.stdin).items():
    try:
        images = (parse_v1 if protocol == "v1" else parse_v2)(body)[0]
        answers[name] = [image.hex() for image in images]
    except BadRequest as error:
        answers[name] = {"status": error.status, "error": str(error)}
print(json.dumps({"version": list(sys.version_info[:2]), "answers": answers}))
"""


@pytest.mark.skipif(not PYTHONS_39, reason="no Python 3.9 (pyenv 3.9.x or .venv-kfs)")
def test_the_mar_parser_reads_every_client_form_on_python_3_9(model_store, tmp_path):
    with zipfile.ZipFile(model_store / "model-store" / "imagelingo.mar") as archive:
        archive.extractall(tmp_path / "mar")
    assert (tmp_path / "mar" / RUNTIME_PACKAGE / "serving" / "protocol.py").is_file()
    image = bytes(range(256)) * 3  # the parser returns the bytes; images.py decodes them
    forms = client_forms(image)
    malformed = malformed_forms(image)
    forms |= {name: (protocol, body) for name, (protocol, body, _) in malformed.items()}
    for python in PYTHONS_39:
        result = subprocess.run(
            [python, "-c", PARSE_FORMS, str(tmp_path / "mar")],
            input=json.dumps(forms),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        output = json.loads(result.stdout)
        assert output["version"] == [3, 9], python
        for name in client_forms(image):
            assert output["answers"][name] == [image.hex()], (python, name, output["answers"][name])
        for name, (_, _, words) in malformed.items():
            answer = output["answers"][name]
            assert answer["status"] == 400 and words in answer["error"], (python, name, answer)
