"""Every command in README.md's bash blocks runs here, or the README marks it as not runnable on
this machine ("needs a cluster", "needs a Docker engine", "needs the box" for box/'s control
plane built from source (root, an hour to build: tests/box runs it), or "long:" for the
40-minute benchmarks). The commands run as written, in a copy of the project whose params.yaml
is shrunk to a few images and one epoch. Substitutions, the only edits: ../shared/flickr8k
becomes a small synthetic dataset in the Flickr8k layout, photo.jpg & co. are test images, port
8080 / HOST / the MinIO URL become free ports on 127.0.0.1, and .venv is the environment running
the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from imagelingo.config import REPO_ROOT, load_params
from imagelingo.data.synthetic import generate_synthetic
from imagelingo.serving.torchserve import free_port

# The tests that run README commands use the `project` fixture, which marks them slow
# (tests/tiers.py); the one that only reads the README runs in `make test-fast` too.

MARKS = ("needs a cluster", "needs a Docker engine", "needs the box", "long:")
# Commands another test runs through the same CLI entry point: (test file, text it must contain).
RUN_ELSEWHERE = {
    # with a source: a run on ../shared/flickr8k takes hours here; the DAG runs on a source the
    # user names in tests/test_dataset_formats.py (and on source folders in test_pipeline_run.py)
    "imagelingo run --source": ("tests/test_dataset_formats.py", 'main(["run", "--source"'),
    "make test": (".ci/run", "make test"),  # the command running this very suite
    "make test-fast": ("Makefile", '-m "not slow and not walkthrough"'),  # less the slow tests
    "make test-walkthroughs": (".ci/run", "make test-walkthroughs"),  # this file's runs, in CI
}
TEST_IMAGES = ("photo.jpg", "dog.jpg", "some.jpg", "other.png")


@dataclass(frozen=True)
class Command:
    section: str
    text: str
    comment: str

    @property
    def marked(self) -> bool:
        return any(mark in self.comment or mark in self.section for mark in MARKS)


def readme_commands() -> list[Command]:
    """The shell commands of every ```bash block, continuation lines joined, with their
    trailing comment and the heading they sit under."""
    commands, section, block = [], "", None
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        stripped = line.strip()
        if block is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif block is None and stripped == "```bash":
            block = []
        elif block is not None and stripped == "```":
            commands += _split(section, block)
            block = None
        elif block is not None:
            block.append(stripped)
    return commands


def _split(section: str, lines: list[str]) -> list[Command]:
    commands, pending = [], ""
    for line in lines:
        if not pending and (not line or line.startswith("#")):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        text, *comment = re.split(r"\s+#\s", pending, maxsplit=1)
        commands.append(Command(section, re.sub(r"\s+", " ", text).strip(), "".join(comment)))
        pending = ""
    return commands


def readme_python(section_prefix: str) -> list[str]:
    """The ```python blocks under headings starting with `section_prefix`."""
    blocks, section, block = [], "", None
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        if block is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif block is None and line.strip() == "```python":
            block = []
        elif block is not None and line.strip() == "```":
            if section.startswith(section_prefix):
                blocks.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
    return blocks


def unmarked(section_prefix: str) -> list[Command]:
    return [c for c in readme_commands() if c.section.startswith(section_prefix) and not c.marked]


# Sections whose unmarked commands the tests below run.
HANDLED = (
    "Quick start",
    "The stages",
    "Serving",
    "The Kubeflow pipeline",
    "Calling the endpoint",
    "Manifests",
    "Data versioning",
    "Model registry",
    "Parameters",
    "Tracking",
    "Your own data",
)


def test_every_readme_command_is_run_by_a_test_or_marked():
    commands = readme_commands()
    assert len(commands) > 30  # the parser found the blocks
    orphans = [c for c in commands if not c.marked and not c.section.startswith(HANDLED)]
    assert not orphans, f"README commands no test runs and no mark explains: {orphans}"
    for prefix, (path, needle) in RUN_ELSEWHERE.items():
        assert any(c.text.startswith(prefix) for c in commands), prefix
        assert needle in (REPO_ROOT / path).read_text(), f"{path} no longer runs {prefix!r}"
    assert any(c.marked for c in commands if "kubectl apply" in c.text)
    assert any(c.marked for c in commands if c.text.startswith("docker "))


# --- running them -------------------------------------------------------------------------


class Project:
    """A copy of the repository's files in a fresh git repo, with tiny parameters."""

    def __init__(self, root: Path, flickr8k: Path):
        self.root, self.flickr8k, self.port = root, flickr8k, free_port()
        self.minio = "http://127.0.0.1:9"  # set by the DVC test once its S3 server runs

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env["IMAGELINGO_CACHE"] = str(self.root / "runs" / "cache")
        env["FLICKR8K"] = str(self.flickr8k)  # the Makefile's variable
        env.pop("IMAGELINGO_PARAMS", None)
        return env

    def substitute(self, text: str) -> str:
        host = f"127.0.0.1:{self.port}"
        text = text.replace("../shared/flickr8k", str(self.flickr8k))
        text = text.replace("http://minio.example:9000", self.minio)
        text = text.replace("127.0.0.1:8080", host).replace("http://HOST", f"http://{host}")
        if re.match(r"(imagelingo serve|\.venv/bin/mlflow ui) ", text):
            text += f" --port {self.port}"
        return text

    def sh(self, text: str, timeout: float = 600) -> str:
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", self.substitute(text)],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"README command failed: {text}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def background(self, text: str, ready_path: str, body: bytes | None = None):
        """Start a server command on a fresh port (so an earlier server still shutting down
        cannot answer for it); return the process once `ready_path` answers 200."""
        self.port = free_port()
        log_path = self.root / "runs" / f"server-{self.port}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {self.substitute(text)}"],
                cwd=self.root,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{self.port}{ready_path}"
        deadline, headers = time.monotonic() + 180, {"Content-Type": "application/json"}
        try:
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()
                try:
                    request = urllib.request.Request(url, body, headers)
                    with urllib.request.urlopen(request, timeout=30):
                        return process
                except OSError:
                    time.sleep(1)
            raise AssertionError(f"{text}: {url} not ready in 180 s")
        except BaseException:
            stop(process)
            raise


def stop(process: subprocess.Popen) -> None:
    """SIGTERM: `imagelingo serve` then stops the Java frontend it started (a SIGKILL would
    orphan it), so wait long enough for that."""
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()


def tiny_params() -> dict:
    params = load_params(REPO_ROOT / "params.yaml")
    params["ingest"]["synthetic_images"] = 40
    params["features"]["num_workers"] = 0
    params["train"].update(epochs=1, patience=1, batch_size=32)
    params["evaluate"]["report_samples"] = 2
    params["demo"] = {"ingest.synthetic_images": 40, "train.epochs": 1, "evaluate.min_score": 0.0}
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("readme") / "imagelingo"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    # The environment running the tests stands in for .venv, marked installed so that make
    # does not reinstall the copy into it.
    (root / ".venv").mkdir()
    (root / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    (root / ".venv" / ".installed").touch()
    (root / "runs").mkdir()
    flickr8k = generate_synthetic(tmp_path_factory.mktemp("raw") / "flickr8k", 40, seed=1)
    first = next((flickr8k / "images").iterdir())
    for name in TEST_IMAGES:
        Image.open(first).convert("RGB").save(root / name)
    for git in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *git], cwd=root)
    return Project(root, flickr8k)


@pytest.fixture(scope="module")
def stages(project) -> Project:
    block = "\n".join(c.text for c in unmarked("The stages"))
    out = project.sh(block)
    assert (project.root / "runs/f8k/eval/metrics.json").is_file()
    assert "some.jpg" in out and "other.png" in out  # `imagelingo caption` printed both
    return project


def test_quick_start(project):
    commands = [c for c in unmarked("Quick start") if c.text not in RUN_ELSEWHERE]
    assert [c.text for c in commands][:1] == ["make demo"]
    for command in commands:
        out = project.sh(command.text)
    assert "test BLEU:" in out and "caption from http://127.0.0.1:" in out


def test_serving_and_calling_the_endpoint(stages):
    commands = unmarked("Serving")
    servers = [c for c in commands if c.text.startswith("imagelingo serve")]
    first = commands.index(servers[0])
    clients = [c for c in commands[first:] if c not in servers] + unmarked("Calling the endpoint")
    for command in commands[:first]:
        stages.sh(command.text)
    body = json.dumps(
        {"instances": [{"data": b64encode((stages.root / "photo.jpg").read_bytes()).decode()}]}
    ).encode()
    python_clients = readme_python("From Python")
    assert len(servers) == 2 and len(clients) >= 4 and len(python_clients) == 2
    for server in servers:
        process = stages.background(server.text, "/v1/models/imagelingo:predict", body)
        try:
            for client in clients:
                out = stages.sh(client.text)
                expected = '"caption"' if client.text.startswith("curl") else "photo.jpg"
                assert expected in out, (client.text, out)
            for code in python_clients:  # tritonclient and the KServe SDK, as written
                out = stages.sh(f"python - <<'PYTHON'\n{code}\nPYTHON")
                assert re.search(r"^dog\.jpg: \w+", out, flags=re.M), (code, out)
        finally:
            stop(process)


def test_pipeline_commands(project):
    commands = unmarked("The Kubeflow pipeline")
    # run, run --source, compile, compile --target --out, fingerprint
    assert len(commands) == 5, commands
    for command in commands:
        if command.text.startswith("imagelingo run --source"):
            continue  # RUN_ELSEWHERE
        if command.text == "imagelingo compile":
            compile_in_the_source_tree(project, command.text)
            continue
        if command.text.startswith("imagelingo compile --target"):
            project.sh(command.text)
            target = command.text.split("--target ")[1].split()[0]
            written = (
                project.root / "runs/compiled/pipelines" / f"imagelingo_pipeline.{target}.yaml"
            )
            assert "secretName: ghcr-pull" in written.read_text()
            continue
        if command.text.startswith("imagelingo fingerprint"):
            assert re.fullmatch(r"dir:[0-9a-f]{16}", project.sh(command.text).strip())
            continue
        out = project.sh(command.text)
        assert re.search(r"evaluate\s+done", out) and re.search(r"deploy\s+done", out), out


def compile_in_the_source_tree(project: Project, command: str) -> None:
    """`imagelingo compile` writes the committed YAML of the source tree, with the real
    params.yaml: run it there and check that it rewrote them unchanged."""
    files = sorted((REPO_ROOT / "pipelines").glob("imagelingo_pipeline.*.yaml"))
    files += sorted((REPO_ROOT / "components").glob("*/component.yaml"))
    before = {path: path.read_bytes() for path in files}
    try:
        done = subprocess.run(
            command.split(), cwd=REPO_ROOT, env=project.env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("wrote ") == len(files)
        assert {path: path.read_bytes() for path in files} == before
    finally:
        for path, content in before.items():
            path.write_bytes(content)


def test_manifests_render(project):
    assert unmarked("Manifests")
    for command in unmarked("Manifests"):
        assert "kind: InferenceService" in project.sh(command.text)


def test_dvc_commands(project, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="imagelingo-data")
    project.minio = s3_server
    # Setup the README assumes: data/flickr8k tracked and pushed to the default remote.
    data = project.root / "data" / "flickr8k"
    shutil.copytree(project.flickr8k, data)
    project.sh("dvc add -q data/flickr8k && dvc push -q && git add -A && git commit -qm data")
    shutil.rmtree(data)
    shutil.rmtree(project.root / ".dvc" / "cache")
    commands = unmarked("Data versioning")
    assert len(commands) == 5, commands
    for command in commands:
        out = project.sh(command.text)
        if command.text.startswith("dvc exp run"):
            assert "bleu4" in out
    assert sorted(p.name for p in (data / "images").iterdir()) == sorted(
        p.name for p in (project.flickr8k / "images").iterdir()
    )
    assert (project.root / "runs/dvc/eval/metrics.json").is_file()
    listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="imagelingo-data")
    assert listed["KeyCount"] > 0


def test_registry_parameters_and_tracking(stages):
    (stages.root / "my-params.yaml").write_text((stages.root / "params.yaml").read_text())
    commands = unmarked("Model registry") + unmarked("Parameters")
    assert len(commands) == 5, commands  # models, its gate on BLEU-4 and CIDEr-D; 2 Parameters
    for command in commands:
        assert stages.sh(command.text).strip(), command.text
    (mlflow_ui,) = unmarked("Tracking")
    stop(stages.background(mlflow_ui.text, "/"))


def test_your_own_data(project):
    """The commands of "Your own data" on the generated scenes, written in each format where
    those commands look for them (tests/format_files.py)."""
    from format_files import write_coco, write_karpathy, write_tabular

    data = project.root / "my-data"
    write_karpathy(project.flickr8k, data / "karpathy" / "dataset_flickr8k.json", restval=2)
    shutil.copytree(project.flickr8k / "images", data / "karpathy" / "images")
    write_coco(project.flickr8k, data / "coco")
    write_tabular(project.flickr8k, data / "table", ".csv")
    rows = write_tabular(project.flickr8k, data / "rows", ".jsonl", with_split=False)
    rows.rename(data / "rows.jsonl")  # its images: --images my-data/table/images
    shutil.rmtree(data / "rows")
    commands = unmarked("Your own data")
    assert len(commands) == 6, commands
    for command in commands:
        if command.text.startswith("imagelingo run --source"):
            # tests/test_dataset_formats.py runs the pipeline on a Karpathy JSON
            runner = (REPO_ROOT / "tests" / "test_dataset_formats.py").read_text()
            assert 'main(["run", "--source", str(json_path)' in runner
            continue
        project.sh(command.text)
    formats = {}
    for metadata in sorted((project.root / "runs" / "mine").glob("*/metadata.json")):
        record = json.loads(metadata.read_text())
        formats[metadata.parent.name] = record["inputs"]["format"]
        restval = 2 if metadata.parent.name == "karpathy-norestval" else 0  # skipped there
        assert sum(record["counts"]["images"].values()) == 40 - restval
    assert formats == {
        "coco": "coco",
        "karpathy": "karpathy",
        "karpathy-norestval": "karpathy",
        "rows": "tabular",
        "table": "tabular",
    }
