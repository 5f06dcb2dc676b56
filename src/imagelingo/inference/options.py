"""How captions are decoded: beam width and maximum length (a served request may choose them)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    beam_width: int = 3
    max_len: int = 30
