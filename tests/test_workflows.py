"""The GitHub workflows, checked offline. actionlint cannot be installed here (no binary wheel,
no Go toolchain), so the equivalent: check-jsonschema against the GitHub Actions workflow schema it
vendors, plus actions pinned by commit, no expression pasted into a shell line, triggers as
documented, every `make`, `imagelingo` and secret they use exists, and retraining installs only
what compiling and submitting import.
"""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from imagelingo.cli import build_parser
from imagelingo.config import REPO_ROOT

RETRAIN = REPO_ROOT / ".github" / "workflows" / "retrain.yml"
# What `imagelingo compile`/`submit` need, installed by retrain.yml and images.yml: the SDK at the
# lock's pins, then this package without its dependencies (torch and the rest of the stages').
MINIMAL_INSTALL = [
    ".venv/bin/pip install -c constraints.txt kfp kfp-kubernetes pyyaml",
    ".venv/bin/pip install --no-deps -e .",
]
# The stages' dependencies: compiling the pipeline and submitting it must import none of them.
HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "PIL",
    "mlflow",
    "boto3",
    "botocore",
    "safetensors",
    "pycocoevalcap",
    "nltk",
    "kserve",
    "dvc",
)

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as true
    return workflow


def run_lines(workflow: dict) -> list[str]:
    return [
        line
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for line in str(step.get("run", "")).splitlines()
    ]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_structure(path):
    workflow = load(path)
    assert workflow["name"] and workflow["on"] and workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert job["runs-on"].startswith("ubuntu-"), name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_with_their_tag_beside(path):
    """A tag can be moved to other code; a full commit SHA cannot (the SHAs were read from the
    actions' repositories at these tags)."""
    lines = [line for line in path.read_text().splitlines() if re.match(r"\s*-? *uses:", line)]
    assert lines and len(lines) == sum("uses" in step for step in steps(load(path)))
    for line in lines:
        assert re.fullmatch(r"\s*- uses: [\w.-]+/[\w.-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+", line), (
            line
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_pasted_into_a_shell_line(path):
    """`${{ }}` in `run:` is substituted into the script before the shell parses it: a step
    output or an input with a quote in it runs as code. They go through `env:`."""
    for step in steps(load(path)):
        assert "${{" not in step.get("run", ""), step["run"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_commands_and_secrets_exist(path):
    text = path.read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for line in run_lines(load(path)):
        for target in re.findall(r"\bmake (\w[\w-]*)", line):
            assert re.search(rf"^{target}:", makefile, flags=re.M), target
        for command in re.findall(r"imagelingo (\w+)", line):
            assert command in subcommands, command
    readme = (REPO_ROOT / "README.md").read_text()
    for secret in re.findall(r"secrets\.(\w+)", text):
        assert secret == "GITHUB_TOKEN" or secret in readme, f"secret {secret} not in README"
    for variable in re.findall(r"vars\.(\w+)", text):
        assert variable in readme, f"repository variable {variable} not in README"


def schema_check(*paths: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).parent / "check-jsonschema"
    command = [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True)


def test_workflows_match_the_github_actions_schema(tmp_path):
    result = schema_check(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a misspelt key and a bad trigger are caught.
    broken = tmp_path / "broken.yml"
    ci = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(ci.replace("runs-on:", "run-on:", 1))
    assert schema_check(broken).returncode != 0
    broken.write_text(ci.replace("pull_request", "pull_requests", 1))
    assert schema_check(broken).returncode != 0


def test_ci_runs_exactly_what_ci_runs_here():
    assert "bash .ci/run" in run_lines(load(REPO_ROOT / ".github" / "workflows" / "ci.yml"))


def test_retrain_triggers_on_data_params_schedule_and_by_hand():
    on = load(RETRAIN)["on"]
    assert set(on["push"]["paths"]) == {"data/*.dvc", "params.yaml"}
    assert len(on["schedule"][0]["cron"].split()) == 5
    assert "margin" in on["workflow_dispatch"]["inputs"]


def test_yamllint_is_clean_on_workflows():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "yamllint"),
            "--strict",
            "-c",
            str(REPO_ROOT / ".yamllint"),
        ]
        + [str(p) for p in WORKFLOWS]
        + [str(REPO_ROOT / "dvc.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def submit_step(workflow: dict) -> str:
    (script,) = [s["run"] for s in steps(workflow) if "imagelingo submit" in s.get("run", "")]
    return script


def test_retrain_reaches_only_the_kfp_api():
    """The fingerprint and the gate run inside the pipeline: CI holds no MLflow or S3
    credentials and calls nothing but `submit`."""
    workflow = load(RETRAIN)
    job = workflow["jobs"]["retrain"]
    text = RETRAIN.read_text()
    for needless in ("MLFLOW", "AWS_", "imagelingo fingerprint", "imagelingo models", "min_score"):
        assert needless not in text, needless
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"KFP_HOST", "KFP_TOKEN"}
    assert re.findall(r"imagelingo (\w+)", "\n".join(run_lines(workflow))) == ["submit"]
    script = submit_step(workflow)
    assert '--host "$KFP_HOST"' in script and "--param gate_margin=" in script
    assert "--param checkpoint_root=" in script
    assert "--param storage_uri=" in script  # kserve cannot read a path inside the deploy pod
    # the images of this version's release, pinned by digest, are in the environment of submit
    assert script.index(". ./images.env") < script.index("imagelingo submit")
    # the token only through the environment submit reads (KFP_TOKEN), never on a command line
    assert job["env"]["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}" and "--token" not in script
    assert {"KFP_HOST", "KFP_NAMESPACE", "KFP_TARGET"} <= set(job["env"])
    # a stock Kubeflow's API names no version (issue 27, defect 2): the target is explicit
    assert '--target "$KFP_TARGET"' in script


def test_retrain_passes_only_options_submit_has_and_parameters_the_pipeline_has():
    from imagelingo.orchestration import pipeline_function

    script = submit_step(load(RETRAIN)).replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "imagelingo submit" in line)
    words = shlex.split(line.replace('"${pull[@]}"', "--image-pull-secret NAME"))
    parser = build_parser()._subparsers._group_actions[0].choices["submit"]
    options = {o for action in parser._actions for o in action.option_strings}
    for word in words:
        if word.startswith("--"):
            assert word in options, f"imagelingo submit has no {word}"
    parameters = set(pipeline_function().component_spec.inputs)
    for name in re.findall(r"--param (\w+)=", line):
        assert name in parameters, f"the pipeline has no parameter {name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_compiling_workflows_install_only_what_compile_and_submit_need(path):
    lines = [line.split("#")[0].strip() for line in run_lines(load(path))]
    installs = [line for line in lines if "pip install" in line or "make install" in line]
    if any("imagelingo compile" in line or "imagelingo submit" in line for line in lines):
        assert installs == MINIMAL_INSTALL, installs
    # and those packages are the pipeline extra's, which constraints.txt pins
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    packages = MINIMAL_INSTALL[0].split("constraints.txt ")[1].split()
    assert set(packages) == {*extras["optional-dependencies"]["pipeline"], "pyyaml"}


BLOCK_HEAVY = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"compile/submit imported {{name}}: not in the minimal install")
sys.meta_path.insert(0, Block())
import kfp.client, imagelingo.cli, imagelingo.orchestration as o
o.compile_all(sys.argv[1])
print("compiled")
"""


def test_compile_and_submit_import_nothing_the_minimal_install_lacks(tmp_path):
    """What retrain.yml's install relies on: the pipeline, its components and submit's client
    build without torch, mlflow, boto3... (imported only inside the components' functions)."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY, str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-2000:]
    # the check can fail: a module of the stages' dependencies is refused
    failing = BLOCK_HEAVY.replace("import kfp.client", "import numpy, kfp.client")
    result = subprocess.run([sys.executable, "-c", failing, "x"], capture_output=True, text=True)
    assert "compile/submit imported numpy" in result.stderr
