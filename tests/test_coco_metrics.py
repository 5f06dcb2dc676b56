"""The COCO caption metrics (pycocoevalcap, behind imagelingo.metrics) on hand-made cases, checked
against values computed here independently: BLEU by nltk on the same tokens, ROUGE-L and CIDEr-D
by the small implementations below, written from their definitions. The results file
(captions.json) is checked on load and re-scores to exactly the numbers evaluate wrote.

The cases that run Java (the PTB tokenizer, METEOR) are few: METEOR starts once per process."""

import json
import logging
import math
from collections import Counter

import pytest
from nltk.translate.bleu_score import corpus_bleu

from imagelingo import metrics
from imagelingo.cli import main
from imagelingo.data.dataset import ImageRecord, load_records
from imagelingo.errors import ImageLingoError
from imagelingo.evaluate import (
    RESULTS_FILE,
    bootstrap_cider,
    evaluate,
    read_results,
    rescore,
    results_cider,
)
from imagelingo.metrics import COCO_METRICS, METRICS, caption_metrics, ptb_tokenize

# Lower-case, punctuation-free, so the PTB tokens are the words split on spaces; every caption
# has 4 words or more (nltk and coco-caption then agree on BLEU's n-gram precisions).
REFERENCES = [
    [
        "a black dog runs across the green grass",
        "a dog is running on the grass",
        "the black dog plays outside",
    ],
    [
        "two children play in the water",
        "kids are splashing in a pool",
        "two young children swim in the water",
    ],
    [
        "a man rides a red bike down the street",
        "a cyclist on a city street",
        "a man is riding a bicycle",
    ],
]
HYPOTHESES = [
    "a black dog runs on the grass",
    "two children two children swim in a pool",  # repeats: CIDEr-D's clipping (min) matters
    "a man rides a bicycle on the street",
]
KEYS = ["dog.jpg", "pool.jpg", "bike.jpg"]


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def cider_d(references: list[list[str]], hypotheses: list[str]) -> float:
    scores = cider_d_per_image(references, hypotheses)
    return sum(scores) / len(scores)


def cider_d_per_image(
    references: list[list[str]], hypotheses: list[str], sigma: float = 6.0
) -> list[float]:
    """CIDEr-D (Vedantam et al. 2015; the coco-caption variant): per n-gram order 1..4, tf-idf
    vectors with tf the raw count and idf log(images / images whose references hold the
    n-gram); a candidate's similarity to a reference is sum(min(c, r) * r) / (|c| |r|) times
    exp(-(length difference)^2 / (2 sigma^2)); mean over references, mean over orders, x10:
    each image's score (the corpus score is their mean)."""
    images = len(references)
    df = Counter(
        gram
        for refs in references
        for gram in {g for r in refs for n in range(1, 5) for g in ngrams(r.split(), n)}
    )

    def tfidf(words: list[str], n: int) -> dict:
        return {
            g: c * (math.log(images) - math.log(max(1, df[g]))) for g, c in ngrams(words, n).items()
        }

    per_image = []
    for refs, hypothesis in zip(references, hypotheses, strict=True):
        words = hypothesis.split()
        orders = []
        for n in range(1, 5):
            candidate = tfidf(words, n)
            similarities = []
            for reference in refs:
                ref_words = reference.split()
                target = tfidf(ref_words, n)
                dot = sum(
                    min(w, target.get(g, 0.0)) * target.get(g, 0.0) for g, w in candidate.items()
                )
                norms = math.hypot(*candidate.values()) * math.hypot(*target.values())
                penalty = math.exp(-((len(words) - len(ref_words)) ** 2) / (2 * sigma**2))
                similarities.append((dot / norms if norms else 0.0) * penalty)
            orders.append(sum(similarities) / len(similarities))
        per_image.append(10 * sum(orders) / len(orders))
    return per_image


def rouge_l(references: list[list[str]], hypotheses: list[str], beta: float = 1.2) -> float:
    """ROUGE-L (Lin 2004) as coco-caption scores it: the F-measure of the best precision and the
    best recall of the longest common subsequence over an image's references, mean over images."""

    def lcs(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = (
                    table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
                )
        return table[-1][-1]

    scores = []
    for refs, hypothesis in zip(references, hypotheses, strict=True):
        words = hypothesis.split()
        common = [lcs(r.split(), words) for r in refs]
        precision = max(c / len(words) for c in common)
        recall = max(c / len(r.split()) for c, r in zip(common, refs, strict=True))
        scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return sum(scores) / len(scores)


def test_the_ptb_tokenizer_lowercases_and_drops_punctuation():
    assert ptb_tokenize(
        ["A Dog, running!", "", 'Two "men" talk...', "a\x0cpage\u2028break", ""]
    ) == [
        "a dog running",
        "",
        "two men talk",
        "a page break",  # one caption stays one line
        "",
    ]


def test_identical_captions_score_the_maximum_of_every_metric():
    # raw references (case, punctuation) against the captioner's lower-case words
    scores = caption_metrics(
        [["A dog runs on the grass."], ["Two men are talking!"]],
        ["a dog runs on the grass", "two men are talking"],
        ["dog.jpg", "men.jpg"],
    )
    # CIDEr-D runs 0-10: 10 when each caption is its image's only reference and no n-gram is
    # shared across images (every tf-idf weight log 2, every cosine 1)
    assert scores == {**{k: 1.0 for k in METRICS if k not in ("cider", "spice")}, "cider": 10.0}


def test_disjoint_captions_score_zero():
    scores = caption_metrics(
        [["a dog runs on the grass"], ["two men are talking"]],
        ["yellow buses wait outside", "cats sleep in baskets"],
        ["dog.jpg", "men.jpg"],
    )
    assert scores == {k: 0.0 for k in METRICS if k != "spice"}


def test_scores_match_independent_computations():
    scores = caption_metrics(REFERENCES, HYPOTHESES, KEYS)
    tokens = [[r.split() for r in refs] for refs in REFERENCES]
    hypotheses = [h.split() for h in HYPOTHESES]
    for n in range(1, 5):
        nltk_bleu = corpus_bleu(tokens, hypotheses, weights=(1 / n,) * n)
        assert scores[f"coco_bleu{n}"] == pytest.approx(nltk_bleu, abs=2e-6)
        assert scores[f"bleu{n}"] == pytest.approx(nltk_bleu, abs=2e-6)
    assert scores["rouge_l"] == pytest.approx(rouge_l(REFERENCES, HYPOTHESES), abs=2e-6)
    assert scores["cider"] == pytest.approx(cider_d(REFERENCES, HYPOTHESES), abs=2e-6)
    assert 0.2 < scores["meteor"] < 1.0
    assert 0.0 < scores["coco_bleu4"] < scores["coco_bleu1"] < 1.0  # a real, non-trivial case


def test_cider_per_image_matches_the_definition_image_by_image():
    # what benchmarks/compare_results.py bootstraps: each image's CIDEr-D, the idf from all
    per_image = metrics.cider_per_image(
        dict(zip(KEYS, REFERENCES, strict=True)), dict(zip(KEYS, HYPOTHESES, strict=True))
    )
    assert per_image == pytest.approx(cider_d_per_image(REFERENCES, HYPOTHESES), abs=2e-6)
    assert len(set(per_image)) == 3  # three different scores: the order is checked too


def test_missing_java_is_an_error_that_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageLingoError, match="java not found on PATH.*Java 8\\+ runtime"):
        caption_metrics([["a dog"]], ["a dog"], ["dog.jpg"])


def test_spice_without_its_corenlp_jars_is_skipped_with_one_log_line(caplog):
    if all(jar.is_file() for jar in metrics.spice_jars()):
        pytest.skip("SPICE's Stanford CoreNLP jars are installed here: it runs")
    with caplog.at_level(logging.INFO, logger="imagelingo.metrics"):
        assert metrics._spice({"a": ["a dog"]}, {"a": ["a dog"]}) is None
    assert [r.getMessage()[:13] for r in caplog.records] == ["SPICE skipped"]


TEST_RECORDS = [ImageRecord(image, "test", ["a caption"]) for image in ("a.jpg", "b.jpg")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"results\.json: not valid JSON .* expected a list of \{\"image\""),
        ('{"a.jpg": "a dog"}', r"results\.json: expected a JSON list of .*, got a dict"),
        ('[{"image": "a.jpg", "caption": "a dog"}, {"image": "b.jpg"}]', r"record 1: expected"),
        ('[{"image": "a.jpg", "caption": 7}]', r"record 0: expected \{\"image\": .* got"),
        (
            '[{"image": "a.jpg", "caption": "x"}, {"image": "a.jpg", "caption": "y"}]',
            r"record 1: a second caption for a\.jpg",
        ),
        ('[{"image": "c.jpg", "caption": "x"}]', r"record 0: c\.jpg is not an image of the test"),
        (
            '[{"image": "a.jpg", "caption": "x"}]',
            r"no caption for 1 of the 2 test images \(e\.g\. b\.jpg",
        ),
    ],
)
def test_a_bad_results_file_is_an_error_naming_the_file_and_record(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ImageLingoError, match=message):
        read_results(path, TEST_RECORDS, "test")


def test_rescoring_the_results_file_gives_the_evaluations_numbers(
    pipeline_dirs, trained_model, tmp_path
):
    dataset = pipeline_dirs["dataset"]
    record = evaluate(trained_model, pipeline_dirs["features"], dataset, tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / RESULTS_FILE).read_text())
    test_images = [r.image for r in load_records(dataset, "test")]
    assert [row["image"] for row in written] == test_images and all(
        row["caption"] for row in written
    )
    assert set(COCO_METRICS) <= set(record["metrics"])

    results = str(tmp_path / "eval" / RESULTS_FILE)
    assert (
        main(
            [
                "evaluate",
                "--results",
                results,
                "--dataset",
                str(dataset),
                "--out",
                str(tmp_path / "re"),
            ]
        )
        == 0
    )
    rescored = json.loads((tmp_path / "re" / "metrics.json").read_text())
    assert {k: rescored[k] for k in METRICS if k in record["metrics"]} == {
        k: record["metrics"][k] for k in METRICS if k in record["metrics"]
    }
    # the per-image scores benchmarks/compare_results.py resamples average to the same CIDEr-D
    (per_image,) = results_cider([results], dataset)
    assert len(per_image) == len(test_images)
    assert sum(per_image) / len(per_image) == pytest.approx(record["metrics"]["cider"], abs=1e-6)


def test_the_bootstrap_interval_is_the_sampling_error_of_the_mean_and_pairs_the_draws():
    import numpy as np

    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 0.3, 1000)  # skewed and non-negative, as per-image CIDEr-D is
    b = a + 0.05  # better by 0.05 on every image
    stats = bootstrap_cider([a.tolist(), b.tolist(), a.tolist()], resamples=4000)
    low, high = stats["cider_95"][0]
    error = 1.96 * a.std() / math.sqrt(len(a))  # the normal approximation: n is large
    assert low < a.mean() < high
    assert (high - low) / 2 == pytest.approx(error, rel=0.1)
    # paired draws: a constant per-image gain is known exactly, however wide each interval is
    assert stats["minus_first_95"][0] == pytest.approx([0.05, 0.05], abs=1e-4)
    assert stats["not_higher"] == [0.0, 1.0]  # b beats a in every draw; a never beats itself
    assert stats["minus_first_95"][1] == [0.0, 0.0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "d"], "give --model, --features and --out"),
        (["--dataset", "d", "--results", "r.json", "--model", "m"], "give no --model/--features"),
    ],
)
def test_evaluate_takes_a_model_or_a_results_file(argv, message, capsys):
    assert main(["evaluate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_dev_is_scored_to_choose_decoding_and_is_neither_logged_nor_registered(
    pipeline_dirs, trained_model, tmp_path
):
    dataset, out = pipeline_dirs["dataset"], tmp_path / "dev"
    argv = ["--model", str(trained_model), "--features", str(pipeline_dirs["features"])]
    assert main(["evaluate", *argv, "--dataset", str(dataset), "--out", str(out), "--split",
                 "dev", "--length-penalty", "0.5"]) == 0  # fmt: skip
    record = json.loads((out / "metadata.json").read_text())
    dev_images = [r.image for r in load_records(dataset, "dev")]
    assert record["metrics"]["split"] == "dev" and record["metrics"]["images"] == len(dev_images)
    assert record["params"]["length_penalty"] == 0.5
    assert record["model_version"] == ""  # a dev score never becomes a registry version
    assert [r["image"] for r in json.loads((out / RESULTS_FILE).read_text())] == dev_images
    rescored = rescore(out / RESULTS_FILE, dataset, split="dev")["metrics"]
    assert rescored["cider"] == record["metrics"]["cider"]
