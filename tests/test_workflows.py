"""The GitHub workflows, checked offline. actionlint cannot be installed here (no binary wheel,
no Go toolchain), so the equivalent: check-jsonschema against the GitHub Actions workflow schema it
vendors, plus pinned actions, triggers as documented, and every `make`, `imagelingo` and secret
they use exists.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagelingo.cli import build_parser
from imagelingo.config import REPO_ROOT

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
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


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
    on = load(REPO_ROOT / ".github" / "workflows" / "retrain.yml")["on"]
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


def test_retrain_submits_with_the_data_fingerprint_the_pinned_images_and_credentials():
    workflow = load(REPO_ROOT / ".github" / "workflows" / "retrain.yml")
    job = workflow["jobs"]["retrain"]
    lines = "\n".join(run_lines(workflow))
    assert 'imagelingo fingerprint "$DATA_SOURCE"' in lines
    assert "--param data_fingerprint=" in lines and "--param checkpoint_root=" in lines
    assert "--param storage_uri=" in lines  # kserve cannot read a path inside the deploy pod
    # the images of this version's release, pinned by digest, are in the environment of submit
    submit = next(s["run"] for s in job["steps"] if "imagelingo submit" in s.get("run", ""))
    assert submit.index(". ./images.env") < submit.index("imagelingo submit")
    # kfp.Client credentials and namespace come from the environment submit reads
    assert {"KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE"} <= set(job["env"])
