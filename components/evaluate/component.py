from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    features: Input[Dataset],
    dataset: Input[Dataset],
    beam_width: int,
    max_len: int,
    length_penalty: float,
    gate_metric: str,
    report_samples: int,
    device: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> float:
    """The caption metrics of the test split (nltk BLEU-1..4 and the COCO metrics: BLEU-1..4,
    METEOR, ROUGE-L, CIDEr-D; all shown in the KFP UI), captions.json and the HTML report;
    returns the value of `gate_metric` (bleu4 | cider). captions.json is in `evaluation`.
    The gate and the registry version are the pipeline's never-cached `release` task (a skipped
    deploy, not a failed run; a cached evaluation must not skip registering), so the evaluation
    here gates at 0 and registers nothing."""
    import json
    import shutil
    from pathlib import Path

    from imagelingo.evaluate import EvaluateConfig, evaluate
    from imagelingo.metrics import METRICS

    config = EvaluateConfig(
        beam_width=beam_width,
        max_len=max_len,
        length_penalty=length_penalty,
        gate_metric=gate_metric,
        min_score=0.0,
        report_samples=report_samples,
        device=device,
    )
    record = evaluate(
        Path(model.path),
        Path(features.path),
        Path(dataset.path),
        Path(evaluation.path),
        config,
        register_version=False,
    )
    for name in METRICS:
        if name in record["metrics"]:  # spice only where it can run
            metrics.log_metric(name, record["metrics"][name])
    # The scores as the Metrics artifact's file too: kfp.local's cache treats an output artifact
    # without a file as missing and would re-run (and re-register) an unchanged evaluation.
    Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics.path).write_text(json.dumps(record["metrics"], indent=2) + "\n")
    shutil.copyfile(Path(evaluation.path) / "report.html", report.path)
    return float(record["metrics"][gate_metric])
