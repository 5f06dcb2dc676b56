"""The KFP pipeline from the command line: run it here (kfp.local), compile it for a target
Kubeflow release (imagelingo.cluster.platforms), submit or schedule it on Kubeflow Pipelines,
compiled for the backend version its API reports. The DAG itself lives in
pipelines/imagelingo_pipeline.py and the components in components/<stage>/, in the source tree
next to params.yaml.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagelingo.cluster.platforms import DEFAULT_TARGET, TARGETS, Target, target_for_backend
from imagelingo.cluster.pod_options import PodOptions
from imagelingo.config import REPO_ROOT
from imagelingo.errors import ImageLingoError

PIPELINES = REPO_ROOT / "pipelines"
PIPELINE_YAML = PIPELINES / TARGETS[DEFAULT_TARGET].pipeline_file  # the default target's
STAGES = (
    "fingerprint",
    "ingest",
    "vocab",
    "features",
    "merge",
    "train",
    "evaluate",
    "release",
    "package",
    "deploy",
)


def _source_tree() -> None:
    if not (REPO_ROOT / "pipelines" / "imagelingo_pipeline.py").is_file():
        raise ImageLingoError(
            f"pipelines/imagelingo_pipeline.py not found under {REPO_ROOT}: the pipeline commands "
            "run from a checkout of the repository"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def pipeline_function(target: Target | None = None, pods: PodOptions = PodOptions()):
    """The pipeline for `target` (default: the newest supported, what kfp.local runs)."""
    _source_tree()
    from pipelines.imagelingo_pipeline import build

    return build(target or TARGETS[DEFAULT_TARGET], pods)


def components() -> dict[str, Any]:
    """stage name -> KFP component, in DAG order."""
    import importlib

    _source_tree()
    return {
        stage: getattr(importlib.import_module(f"components.{stage}.component"), stage)
        for stage in STAGES
    }


def compile_all(
    root: Path = REPO_ROOT,
    targets: tuple[str, ...] | None = None,
    pods: PodOptions = PodOptions(),
) -> list[Path]:
    """Write every components/<stage>/component.yaml and pipelines/imagelingo_pipeline.<target>.yaml
    for each of `targets` (default: every supported one) under `root` (the source tree; tests
    compile into a temporary folder and compare)."""
    from kfp import compiler

    from imagelingo.cluster.platforms import target as named

    chosen = [named(name) for name in targets or tuple(TARGETS)]  # unknown names: one line
    written = []
    for stage, component in components().items():
        path = Path(root) / "components" / stage / "component.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    for target in chosen:
        path = Path(root) / "pipelines" / target.pipeline_file
        written.append(compile_target(target, path, pods))
    return written


def compile_target(target: Target, path: Path, pods: PodOptions = PodOptions()) -> Path:
    """Compile the pipeline for `target` into `path`: the platform spec fitted to the target's
    protos, the target named in the file's header, and refused (nothing written) when the
    target's backend would not run it as written (imagelingo.cluster.kfp_rules)."""
    import yaml
    from kfp import compiler

    from imagelingo.cluster.kfp_rules import fit_platform, problems

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".compiling.{path.name}")
    compiler.Compiler().compile(pipeline_function(target, pods), str(scratch))
    text = scratch.read_text()
    scratch.unlink()
    spec, *platform = yaml.safe_load_all(text)
    platform = fit_platform(platform[0], target) if platform else {}
    found = problems(spec, platform, target)
    if found:
        raise ImageLingoError(
            f"the pipeline would not run as written on {target.name} (KFP {target.kfp_backend}): "
            + "; ".join(found)
        )
    header = (
        f"# Target: {target.name} ({target.description}).\n"
        f"# Upload this file in that release's KFP UI, or run `imagelingo submit --target "
        f"{target.name}`.\n# Written by `imagelingo compile --target {target.name}`: do not "
        "edit.\n"
    )
    with path.open("w") as out:
        out.write(header + _leading_comments(text))
        yaml.dump_all([spec, platform] if platform else [spec], out, sort_keys=True)
    return path


def _leading_comments(text: str) -> str:
    """kfp's header (the pipeline's name, description and parameters, as `#` lines)."""
    lines = []
    for line in text.splitlines(True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


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


class _CacheHits(logging.Handler):
    """kfp.local logs `Task NAME cache hit (key=...)` for each task it serves from its cache."""

    PATTERN = re.compile(r"Task (\S+) cache hit")

    def __init__(self):
        super().__init__(logging.INFO)
        self.tasks: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.match(record.getMessage())
        if match:
            self.tasks.add(match.group(1))


def run_local(
    pipeline_root: Path,
    arguments: dict[str, Any],
    cache: bool = False,
    target: str = DEFAULT_TARGET,
) -> list[dict]:
    """The whole DAG of `target`'s layout through kfp.local's SubprocessRunner; returns one
    summary row per stage. With `cache`, kfp.local's task cache (under pipeline_root/.kfp_cache)
    is on, keyed like KFP's: a task whose inputs did not change is served from it ("cached")."""
    from kfp import local

    from imagelingo.cluster.platforms import target as named

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # Tasks run `python` from PATH: make it this interpreter, which has imagelingo installed.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=cache,
    )
    before = set(pipeline_root.iterdir())
    started = time.perf_counter()
    hits = _CacheHits()
    root_logger = logging.getLogger()
    # kfp.local swaps the root logger's handlers around each task and puts back what it saw:
    # tasks of a ParallelFor run in threads, so one can put back another's stdout handler,
    # which then outlives the run (and its stream). Restore our own snapshot afterwards.
    handlers = root_logger.handlers[:]
    root_logger.addHandler(hits)
    level = root_logger.level
    root_logger.setLevel(min(level or logging.WARNING, logging.INFO))
    try:
        pipeline_function(named(target))(**arguments)
    except RuntimeError as exc:
        raise ImageLingoError(f"pipeline run failed: {exc}") from exc
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
    runs = sorted(set(pipeline_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    runs = [r for r in runs if not r.name.startswith(".")]
    if not runs:
        raise ImageLingoError(f"the run wrote nothing under {pipeline_root}")
    rows = summarize(runs[-1], cached=hits.tasks)
    rows.append({"stage": "total", "status": "", "seconds": round(time.perf_counter() - started)})
    return rows


def summarize(run_dir: Path, cached: set[str] = frozenset()) -> list[dict]:
    """Stage, status, seconds and key outputs, from each stage's metadata.json."""
    rows = []
    for stage in STAGES:
        task_dir = run_dir / stage
        metadata_files = sorted(task_dir.glob("*/metadata.json")) if task_dir.is_dir() else []
        # a task inside dsl.ParallelFor (features): one folder per iteration, <loop>-iteration-i
        looped = run_dir.glob(f"*-iteration-*/{stage}/*/metadata.json")
        metadata_files = metadata_files or sorted(looped)
        answer = task_dir / "executor_output.json"
        if not metadata_files and answer.is_file():  # a task with only a return value
            values = json.loads(answer.read_text()).get("parameterValues", {})
            rows.append({"stage": stage, "status": "done", "seconds": "", "outputs": values})
            continue
        if not metadata_files:
            status = "cached" if stage in cached else "skipped"
            rows.append({"stage": stage, "status": status, "seconds": "", "outputs": ""})
            continue
        record = json.loads(metadata_files[0].read_text())
        key = record.get("metrics") or record.get("counts") or {}
        if stage == "train":
            key = {"best_val_bleu4": record.get("best_val_bleu4")}
        if stage == "deploy":
            key = {"action": record.get("action"), "url": record.get("url")}
        if stage == "release":
            key = {"model_version": record.get("model_version"), "gate": record.get("gate")}
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


@dataclass(frozen=True)
class Access:
    """How to reach and authenticate to the KFP API (`imagelingo submit/schedule` flags).

    Credentials, the first that applies: an existing bearer token (--token, or KFP_TOKEN);
    the ServiceAccount token file named by KF_PIPELINES_SA_TOKEN_PATH (what a pod in a
    multi-user Kubeflow mounts, kfp's ServiceAccountTokenVolumeCredentials); cookies (--cookies,
    or KFP_COOKIES, e.g. `oauth2_proxy_kubeflow=...` copied from a logged-in browser behind the
    Kubeflow central dashboard). `namespace` is the Kubeflow profile namespace runs go to
    (--namespace or KFP_NAMESPACE; empty for single-user KFP)."""

    host: str
    namespace: str = ""
    token: str = ""
    cookies: str = ""

    @classmethod
    def from_env(cls, host: str, namespace=None, token=None, cookies=None) -> Access:
        return cls(
            host=host,
            namespace=namespace or os.environ.get("KFP_NAMESPACE", ""),
            token=token or os.environ.get("KFP_TOKEN", ""),
            cookies=cookies or os.environ.get("KFP_COOKIES", ""),
        )


SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


def _headers(access: Access) -> dict[str, str]:
    """The headers kfp.Client will send, for the reachability probe."""
    headers = {}
    if access.token:
        headers["Authorization"] = f"Bearer {access.token}"
    elif os.environ.get(SA_TOKEN_ENV):
        path = Path(os.environ[SA_TOKEN_ENV])
        if not path.is_file():
            raise ImageLingoError(f"{SA_TOKEN_ENV}={path}: no such token file")
        headers["Authorization"] = f"Bearer {path.read_text().strip()}"
    if access.cookies:
        headers["Cookie"] = access.cookies
    return headers


def _probe(access: Access) -> dict:
    """GET /apis/v2beta1/healthz once, so an unreachable host or refused credentials is one
    clear line now, not kfp.Client's five retries with tracebacks. Returns its JSON (the API
    server's, or the UI server's through Kubeflow's ingress: reported_version)."""
    import urllib.error
    import urllib.request

    if not access.host.startswith(("http://", "https://")):
        raise ImageLingoError(f"--host {access.host!r}: expected http(s)://HOST[:PORT]")
    url = f"{access.host.rstrip('/')}/apis/v2beta1/healthz"
    request = urllib.request.Request(url, headers=_headers(access))
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ImageLingoError(
                f"KFP at {access.host} refused the credentials (HTTP {exc.code}): pass --token "
                f"(or KFP_TOKEN), set {SA_TOKEN_ENV}, or --cookies (or KFP_COOKIES)"
            ) from None
        raise ImageLingoError(
            f"KFP at {access.host} answered HTTP {exc.code} on {url}: is it the KFP API?"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageLingoError(f"cannot reach KFP at {access.host}: {reason}") from None
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise ImageLingoError(
            f"KFP at {access.host}: {url} did not answer JSON (a login page? pass --token or "
            "--cookies)"
        ) from None


def reported_version(answer: dict) -> str:
    """The backend version a healthz answer names, "" when it names none. Straight from the API
    server it is `tag_name` (kubeflow/pipelines 2.5.0 backend/src/apiserver/main.go:278-281,
    2.15.0 :362-365); through Kubeflow's ingress, which routes /pipeline to the UI server, it is
    the UI server's copy `apiServerTagName` (frontend/server/handlers/healthz.ts:76-89 at 2.5.0,
    :77-90 at 2.15.0). The release images are built without TAG_NAME (no build-arg in
    image-builds.yml / build-and-push.yml at either tag), so both say "unknown"
    (backend/Dockerfile:61-62, 2.15.0 :64-65): a stock Kubeflow names no version."""
    for field in ("tag_name", "apiServerTagName"):
        version = str(answer.get(field) or "").strip()
        if version and version != "unknown":
            return version
    return ""


def backend_target(access: Access, requested: str = "auto") -> Target:
    """The target to compile for: the one `requested`, which must match the backend when the
    backend names its version, or (`auto`) the one whose KFP backend the answer names."""
    from imagelingo.cluster.platforms import target as named

    answer = _probe(access)
    if answer.get("apiServerReady") is False:
        raise ImageLingoError(
            f"KFP at {access.host}: the UI server answers but its API server does not "
            "(apiServerReady false): is ml-pipeline running?"
        )
    version = reported_version(answer)
    if requested != "auto":
        chosen = named(requested)
        if version and chosen.kfp_backend != version.lstrip("v"):
            raise ImageLingoError(
                f"--target {requested} is for KFP {chosen.kfp_backend} but {access.host} runs KFP "
                f"{version}: use --target auto"
            )
        return chosen
    if not version:
        said = {k: answer[k] for k in ("tag_name", "apiServerTagName") if k in answer}
        raise ImageLingoError(
            f"KFP at {access.host} does not name its version ({said or 'no tag_name'}; Kubeflow's "
            f"release images say 'unknown'): pass --target, one of {', '.join(TARGETS)}"
        )
    return target_for_backend(version)


def client(access: Access | str):
    """kfp.Client with the standard credentials and namespace (see Access), after a probe."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    if isinstance(access, str):
        access = Access.from_env(access)
    _probe(access)
    options: dict[str, Any] = {"host": access.host}
    if access.namespace:
        options["namespace"] = access.namespace
    if access.token:
        options["existing_token"] = access.token
    elif os.environ.get(SA_TOKEN_ENV):
        options["credentials"] = ServiceAccountTokenVolumeCredentials(os.environ[SA_TOKEN_ENV])
    if access.cookies:
        options["cookies"] = access.cookies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**options)


@contextmanager
def _api_errors(access: Access) -> Iterator[None]:
    """kfp_server_api / urllib3 failures -> one ImageLingoError line naming the problem."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    try:
        yield
    except ApiException as exc:
        message = _api_message(exc)
        if exc.status in (401, 403) and access.namespace:
            raise ImageLingoError(
                f"KFP at {access.host} refused namespace {access.namespace!r} (HTTP "
                f"{exc.status}): is it a Kubeflow profile you can use? {message}"
            ) from None
        if exc.status == 404 and access.namespace:
            raise ImageLingoError(
                f"KFP at {access.host}: namespace {access.namespace!r} not found (HTTP 404): "
                f"{message}"
            ) from None
        raise ImageLingoError(f"KFP at {access.host}: HTTP {exc.status}: {message}") from None
    except (Urllib3Error, OSError) as exc:
        raise ImageLingoError(f"cannot reach KFP at {access.host}: {exc}") from None


def _api_message(exc) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.body or exc.reason).strip().splitlines()[0][:300]
    return str(body.get("message") or body.get("error") or exc.reason).splitlines()[0][:300]


def _compiled(tmp: str, target: Target, pods: PodOptions) -> str:
    """Compile afresh for `target` (with this environment's image names) into a scratch folder."""
    return str(compile_target(target, Path(tmp) / target.pipeline_file, pods))


def _access(host: Access | str) -> Access:
    return host if isinstance(host, Access) else Access.from_env(host)


def submit(
    host: Access | str,
    experiment: str,
    arguments: dict[str, Any],
    kfp_client: Any = None,
    target: str = "auto",
    pods: PodOptions = PodOptions(),
) -> str:
    """Compile for the backend's target (`target`: auto, or a name that must match it) and
    submit one run; returns its run id."""
    access = _access(host)
    with _api_errors(access):
        chosen = backend_target(access, target)
        kfp_client = kfp_client or client(access)
        with tempfile.TemporaryDirectory(prefix="imagelingo-kfp-") as tmp:
            run = kfp_client.create_run_from_pipeline_package(
                _compiled(tmp, chosen, pods),
                arguments=arguments,
                experiment_name=experiment,
                namespace=access.namespace or None,
            )
    return run.run_id


def schedule(
    host: Access | str,
    cron: str,
    experiment: str,
    arguments: dict[str, Any],
    kfp_client: Any = None,
    target: str = "auto",
    pods: PodOptions = PodOptions(),
) -> str:
    """A recurring run. KFP cron has 6 fields (seconds first): '0 0 3 * * *' is 03:00 daily.
    Each run fingerprints its data in its first, never-cached task, so an unchanged source is
    served from the cache and a changed one retrains."""
    if len(cron.split()) != 6:
        raise ImageLingoError(
            f"cron {cron!r}: KFP expects 6 fields (second minute hour day month weekday)"
        )
    access = _access(host)
    with _api_errors(access):
        chosen = backend_target(access, target)
        kfp_client = kfp_client or client(access)
        experiment_id = kfp_client.create_experiment(
            experiment, namespace=access.namespace or None
        ).experiment_id
        with tempfile.TemporaryDirectory(prefix="imagelingo-kfp-") as tmp:
            job = kfp_client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=f"imagelingo {cron}",
                cron_expression=cron,
                pipeline_package_path=_compiled(tmp, chosen, pods),
                params=arguments,
            )
    return job.recurring_run_id


def pipeline_default(name: str) -> Any:
    import inspect

    return inspect.signature(pipeline_function().pipeline_func).parameters[name].default
