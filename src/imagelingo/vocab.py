"""Stage 2, vocab: the caption vocabulary from the TRAIN captions only, saved as vocab.json.

The Vocab it builds is imagelingo.inference.vocab's, the one training, evaluation and serving
read: that module is its one home, and this stage is the only code that makes one from captions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from imagelingo.config import settings
from imagelingo.errors import ImageLingoError
from imagelingo.inference.vocab import SPECIAL_TOKENS, Vocab

__all__ = ["VocabConfig", "build_vocab", "build_vocab_stage"]


@settings("vocab")
class VocabConfig:
    """params.yaml's `vocab` section."""

    min_freq: int


def build_vocab(
    tokenized_captions: Iterable[Sequence[str]], min_freq: int
) -> tuple[Vocab, Counter]:
    """Keep words seen at least `min_freq` times; most frequent first, ties alphabetical."""
    if min_freq < 1:
        raise ImageLingoError(f"min_freq must be >= 1, got {min_freq}")
    counts: Counter = Counter()
    for tokens in tokenized_captions:
        counts.update(tokens)
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return Vocab((*SPECIAL_TOKENS, *kept)), counts


def build_vocab_stage(dataset_dir: Path, out_dir: Path, min_freq: int = 5) -> dict:
    """Stage 2, vocab: from the TRAIN split's captions only; write vocab.json + metadata."""
    from imagelingo.artifacts import write_metadata
    from imagelingo.data.dataset import load_records
    from imagelingo.data.text import tokenize

    records = load_records(dataset_dir, "train")
    tokenized = [tokenize(c) for r in records for c in r.captions]
    vocab, counts = build_vocab(tokenized, min_freq)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab.save(out_dir / "vocab.json")
    total = sum(counts.values())
    covered = sum(c for w, c in counts.items() if c >= min_freq)
    return write_metadata(
        out_dir,
        "vocab",
        inputs={"dataset": str(dataset_dir)},
        params={"min_freq": min_freq, "split": "train"},
        counts={
            "captions": len(tokenized),
            "distinct_words": len(counts),
            "vocab_size": len(vocab),
            "token_coverage": round(covered / max(total, 1), 4),
        },
    )
