from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.images import DEPLOY_IMAGE


@dsl.component(base_image=DEPLOY_IMAGE, install_kfp_package=False)
def release(
    model: Input[Model],
    dataset: Input[Dataset],
    evaluation: Input[Artifact],
    gate_metric: str,
    min_score: float,
    compare_production: bool,
    gate_margin: float,
    registration: Output[Artifact],
    links: Output[Markdown],
) -> bool:
    """Register the evaluated model version (once per MLflow run), then the quality gate: the
    evaluation's `gate_metric` must reach `min_score` and, with `compare_production`, production's
    score + `gate_margin`.
    Returns whether to package and deploy. `links` (shown in the KFP UI) and `registration`'s
    metadata lead to the MLflow run and registry version. Never cached (the pipeline sets it)."""
    import shutil
    from pathlib import Path

    from imagelingo.release import release as decide

    record = decide(
        Path(model.path),
        Path(dataset.path),
        Path(evaluation.path),
        Path(registration.path),
        gate_metric=gate_metric,
        min_score=min_score,
        margin=gate_margin if compare_production else None,
    )
    shutil.copyfile(Path(registration.path) / "release.md", links.path)
    keys = ("model_version", "run_id", "tracking_uri", "run_url", "version_url", "gate")
    registration.metadata.update({k: record[k] for k in keys if record.get(k)})
    return bool(record["deploy"])
