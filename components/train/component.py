from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    vocab: Input[Artifact],
    features: Input[Dataset],
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_decay: float,
    patience: int,
    model: Output[Model],
) -> float:
    """The attention LSTM decoder; returns its best dev BLEU-4. Other settings: params.yaml."""
    from pathlib import Path

    from imagelingo.train import TrainConfig, train

    config = TrainConfig(
        seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, patience=patience
    )
    record = train(
        Path(dataset.path),
        Path(vocab.path) / "vocab.json",
        Path(features.path),
        Path(model.path),
        config,
    )
    model.metadata.update({"framework": "pytorch", "best_val_bleu4": record["best_val_bleu4"]})
    return float(record["best_val_bleu4"])
