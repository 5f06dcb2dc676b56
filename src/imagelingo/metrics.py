"""Caption quality: corpus BLEU-1..4 (nltk), as training's validation and evaluation score it."""

from __future__ import annotations

import warnings

from nltk.translate.bleu_score import corpus_bleu

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (0.5, 0.5),
    "bleu3": (1 / 3, 1 / 3, 1 / 3),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}


def bleu_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 on a 0-1 scale; each hypothesis is scored against all its references."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    with warnings.catch_warnings():
        # nltk warns when a higher-order n-gram never matches; the score 0 is the right answer.
        warnings.simplefilter("ignore", UserWarning)
        return {
            name: float(corpus_bleu(references, hypotheses, weights=w))
            for name, w in BLEU_WEIGHTS.items()
        }
