"""Rehearse the component images without a container engine.

`build_env(target, dest)` reads components/Dockerfile, follows the stage chain of `target`
(FROM ... AS ...), and does what `docker build --target TARGET` does to the Python environment:
ENV, WORKDIR, COPY of the build context, and every `pip install` RUN, in a fresh virtual
environment whose `pip` and `python3` come first on PATH. The only change to the commands: an index
URL that this machine cannot reach (download.pytorch.org) is dropped; this machine's pip config and
constraints supply the same pinned versions. Any other RUN is refused, so a Dockerfile that grows a
step this rehearsal does not reproduce fails here instead of silently diverging.

`run_component(env, stage, arguments, task_root)` runs a component's COMPILED command (from
components/<stage>/component.yaml, the `sh -ec ... python3 -m kfp.dsl.executor_main` container that
KFP runs) in that environment, with an executor input built the way kfp.local builds it (KFP's own
`construct_executor_input` and placeholder resolution), and returns the task's outputs as kfp reads
them back. The working directory is a scratch folder and the environment starts empty (PATH, HOME,
what the test passes): nothing of the test's own venv or the source tree can leak in.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from imagelingo.config import REPO_ROOT

DOCKERFILE = REPO_ROOT / "components" / "Dockerfile"
# The RUNs that are not pip installs: creating the image's user, and installing the Java runtime
# of the training image (evaluate's COCO metrics), for which this machine's java stands in
# (`build_env` checks that the rehearsal's PATH finds one).
OTHER_RUNS = ("useradd ", "mkdir -p /usr/share/man/man1", "apt-get ", "rm -rf /var/lib/apt/lists/*")
UNREACHABLE_INDEXES = ("https://download.pytorch.org/",)


@dataclass
class Stage:
    name: str
    parent: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest)


def parse_dockerfile(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    stages: dict[str, Stage] = {}
    current = None
    logical = ""
    for raw in path.read_text().splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        logical += raw.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        instruction, _, rest = logical.strip().partition(" ")
        logical = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
            current = Stage(name=name, parent=words[0])
            stages[name] = current
        elif current is not None:
            current.lines.append((instruction, " ".join(rest.split())))
    return stages


def stage_chain(target: str, stages: dict[str, Stage]) -> list[Stage]:
    chain = []
    name = target
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name].parent
    if not chain:
        raise ValueError(f"no stage {target!r} in {DOCKERFILE}")
    return chain


def pip_commands(target: str) -> list[str]:
    """The pip commands of a stage chain, as the Dockerfile writes them."""
    commands = []
    for stage in stage_chain(target, parse_dockerfile()):
        for instruction, rest in stage.lines:
            if instruction == "RUN":
                commands += [c.strip() for c in rest.split("&&")]
    return [c for c in commands if c.startswith("pip ")]


def _drop_unreachable_indexes(command: str) -> str:
    words = shlex.split(command)
    kept, skip = [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        option = word in ("--extra-index-url", "--index-url") and i + 1 < len(words)
        if option and words[i + 1].startswith(UNREACHABLE_INDEXES):
            skip = True
            continue
        kept.append(word)
    return shlex.join(kept)


@dataclass
class ImageEnv:
    target: str
    root: Path
    workdir: Path  # the image's WORKDIR (the build context as COPY laid it out)
    venv: Path
    env: dict[str, str]  # ENV of the image, paths mapped under root
    seconds: float

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python3"

    def run(self, command: list[str], extra_env: dict | None = None, cwd: Path | None = None):
        return subprocess.run(
            command,
            cwd=cwd or self.root / "scratch",
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
        )

    def installed(self) -> set[str]:
        result = self.run([str(self.python), "-m", "pip", "list", "--format=json"])
        assert result.returncode == 0, result.stderr
        return {p["name"].lower().replace("_", "-") for p in json.loads(result.stdout)}


def _map_path(value: str, image_workdir: str, workdir: Path, root: Path) -> str:
    if value.startswith(image_workdir):
        return str(workdir) + value[len(image_workdir) :]
    if value.startswith("/tmp/"):
        return str(root / "tmp" / value[len("/tmp/") :])
    return value


def build_env(target: str, root: Path) -> ImageEnv:
    """`docker build --target TARGET`, for the Python environment, into `root`."""
    started = time.perf_counter()
    root = Path(root)
    venv, workdir = root / "venv", root / "image"
    (root / "scratch").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Like the image: the venv's python3 and pip first on PATH (the base image's /usr/local/bin).
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(root / "home"),
        "VIRTUAL_ENV": str(venv),
    }
    # This machine's pip configuration (find-links, local indexes, its constraints) stays in force.
    env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env |= {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "LANG", "LC_ALL")}
    image_workdir = "/"
    for stage in stage_chain(target, parse_dockerfile()):
        for instruction, rest in stage.lines:
            if instruction == "WORKDIR":
                image_workdir = rest
                workdir.mkdir(parents=True, exist_ok=True)
            elif instruction == "ENV":
                for name, value in re.findall(r"(\w+)=(\S+)", rest):
                    env[name] = _map_path(value, image_workdir, workdir, root)
            elif instruction == "COPY":
                *sources, dest = rest.split()
                target_dir = workdir / dest if not dest.startswith("/") else Path(dest)
                for source in sources:
                    for path in glob.glob(str(REPO_ROOT / source)):
                        path = Path(path)
                        if len(sources) == 1 and not dest.endswith("/"):
                            copy_to = target_dir
                        else:
                            copy_to = target_dir / path.name
                        if path.is_dir():
                            shutil.copytree(
                                path,
                                copy_to,
                                dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                            )
                        else:
                            copy_to.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(path, copy_to)
            elif instruction == "RUN":
                for command in (c.strip() for c in rest.split("&&")):
                    if command.startswith("apt-get install") and not shutil.which(
                        "java", path=env["PATH"]
                    ):
                        raise AssertionError(f"{command}: no java on this machine stands in")
                    if command.startswith(OTHER_RUNS):
                        continue
                    if not command.startswith("pip "):
                        raise AssertionError(f"a RUN this rehearsal does not reproduce: {command}")
                    result = subprocess.run(
                        ["bash", "-c", _drop_unreachable_indexes(command)],
                        cwd=workdir,
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    if result.returncode != 0:
                        raise AssertionError(
                            f"{target} image: `{command}` failed:\n{result.stdout[-3000:]}"
                            f"\n{result.stderr[-3000:]}"
                        )
            elif instruction in ("USER", "ARG", "LABEL", "EXPOSE", "CMD", "ENTRYPOINT"):
                continue
            else:
                raise AssertionError(f"a Dockerfile instruction not rehearsed: {instruction}")
    for name in ("home", "tmp"):
        (root / name).mkdir(exist_ok=True)
    return ImageEnv(target, root, workdir, venv, env, round(time.perf_counter() - started, 1))


def component_spec(stage: str):
    """The compiled component (components/<stage>/component.yaml) as KFP protos."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = yaml.safe_load((REPO_ROOT / "components" / stage / "component.yaml").read_text())
    component = pipeline_spec_pb2.ComponentSpec()
    json_format.ParseDict(spec["components"][f"comp-{stage}"], component)
    container = spec["deploymentSpec"]["executors"][f"exec-{stage}"]["container"]
    return component, container


def run_component(
    env: ImageEnv,
    stage: str,
    arguments: dict,
    task_root: Path,
    extra_env: dict | None = None,
) -> tuple[subprocess.CompletedProcess, dict]:
    """One task, through the compiled command, in the image env. Returns the process and the
    outputs (parameters and dsl artifacts) as KFP reads them back ({} when the task failed)."""
    from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils

    component, container = component_spec(stage)
    task_root = Path(task_root)
    task_root.mkdir(parents=True, exist_ok=True)
    executor_input = executor_input_utils.construct_executor_input(
        component_spec=component,
        arguments=arguments,
        task_root=str(task_root),
        block_input_artifact=False,
    )
    command = placeholder_utils.replace_placeholders(
        full_command=[*container["command"], *container["args"]],
        executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
        pipeline_resource_name="imagelingo-rehearsal",
        task_resource_name=stage,
        pipeline_root=str(task_root.parent),
        unique_pipeline_id="rehearsal",
    )
    result = env.run(command, extra_env)
    if result.returncode != 0:
        return result, {}
    return result, executor_output_utils.get_outputs_for_task(executor_input, component)
