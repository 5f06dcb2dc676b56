"""Stage 5, evaluate: beam search on the TEST split, BLEU-1..4, HTML report, quality gate."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from imagelingo.artifacts import read_metadata, write_json_atomic, write_metadata
from imagelingo.config import settings
from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.devices import resolve_device
from imagelingo.errors import ImageLingoError, QualityGateError
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import Captioner
from imagelingo.metrics import BLEU_WEIGHTS, bleu_scores
from imagelingo.registry import register

log = logging.getLogger(__name__)


@settings("evaluate")
class EvaluateConfig:
    """params.yaml's `evaluate` section: the defaults and what each means are written there."""

    beam_width: int
    max_len: int
    length_penalty: float
    min_bleu4: float
    report_samples: int
    device: str  # auto | cpu | cuda: where beam search runs (evaluate and `imagelingo caption`)


def evaluate(
    model_dir: Path,
    features_dir: Path,
    dataset_dir: Path,
    out_dir: Path,
    config: EvaluateConfig | None = None,
    split: str = "test",
    mlflow_tracking_uri: str | None = None,
) -> dict:
    """Score the model on `split`; write metrics.json and report.html; enforce the quality gate."""
    from imagelingo.report import write_report

    config = config or EvaluateConfig()
    beam_width, max_len, length_penalty = config.beam_width, config.max_len, config.length_penalty
    min_bleu4, report_samples = config.min_bleu4, config.report_samples
    started = time.perf_counter()
    if beam_width < 1:
        raise ImageLingoError(f"beam_width must be >= 1, got {beam_width}")
    captioner = Captioner.load(model_dir).to(resolve_device(config.device))
    store = FeatureStore(features_dir, split)
    if store.spec != captioner.spec:
        raise ImageLingoError(
            f"{features_dir} was made with encoder {store.spec.name}, but "
            f"{model_dir} was trained on {captioner.spec.name} features"
        )
    records = load_records(dataset_dir, split)
    rows = [store.row[r.image] for r in records]
    captions = captioner.caption_features(store.lazy(rows), beam_width, max_len, length_penalty)
    references = [[tokenize(c) for c in r.captions] for r in records]
    scores = bleu_scores(references, [c.words for c in captions])
    metrics = {
        **{k: round(v, 6) for k, v in scores.items()},
        "beam_width": beam_width,
        "images": len(records),
        "split": split,
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_report(
        out_dir / "report.html",
        dataset_dir,
        records[:report_samples],
        captions[:report_samples],
        metrics,
    )
    passed = scores["bleu4"] >= min_bleu4
    _log_to_mlflow(model_dir, out_dir, metrics, mlflow_tracking_uri)
    model_version = register(model_dir, dataset_dir, metrics, mlflow_tracking_uri) if passed else ""
    record = write_metadata(
        out_dir,
        "evaluate",
        inputs={
            "model": str(model_dir),
            "features": str(features_dir),
            "dataset": str(dataset_dir),
        },
        params={
            "beam_width": beam_width,
            "max_len": max_len,
            "length_penalty": length_penalty,
            "min_bleu4": min_bleu4,
            "split": split,
        },
        counts={"images": len(records), "references": sum(len(r) for r in references)},
        metrics=metrics,
        quality_gate_passed=passed,
        model_version=model_version,  # in the MLflow registry ("" when not registered)
        seconds=round(time.perf_counter() - started, 2),
    )
    if not passed:
        raise QualityGateError(
            f"quality gate failed: BLEU-4 {scores['bleu4']:.4f} on {split} is "
            f"below the minimum {min_bleu4:.4f} (see {out_dir}/report.html)"
        )
    return record


def _log_to_mlflow(model_dir: Path, out_dir: Path, metrics: dict, tracking_uri: str | None) -> None:
    """Attach test metrics and the report to the training run when there is one."""
    from imagelingo.tracking import mlflow_run

    run_id = read_metadata(model_dir).get("mlflow_run_id")
    with mlflow_run(tracking_uri, run_id=run_id, run_name="evaluate") as mlflow:
        mlflow.log_metrics({f"test_{k}": metrics[k] for k in BLEU_WEIGHTS})
        mlflow.log_artifact(str(out_dir / "report.html"), artifact_path="evaluation")
        mlflow.log_artifact(str(out_dir / "metrics.json"), artifact_path="evaluation")
