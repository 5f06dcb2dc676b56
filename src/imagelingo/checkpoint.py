"""The training checkpoint: out_dir/checkpoint.pt, written at the end of every epoch of either
phase (train.py's cross-entropy, scst.py's self-critical), and mirrored under checkpoint_uri for
a retried pod. Both loops write it here, so neither imports the other to save its progress."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from imagelingo.inference.captioner import MODEL_FILES

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as save_checkpoint wrote it, on the CPU (it names the device nowhere)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def persist_epoch(
    out_dir: Path,
    config: Any,
    progress: dict,
    decoder: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    checkpoint_uri: str | None,
    s3_endpoint_url: str | None,
) -> None:
    """End of an epoch (either phase; `config` is train.TrainConfig): write the checkpoint, then
    mirror the best weights and it under checkpoint_uri for a retried pod, the weights first: the
    checkpoint names their epoch."""
    checkpoint_path = Path(out_dir) / CHECKPOINT
    save_checkpoint(
        checkpoint_path,
        {
            "config": asdict(config),
            "progress": progress,
            "decoder": decoder.state_dict(),
            "optimizer": optimizer.state_dict(),
        },
    )
    if checkpoint_uri:
        from imagelingo.storage import put_files

        files = [Path(out_dir) / n for n in MODEL_FILES if (Path(out_dir) / n).is_file()]
        put_files([*files, checkpoint_path], checkpoint_uri, s3_endpoint_url)
