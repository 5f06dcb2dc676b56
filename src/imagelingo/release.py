"""The release decision after an evaluation: register the model version, gate it, link to MLflow.

The pipeline runs this as its `release` task, never served from KFP's cache: the backend's cache
key is the task's inputs, image and command (kubeflow/pipelines 2.15.0
backend/src/v2/cacheutils/cache.go:173-225), not the registry it writes to, so a cached
evaluation would skip registering in a registry configured since, and a cached gate would compare
with the production model of an earlier day. Registering is idempotent: a second release of the
same MLflow run finds its version instead of adding one.

The gate: `gate_metric` must reach `min_score` and, when a `margin` is given and a version is in
production, that version's `gate_metric` plus `margin` (what retraining from CI asks: a new model
only if it beats the one serving; off by default, since scores on different test data do not
compare). It writes release.md (links to the MLflow run and registry version, shown in
the KFP UI as a Markdown artifact) and metadata.json (the same, for lineage and for deploy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from imagelingo.artifacts import read_metadata, write_metadata
from imagelingo.registry import MODEL_NAME, production_score, register
from imagelingo.tracking import tracking_uri

log = logging.getLogger(__name__)
SCORE_DECIMALS = 4  # the registry tags scores with 4 decimals (registry.register)
# what evaluate's `metrics` record holds beside the scores (imagelingo.metrics is not imported:
# this runs in the deploy image, without the metrics' packages)
CONTEXT_KEYS = ("beam_width", "images", "split")


def existing_version(run_id: str, uri: str | None = None) -> str:
    """The registry version already made from this MLflow run, or ""."""
    from imagelingo.registry import _client

    found = _client(uri).search_model_versions(f"name='{MODEL_NAME}' and run_id='{run_id}'")
    return str(max((int(v.version) for v in found), default=0) or "")


def mlflow_links(run_id: str, version: str, uri: str) -> dict[str, str]:
    """Web UI addresses of the run and the version when the tracking URI is an MLflow server
    (the UI's routes: #/experiments/<id>/runs/<run>, #/models/<name>/versions/<v>); for a local
    store (sqlite, a folder) only the URI and the ids."""
    links = {"tracking_uri": uri, "run_id": run_id, "model_version": version}
    if uri.startswith(("http://", "https://")):
        from imagelingo.registry import _client

        base = uri.rstrip("/")
        if run_id:
            experiment = _client(uri).get_run(run_id).info.experiment_id
            links["run_url"] = f"{base}/#/experiments/{experiment}/runs/{quote(run_id)}"
        if version:
            links["version_url"] = f"{base}/#/models/{MODEL_NAME}/versions/{version}"
    return links


def release(
    model_dir: Path,
    dataset_dir: Path,
    evaluation_dir: Path,
    out_dir: Path,
    gate_metric: str,
    min_score: float,
    margin: float | None,
    uri: str | None = None,
) -> dict:
    """Register (once per run), gate, write release.md and metadata.json; returns the record,
    whose `deploy` says whether the gate passed."""
    evaluation = read_metadata(evaluation_dir)
    evaluated = evaluation.get("metrics") or {}
    scores = {k: float(v) for k, v in evaluated.items() if k not in CONTEXT_KEYS}
    if gate_metric not in scores:
        raise ValueError(
            f"{evaluation_dir}: the evaluation has no {gate_metric!r} score "
            f"(it has {', '.join(sorted(scores)) or 'none'})"
        )
    # the run evaluate logged the pyfunc model to (the training run, unless the tracking store
    # lacked it), else the training run
    run_id = evaluation.get("mlflow_run_id") or read_metadata(model_dir).get("mlflow_run_id", "")
    uri = tracking_uri(uri)
    # production's score before this version can become production
    production = production_score(gate_metric, uri) if run_id and margin is not None else None
    version = (
        (existing_version(run_id, uri) or register(model_dir, dataset_dir, scores, uri, run_id))
        if run_id
        else ""
    )
    score = round(float(scores[gate_metric]), SCORE_DECIMALS)
    bar = min_score if production is None else max(min_score, production + (margin or 0.0))
    passed = score >= round(bar, SCORE_DECIMALS)
    reason = f"{gate_metric} {score:.4f} {'>=' if passed else '<'} {bar:.4f} " + (
        f"(min_score {min_score:.4f})"
        if production is None
        else f"(production {production:.4f} + margin {margin:.4f}, min_score {min_score:.4f})"
    )
    log.info("release gate: %s: %s", "deploy" if passed else "no deploy", reason)
    links = mlflow_links(run_id, version, uri)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "release.md").write_text(markdown(links, reason, passed, scores))
    return write_metadata(
        out_dir,
        "release",
        inputs={"model": str(model_dir), "evaluation": str(evaluation_dir)},
        params={"gate_metric": gate_metric, "min_score": min_score, "margin": margin},
        counts={},
        deploy=passed,
        gate=reason,
        production_score=production,
        **links,
    )


def markdown(links: dict[str, str], reason: str, passed: bool, scores: dict) -> str:
    run = links.get("run_url") or links["run_id"] or "(trained without an MLflow run)"
    version = links.get("version_url") or links["model_version"] or "(not registered)"
    if links.get("run_url"):
        run = f"[{links['run_id']}]({links['run_url']})"
    if links.get("version_url"):
        version = f"[{MODEL_NAME} v{links['model_version']}]({links['version_url']})"
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(scores.items()))
    return (
        f"# ImageLingo release\n\n"
        f"- **MLflow run:** {run}\n"
        f"- **Registry version:** {version}\n"
        f"- **Tracking URI:** `{links['tracking_uri']}`\n"
        f"- **Gate:** {'deploy' if passed else 'no deploy'}: {reason}\n\n"
        f"| test metric | value |\n|---|---|\n{rows}\n"
    )
