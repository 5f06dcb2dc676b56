"""CIDEr-D as the COCO caption evaluation computes it (pycocoevalcap's `Cider`), made fast enough
to be a training reward: the document frequencies come ONCE from a reference corpus (for SCST the
train captions), and each image's references are turned into tf-idf vectors once, so scoring a
candidate costs a few dictionary look-ups per n-gram and reference.

The definition (n = 1..4): each caption is a tf-idf vector per n-gram order,
tf * (log(images in the corpus) - log(max(1, df))); a candidate's similarity to one reference
for order n is sum over the candidate's n-grams of min(cand, ref) * ref (the clipping that makes
it CIDEr-D), divided by both vectors' norms, times exp(-delta^2 / (2 sigma^2)) with sigma 6;
the score is the mean over orders of the mean over references, times 10.

pycocoevalcap's one quirk is kept so the numbers agree: delta is the difference in the number
of BIGRAMS (its `length` counts the n == 1 index, i.e. 2-grams), which is the word-length
difference for any two captions of two words or more.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

Ngram = tuple[str, ...]


def ngram_counts(words: Sequence[str], n: int = 4) -> Counter:
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


class _Vector:
    """One caption's tf-idf weights per n-gram order, their norms and its bigram count."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, weights: list[dict[Ngram, float]], length: int) -> None:
        self.weights = weights
        self.norms = [math.sqrt(sum(w * w for w in order.values())) for order in weights]
        self.length = length


class CiderD:
    """CIDEr-D with document frequencies from `corpus`: one list of tokenized references per
    image. `references` precomputes an image's reference vectors; `score` rates a candidate."""

    def __init__(
        self, corpus: Iterable[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0
    ) -> None:
        self.n, self.sigma = n, sigma
        df: Counter = Counter()
        images = 0
        for refs in corpus:
            images += 1
            df.update({g for ref in refs for g in ngram_counts(ref, n)})
        if not images:
            raise ValueError("CIDEr-D needs a reference corpus of at least one image")
        self.log_images = math.log(images)
        self.log_df = {g: math.log(count) for g, count in df.items()}

    def vector(self, words: Sequence[str]) -> _Vector:
        weights: list[dict[Ngram, float]] = [{} for _ in range(self.n)]
        length = 0
        for g, tf in ngram_counts(words, self.n).items():
            # an n-gram the corpus never saw gets df 1: log(max(1, 0)) = 0
            weights[len(g) - 1][g] = tf * (self.log_images - self.log_df.get(g, 0.0))
            if len(g) == 2:
                length += tf
        return _Vector(weights, length)

    def references(self, refs: Sequence[Sequence[str]]) -> list[_Vector]:
        return [self.vector(ref) for ref in refs]

    def score(self, words: Sequence[str], refs: list[_Vector]) -> float:
        """CIDEr-D of one tokenized candidate against one image's precomputed references."""
        cand = self.vector(words)
        total = 0.0
        two_sigma2 = 2 * self.sigma**2
        for ref in refs:
            penalty = math.exp(-((cand.length - ref.length) ** 2) / two_sigma2)
            for order, weights in enumerate(cand.weights):
                ref_weights = ref.weights[order]
                val = 0.0
                for g, w in weights.items():
                    r = ref_weights.get(g)
                    if r is not None:
                        val += min(w, r) * r
                norm = cand.norms[order] * ref.norms[order]
                if norm:
                    val /= norm
                total += val * penalty
        return total / self.n / len(refs) * 10.0

    def corpus_score(
        self, references: Sequence[Sequence[Sequence[str]]], candidates: Sequence[Sequence[str]]
    ) -> tuple[float, list[float]]:
        """(mean, per-image scores) of one candidate per image."""
        if len(references) != len(candidates):
            raise ValueError(f"{len(references)} reference sets for {len(candidates)} candidates")
        scores = [
            self.score(c, self.references(r)) for r, c in zip(references, candidates, strict=True)
        ]
        return sum(scores) / len(scores), scores
