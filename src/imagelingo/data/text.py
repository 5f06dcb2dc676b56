"""Caption tokenization: lower-cased words, offline (no nltk punkt download needed)."""

from __future__ import annotations

from nltk.tokenize import RegexpTokenizer

# Words, numbers and in-word apostrophes ("man's"); punctuation is dropped, as in the usual
# Flickr8k preprocessing, so BLEU compares words only.
_TOKENIZER = RegexpTokenizer(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    return _TOKENIZER.tokenize(caption.lower())
