"""The KFP pipeline from the command line: run it here (kfp.local), compile it, submit or schedule
it on Kubeflow Pipelines. The DAG itself lives in pipelines/imagelingo_pipeline.py and the
components in components/<stage>/, in the source tree next to params.yaml.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imagelingo.config import REPO_ROOT
from imagelingo.errors import ImageLingoError

PIPELINE_YAML = REPO_ROOT / "pipelines" / "imagelingo_pipeline.yaml"
STAGES = ("ingest", "vocab", "features", "train", "evaluate", "package", "deploy")


def _source_tree() -> None:
    if not (REPO_ROOT / "pipelines" / "imagelingo_pipeline.py").is_file():
        raise ImageLingoError(
            f"pipelines/imagelingo_pipeline.py not found under {REPO_ROOT}: the pipeline commands "
            "run from a checkout of the repository"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def pipeline_function():
    _source_tree()
    from pipelines.imagelingo_pipeline import imagelingo_pipeline

    return imagelingo_pipeline


def components() -> dict[str, Any]:
    """stage name -> KFP component, in DAG order."""
    import importlib

    _source_tree()
    return {
        stage: getattr(importlib.import_module(f"components.{stage}.component"), stage)
        for stage in STAGES
    }


def compile_all(root: Path = REPO_ROOT) -> list[Path]:
    """Write pipelines/imagelingo_pipeline.yaml and every components/<stage>/component.yaml
    under `root` (the source tree; tests compile into a temporary folder and compare)."""
    from kfp import compiler

    written = []
    for stage, component in components().items():
        path = Path(root) / "components" / stage / "component.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    pipeline_yaml = Path(root) / PIPELINE_YAML.relative_to(REPO_ROOT)
    pipeline_yaml.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_function(), str(pipeline_yaml))
    return [*written, pipeline_yaml]


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pipeline arguments; values are YAML (numbers stay numbers). Unknown names are
    an error that lists the pipeline's parameters."""
    import inspect

    import yaml

    known = inspect.signature(pipeline_function().pipeline_func).parameters
    arguments = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            names = ", ".join(known)
            raise ImageLingoError(
                f"pipeline argument {pair!r}: expected NAME=VALUE, NAME one of {names}"
            )
        arguments[name] = yaml.safe_load(value) if value else ""
    return arguments


def run_local(pipeline_root: Path, arguments: dict[str, Any]) -> list[dict]:
    """The whole DAG through kfp.local's SubprocessRunner; returns one summary row per stage."""
    from kfp import local

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # Tasks run `python` from PATH: make it this interpreter, which has imagelingo installed.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    before = set(pipeline_root.iterdir())
    started = time.perf_counter()
    try:
        pipeline_function()(**arguments)
    except RuntimeError as exc:
        raise ImageLingoError(f"pipeline run failed: {exc}") from exc
    runs = sorted(set(pipeline_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ImageLingoError(f"the run wrote nothing under {pipeline_root}")
    rows = summarize(runs[-1])
    rows.append({"stage": "total", "status": "", "seconds": round(time.perf_counter() - started)})
    return rows


def summarize(run_dir: Path) -> list[dict]:
    """Stage, status, seconds and key outputs, from each stage's metadata.json."""
    rows = []
    for stage in STAGES:
        task_dir = run_dir / stage
        metadata_files = sorted(task_dir.glob("*/metadata.json")) if task_dir.is_dir() else []
        if not metadata_files:
            rows.append({"stage": stage, "status": "skipped", "seconds": "", "outputs": ""})
            continue
        record = json.loads(metadata_files[0].read_text())
        key = record.get("metrics") or record.get("counts") or {}
        if stage == "train":
            key = {"best_val_bleu4": record.get("best_val_bleu4")}
        if stage == "deploy":
            key = {"action": record.get("action"), "url": record.get("url")}
        rows.append(
            {
                "stage": stage,
                "status": "done",
                "seconds": record.get("seconds", ""),
                "outputs": key,
                "path": str(metadata_files[0].parent),
            }
        )
    return rows


def client(host: str):
    import kfp

    return kfp.Client(host=host)


def _compiled(tmp: str) -> str:
    """Compile afresh (with this environment's image names) into a scratch folder."""
    return str(compile_all(Path(tmp))[-1])


def submit(host: str, experiment: str, arguments: dict[str, Any], kfp_client: Any = None) -> str:
    """Compile and submit one run; returns its run id."""
    kfp_client = kfp_client or client(host)
    with tempfile.TemporaryDirectory(prefix="imagelingo-kfp-") as tmp:
        run = kfp_client.create_run_from_pipeline_package(
            _compiled(tmp), arguments=arguments, experiment_name=experiment
        )
    return run.run_id


def schedule(
    host: str, cron: str, experiment: str, arguments: dict[str, Any], kfp_client: Any = None
) -> str:
    """A recurring run. KFP cron has 6 fields (seconds first): '0 0 3 * * *' is 03:00 daily."""
    if len(cron.split()) != 6:
        raise ImageLingoError(
            f"cron {cron!r}: KFP expects 6 fields (second minute hour day month weekday)"
        )
    kfp_client = kfp_client or client(host)
    experiment_id = kfp_client.create_experiment(experiment).experiment_id
    with tempfile.TemporaryDirectory(prefix="imagelingo-kfp-") as tmp:
        job = kfp_client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=f"imagelingo {cron}",
            cron_expression=cron,
            pipeline_package_path=_compiled(tmp),
            params=arguments,
        )
    return job.recurring_run_id
