"""The caption vocabulary: word ids <-> words, saved as JSON (built by imagelingo.vocab)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageLingoError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)


@dataclass(frozen=True)
class Vocab:
    """Index <-> word mapping. Special tokens always take ids 0..3 in SPECIAL_TOKENS order."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ImageLingoError(f"vocab must start with {SPECIAL_TOKENS}, got {self.words[:4]}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """<start> tokens <end>, unknown words mapped to <unk>."""
        index = self._index  # type: ignore[attr-defined]
        return [self.start_id, *(index.get(t, self.unk_id) for t in tokens), self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Word ids to words, stopping at <end> and leaving out <start>/<pad>."""
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i in (self.start_id, self.pad_id):
                continue
            words.append(self.words[i])
        return words

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"words": list(self.words)}, indent=0) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        if not path.is_file():
            raise ImageLingoError(f"vocab file not found: {path}")
        return cls(tuple(json.loads(path.read_text())["words"]))
