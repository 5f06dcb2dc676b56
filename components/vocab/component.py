from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def vocab(dataset: Input[Dataset], min_freq: int, vocab: Output[Artifact]):
    """The vocabulary from TRAIN captions only (vocab.json)."""
    from pathlib import Path

    from imagelingo.vocab import build_vocab_stage

    record = build_vocab_stage(Path(dataset.path), Path(vocab.path), min_freq)
    vocab.metadata.update(record["counts"])
