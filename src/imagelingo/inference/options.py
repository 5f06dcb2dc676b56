"""How captions are decoded: beam width and maximum length (a served request may choose them)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    # What a served request gets when it does not choose: the decoding the model was evaluated
    # with, params.yaml's evaluate.beam_width and evaluate.max_len (the MAR cannot read
    # params.yaml; tests/test_params.py keeps the two equal).
    beam_width: int = 3
    max_len: int = 30
