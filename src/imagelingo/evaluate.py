"""Stage 5, evaluate: beam search on the TEST split, the caption metrics (imagelingo.metrics:
nltk BLEU-1..4 and the COCO metrics BLEU, METEOR, ROUGE-L, CIDEr-D), captions.json, the HTML
report, and the quality gate on params.yaml's evaluate.gate_metric. The dev split can be scored
instead (`--split dev`) to choose decoding settings without looking at test.

`rescore` scores a results file (captions.json: one {"image", "caption"} per test image) without
the model: `imagelingo evaluate --results captions.json --dataset DIR`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from imagelingo.artifacts import read_metadata, write_json_atomic, write_metadata
from imagelingo.config import settings
from imagelingo.data.dataset import ImageRecord, load_records
from imagelingo.devices import resolve_device
from imagelingo.errors import ImageLingoError, QualityGateError
from imagelingo.features import FeatureStore, LazyRows
from imagelingo.inference.captioner import Captioner
from imagelingo.metrics import (
    GATE_METRICS,
    METRICS,
    caption_metrics,
    cider_per_image,
    prestart_meteor,
)
from imagelingo.registry import register

log = logging.getLogger(__name__)


@settings("evaluate")
class EvaluateConfig:
    """params.yaml's `evaluate` section: the defaults and what each means are written there."""

    beam_width: int
    max_len: int
    length_penalty: float
    gate_metric: str
    min_score: float
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
    register_version: bool = True,
) -> dict:
    """Score the model on `split`; write metrics.json, captions.json and report.html; enforce the
    quality gate. `register_version` False leaves the registry to the caller (the pipeline's
    never-cached `release` task, so a cached evaluation cannot skip it)."""
    from imagelingo.report import write_report

    config = config or EvaluateConfig()
    beam_width, max_len, length_penalty = config.beam_width, config.max_len, config.length_penalty
    gate_metric, min_score = check_gate(config), config.min_score
    report_samples = config.report_samples
    started = time.perf_counter()
    if beam_width < 1:
        raise ImageLingoError(f"beam_width must be >= 1, got {beam_width}")
    prestart_meteor()  # its jar loads while the model decodes
    captioner = Captioner.load(model_dir).to(resolve_device(config.device))
    records, features = split_features(captioner, model_dir, features_dir, dataset_dir, split)
    captions = captioner.caption_features(features, beam_width, max_len, length_penalty)
    texts = [c.text for c in captions]
    metrics = {
        **score_captions(records, texts),
        "beam_width": beam_width,
        "images": len(records),
        "split": split,
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_json_atomic(out_dir / RESULTS_FILE, results(records, texts))
    write_report(
        out_dir / "report.html",
        dataset_dir,
        records[:report_samples],
        captions[:report_samples],
        metrics,
    )
    passed = metrics[gate_metric] >= min_score
    model_version = run_id = ""
    if split == "test":
        run_id = _log_to_mlflow(model_dir, dataset_dir, out_dir, metrics, mlflow_tracking_uri)
        scores = {k: metrics[k] for k in METRICS if k in metrics}
        model_version = (
            register(model_dir, dataset_dir, scores, mlflow_tracking_uri, run_id)
            if passed and register_version
            else ""
        )
    else:
        # Scoring dev is for choosing decoding settings (beam width, length penalty) without
        # looking at test; it must not become the run's test metrics or register a version.
        log.info("%s split scored: not logged to MLflow, not registered", split)
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
            "gate_metric": gate_metric,
            "min_score": min_score,
            "split": split,
        },
        counts={"images": len(records), "references": sum(len(r.captions) for r in records)},
        metrics=metrics,
        quality_gate_passed=passed,
        model_version=model_version,  # in the MLflow registry ("" when not registered)
        mlflow_run_id=run_id,  # the run the pyfunc model was logged to (what release registers)
        seconds=round(time.perf_counter() - started, 2),
    )
    if not passed:
        raise QualityGateError(
            f"quality gate failed: {gate_metric} {metrics[gate_metric]:.4f} on {split} is below "
            f"the minimum {min_score:.4f} (evaluate.gate_metric, evaluate.min_score; see "
            f"{out_dir}/report.html)"
        )
    return record


RESULTS_FILE = "captions.json"


def split_features(
    captioner: Captioner, model_dir: Path, features_dir: Path, dataset_dir: Path, split: str
) -> tuple[list[ImageRecord], LazyRows]:
    """The split's records and their feature rows (read a chunk at a time), checked to come from
    the encoder the model was trained on."""
    store = FeatureStore(features_dir, split)
    if store.spec != captioner.spec:
        raise ImageLingoError(
            f"{features_dir} was made with encoder {store.spec.name}, but "
            f"{model_dir} was trained on {captioner.spec.name} features"
        )
    records = load_records(dataset_dir, split)
    return records, store.lazy([store.row[r.image] for r in records])


def check_gate(config: EvaluateConfig) -> str:
    if config.gate_metric not in GATE_METRICS:
        raise ImageLingoError(
            f"evaluate.gate_metric {config.gate_metric!r}: expected one of "
            + ", ".join(GATE_METRICS)
        )
    return config.gate_metric


def score_captions(records: list[ImageRecord], captions: list[str]) -> dict:
    """Every metric of imagelingo.metrics for one caption per record, in the records' order."""
    return caption_metrics([r.captions for r in records], captions, [r.image for r in records])


def results(records: list[ImageRecord], captions: list[str]) -> list[dict]:
    """The results file: one {"image", "caption"} per scored image, in the split's order."""
    return [{"image": r.image, "caption": c} for r, c in zip(records, captions, strict=True)]


def rescore(
    results_file: Path, dataset_dir: Path, out_dir: Path | None = None, split: str = "test"
) -> dict:
    """Score a results file (evaluate's captions.json, or any model's captions in that form)
    against `split` of the dataset, with no model: the same numbers evaluate reported for the
    same captions. Writes metrics.json to `out_dir` when given."""
    records = load_records(dataset_dir, split)
    captions = read_results(Path(results_file), records, split)
    metrics = {
        **score_captions(records, [captions[r.image] for r in records]),
        "images": len(records),
        "split": split,
        "results": str(results_file),
    }
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out_dir) / "metrics.json", metrics)
    return {"metrics": metrics}


def results_cider(
    results_files: list[Path], dataset_dir: Path, split: str = "test"
) -> list[list[float]]:
    """Each image's CIDEr-D (the split's order, the idf from all its references) for each
    results file: the per-image scores a bootstrap over images resamples."""
    records = load_records(dataset_dir, split)
    references = {r.image: r.captions for r in records}
    scores = []
    for path in results_files:
        captions = read_results(Path(path), records, split)
        scores.append(cider_per_image(references, {k: captions[k] for k in references}))
    return scores


def bootstrap_cider(
    per_image: list[list[float]], resamples: int = 10_000, seed: int = 0
) -> dict[str, list[float]]:
    """95% intervals by a paired bootstrap over images: each system's mean CIDEr-D ("cider_95":
    one [low, high] per system) and each later system's difference from the first
    ("minus_first_95"), plus the share of draws where it was not higher ("not_higher")."""
    import numpy as np

    scores = np.array(per_image)  # systems x images
    draws = np.random.default_rng(seed).integers(0, scores.shape[1], (resamples, scores.shape[1]))
    means = scores[:, draws].mean(axis=2)  # systems x resamples
    diffs = means[1:] - means[0]

    def interval(values) -> list[float]:
        return [round(float(x), 4) for x in np.percentile(values, [2.5, 97.5])]

    return {
        "cider": [round(float(m), 4) for m in scores.mean(axis=1)],
        "cider_95": [interval(m) for m in means],
        "minus_first_95": [interval(d) for d in diffs],
        "not_higher": [round(float((d <= 0).mean()), 4) for d in diffs],
    }


def read_results(path: Path, records: list[ImageRecord], split: str) -> dict[str, str]:
    """image -> caption from a results file, checked: a JSON list of {"image", "caption"} with
    one caption for every image of the split and none for another image."""
    expected = '{"image": "<file name>", "caption": "<text>"}'
    if not path.is_file():
        raise ImageLingoError(f"results file {path} not found")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImageLingoError(
            f"{path}: not valid JSON ({exc}); expected a list of {expected}"
        ) from None
    if not isinstance(rows, list):
        raise ImageLingoError(
            f"{path}: expected a JSON list of {expected}, got a {type(rows).__name__}"
        )
    wanted = {r.image for r in records}
    captions: dict[str, str] = {}
    for number, row in enumerate(rows):
        where = f"{path} record {number}"
        if not (
            isinstance(row, dict)
            and set(row) == {"image", "caption"}
            and isinstance(row["image"], str)
            and isinstance(row["caption"], str)
        ):
            raise ImageLingoError(f"{where}: expected {expected}, got {json.dumps(row)[:200]}")
        image = row["image"]
        if image in captions:
            raise ImageLingoError(f"{where}: a second caption for {image}; expected one per image")
        if image not in wanted:
            raise ImageLingoError(f"{where}: {image} is not an image of the {split} split")
        captions[image] = row["caption"]
    missing = [r.image for r in records if r.image not in captions]
    if missing:
        raise ImageLingoError(
            f"{path}: no caption for {len(missing)} of the {len(records)} {split} images "
            f"(e.g. {', '.join(missing[:3])}); expected one per image"
        )
    return captions


def _log_to_mlflow(
    model_dir: Path, dataset_dir: Path, out_dir: Path, metrics: dict, tracking_uri: str | None
) -> str:
    """Attach test metrics, the report and the model as a pyfunc model (what the registry
    registers) to the training run when there is one (a new run when the tracking store lacks
    it); returns the run's id."""
    from imagelingo.model_logging import log_captioner
    from imagelingo.tracking import mlflow_run

    run_id = read_metadata(model_dir).get("mlflow_run_id")
    with mlflow_run(tracking_uri, run_id=run_id, run_name="evaluate") as mlflow:
        mlflow.log_metrics({f"test_{k}": metrics[k] for k in METRICS if k in metrics})
        for name in ("report.html", "metrics.json", RESULTS_FILE):
            mlflow.log_artifact(str(out_dir / name), artifact_path="evaluation")
        log_captioner(model_dir, dataset_dir)
        return mlflow.active_run().info.run_id
