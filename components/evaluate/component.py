from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    features: Input[Dataset],
    dataset: Input[Dataset],
    beam_width: int,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> NamedTuple("Scores", bleu4=float, model_version=str):
    """BLEU-1..4 on the test split (shown in the KFP UI) and the HTML report. Returns BLEU-4 (the
    pipeline's dsl.If gates on it) and the model's version in the MLflow registry."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from imagelingo.evaluate import evaluate

    record = evaluate(
        Path(model.path), Path(features.path), Path(dataset.path), Path(evaluation.path), beam_width
    )
    for name in ("bleu1", "bleu2", "bleu3", "bleu4"):
        metrics.log_metric(name, record["metrics"][name])
    shutil.copyfile(Path(evaluation.path) / "report.html", report.path)
    scores = namedtuple("Scores", ["bleu4", "model_version"])
    return scores(float(record["metrics"]["bleu4"]), record["model_version"])
