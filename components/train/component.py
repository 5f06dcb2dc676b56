from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    vocab: Input[Artifact],
    features: Input[Dataset],
    seed: int,
    device: str,
    precision: str,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_decay: float,
    alpha_c: float,
    grad_clip: float,
    patience: int,
    max_caption_len: int,
    val_max_len: int,
    embed_dim: int,
    hidden_dim: int,
    attention_dim: int,
    context_dim: int,
    dropout: float,
    scst_epochs: int,
    scst_lr: float,
    scst_samples: int,
    scst_batch_size: int,
    checkpoint_root: str,
    engine: str,
    nodes: int,
    procs_per_node: int,
    gpus_per_node: int,
    image: str,
    model: Output[Model],
    trainer_version: str = "",
) -> float:
    """The attention LSTM decoder; returns its best dev BLEU-4. The settings: params.yaml `train`.
    With `checkpoint_root` (s3:// on a cluster) every epoch's checkpoint is kept under it, at a
    location derived from this task's inputs: a retried pod resumes from the last epoch.
    `engine` "task" trains in this pod; "trainjob" hands the same training to the Kubeflow
    Trainer (a TrainJob of `nodes` x `procs_per_node` torchrun processes of `image`, data through
    checkpoint_root's S3 bucket; imagelingo.trainjob) and waits for it. `trainer_version` is
    fixed when the pipeline is compiled for a Kubeflow release: the Trainer it installs
    ("v2.1.0" on Kubeflow 1.11), "" where there is none (Kubeflow 1.10: task engine only)."""
    import os
    from pathlib import Path

    from imagelingo.train import TrainConfig, checkpoint_location, train

    config = TrainConfig(
        seed=seed,
        device=device,
        precision=precision,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_decay=lr_decay,
        alpha_c=alpha_c,
        grad_clip=grad_clip,
        patience=patience,
        max_caption_len=max_caption_len,
        val_max_len=val_max_len,
        embed_dim=embed_dim,
        hidden_dim=hidden_dim,
        attention_dim=attention_dim,
        context_dim=context_dim,
        dropout=dropout,
        scst_epochs=scst_epochs,
        scst_lr=scst_lr,
        scst_samples=scst_samples,
        scst_batch_size=scst_batch_size,
    )
    vocab_path = Path(vocab.path) / "vocab.json"
    checkpoint_uri = None
    if checkpoint_root:
        checkpoint_uri = checkpoint_location(
            checkpoint_root, Path(dataset.path), vocab_path, Path(features.path), config
        )
    if engine == "trainjob":
        from dataclasses import asdict

        from imagelingo.trainjob import train_on_kubeflow

        # it refuses trainer_version "" (no Trainer: Kubeflow 1.10) before uploading anything
        record, checkpoint_uri = train_on_kubeflow(
            Path(dataset.path),
            Path(vocab.path),
            Path(features.path),
            Path(model.path),
            asdict(config),
            checkpoint_root,
            image=image,
            nodes=nodes,
            procs_per_node=procs_per_node,
            gpus_per_node=gpus_per_node,
            trainer_version=trainer_version,
        )
    elif engine == "task":
        record = train(
            Path(dataset.path),
            vocab_path,
            Path(features.path),
            Path(model.path),
            config,
            checkpoint_uri=checkpoint_uri,
            s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        )
    else:
        raise ValueError(f"train_engine {engine!r}: expected task or trainjob")
    model.metadata.update(
        {
            "framework": "pytorch",
            "best_val_bleu4": record["best_val_bleu4"],
            # after an SCST phase: the model's dev CIDEr-D; its CE model is in cross_entropy/
            "best_val_cider": record.get("best_val_cider", -1.0),
            "checkpoint_uri": checkpoint_uri or "",
        }
    )
    return float(record["best_val_bleu4"])
