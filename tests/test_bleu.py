"""BLEU on known pairs: nltk corpus_bleu against all references, 0-1 scale."""

import math

import pytest

from imagelingo.metrics import bleu_scores


def test_identical_caption_scores_one():
    words = "a dog runs across the green grass".split()
    scores = bleu_scores([[words]], [words])
    assert scores == pytest.approx({"bleu1": 1.0, "bleu2": 1.0, "bleu3": 1.0, "bleu4": 1.0})


def test_known_pair_matches_hand_computed_precisions():
    # Hypothesis of 6 words vs one reference of 6 words, no brevity penalty.
    # Unigrams: "the cat sat on the mat" vs "the cat is on the mat": 5/6 match.
    # Bigrams: the-cat, on-the, the-mat: 3/5. Trigrams: on-the-mat 1/4. 4-grams: 0/3.
    hypothesis = "the cat sat on the mat".split()
    reference = "the cat is on the mat".split()
    scores = bleu_scores([[reference]], [hypothesis])
    assert scores["bleu1"] == pytest.approx(5 / 6)
    assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert scores["bleu4"] == pytest.approx(0.0, abs=1e-9)


def test_every_reference_counts():
    hypothesis = "a man rides a bike".split()
    only_first = bleu_scores([["a woman walks a dog".split()]], [hypothesis])
    all_refs = bleu_scores(
        [["a woman walks a dog".split(), "a man rides a bike".split()]], [hypothesis]
    )
    assert all_refs["bleu4"] == pytest.approx(1.0)
    assert only_first["bleu4"] < 0.1


def test_short_hypothesis_pays_the_brevity_penalty():
    reference = "a brown dog is running through the tall grass".split()
    hypothesis = "a brown dog".split()
    assert bleu_scores([[reference]], [hypothesis])["bleu1"] == pytest.approx(math.exp(1 - 9 / 3))
