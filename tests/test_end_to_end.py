"""The model learns: on the synthetic scenes a briefly trained model beats both an untrained one
and the best image-blind answer (one fixed caption for every image).

Why these thresholds: synthetic captions share templates ("a big red circle on the left"), so a
fixed caption already matches many n-grams. The most frequent training caption is that image-blind
baseline; beating it by 0.2 BLEU-4 means the decoder reads colour, shape and position from the
features. An untrained decoder repeats arbitrary words and scores near 0.
"""

import json
from collections import Counter

import pytest
import torch

from imagelingo.captioning import caption_image_files
from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.encoders import SPECS
from imagelingo.errors import QualityGateError
from imagelingo.evaluate import EvaluateConfig, evaluate
from imagelingo.inference.captioner import save_model_dir
from imagelingo.inference.decoder import CaptionDecoder
from imagelingo.inference.vocab import Vocab
from imagelingo.metrics import bleu_scores
from imagelingo.train import TrainConfig, decoder_config


def image_blind_bleu4(dataset_dir) -> float:
    train_captions = [
        " ".join(tokenize(c)) for r in load_records(dataset_dir, "train") for c in r.captions
    ]
    constant = Counter(train_captions).most_common(1)[0][0].split()
    test = load_records(dataset_dir, "test")
    return bleu_scores([[tokenize(c) for c in r.captions] for r in test], [constant] * len(test))[
        "bleu4"
    ]


def test_trained_model_beats_untrained_and_image_blind_baselines(
    pipeline_dirs, trained_model, tmp_path
):
    trained = evaluate(
        trained_model, pipeline_dirs["features"], pipeline_dirs["dataset"], tmp_path / "trained"
    )["metrics"]["bleu4"]

    torch.manual_seed(0)
    vocab = Vocab.load(pipeline_dirs["vocab_file"])
    untrained_dir = tmp_path / "untrained_model"
    save_model_dir(
        untrained_dir,
        CaptionDecoder(decoder_config(TrainConfig(), len(vocab), 1280)),
        vocab,
        SPECS["efficientnet_lite0"],
    )
    untrained = evaluate(
        untrained_dir, pipeline_dirs["features"], pipeline_dirs["dataset"], tmp_path / "untrained"
    )["metrics"]["bleu4"]
    blind = image_blind_bleu4(pipeline_dirs["dataset"])

    assert untrained < 0.05
    assert trained > blind + 0.2, (trained, blind)
    assert trained > 0.5


def test_evaluate_writes_metrics_and_a_report_with_images_and_attention(
    pipeline_dirs, trained_model, tmp_path
):
    evaluate(
        trained_model,
        pipeline_dirs["features"],
        pipeline_dirs["dataset"],
        tmp_path,
        EvaluateConfig(beam_width=3, report_samples=4),
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
    assert metrics["images"] == len(load_records(pipeline_dirs["dataset"], "test"))
    report = (tmp_path / "report.html").read_text()
    assert report.count("<section>") == 4
    assert report.count('alt="test image"') == 4
    assert 'alt="attention for ' in report


def test_quality_gate_fails_with_a_clear_message_and_keeps_the_metrics(
    pipeline_dirs, trained_model, tmp_path
):
    with pytest.raises(QualityGateError, match=r"bleu4 0\.\d+ on test is below the minimum 0\.99"):
        evaluate(
            trained_model,
            pipeline_dirs["features"],
            pipeline_dirs["dataset"],
            tmp_path,
            EvaluateConfig(min_score=0.99),
        )
    assert (tmp_path / "metrics.json").is_file()


def test_image_files_are_captioned_end_to_end(pipeline_dirs, trained_model):
    record = load_records(pipeline_dirs["dataset"], "test")[0]
    image = pipeline_dirs["dataset"] / "images" / record.image
    caption = caption_image_files(trained_model, [image], beam_width=3, max_len=30)[0]
    assert caption.words and all(w in Vocab.load(trained_model).words for w in caption.words)


def test_evaluate_logs_to_a_new_run_when_the_training_run_is_in_another_store(
    pipeline_dirs, trained_model, tmp_path, monkeypatch, caplog
):
    """A model trained against one MLflow store and evaluated against another (a copied model
    directory, a different MLFLOW_TRACKING_URI) is evaluated, not refused with a traceback."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    record = evaluate(
        trained_model, pipeline_dirs["features"], pipeline_dirs["dataset"], tmp_path / "eval"
    )
    assert record["metrics"]["bleu4"] >= 0 and "not in this tracking store" in caplog.text
