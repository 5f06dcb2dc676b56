"""What makes two trainings "the same run" for resuming: the settings a resumed run may change
and the digest of a training's inputs that names its checkpoint location (train.py) and its
Kubeflow TrainJob (trainjob.py). Torch-free: the task that submits a TrainJob imports it too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Settings a resumed run may change: the epoch budget (to extend it) and the device.
RESUMABLE_CHANGES = ("epochs", "device")

# What the code did before a setting existed: a checkpoint without it was trained this way.
BEFORE_THE_SETTING = {"precision": "fp32"}


def inputs_digest(dataset_dir: Path, vocab_path: Path, features_dir: Path, settings: dict) -> str:
    """16 hex digits of what a training reads: the captions, the vocabulary, the feature store's
    metadata and every setting but RESUMABLE_CHANGES. Stable across retries of a task,
    different for other inputs."""
    digest = hashlib.sha256()
    for path in (
        Path(dataset_dir) / "captions.jsonl",
        Path(vocab_path),
        Path(features_dir) / "metadata.json",
    ):
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    kept = {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
    digest.update(json.dumps(kept, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def changed_settings(saved: dict, current: dict, defaults: dict) -> str:
    """'k: old -> new' for each setting that differs, except RESUMABLE_CHANGES and the scst_*
    settings (free until the SCST phase starts: a finished CE run may be extended by one;
    imagelingo.scst checks them after). A setting newer than the checkpoint counts as what the
    code that wrote it did: BEFORE_THE_SETTING's value, else today's default."""

    def saved_value(k):
        return saved.get(k, BEFORE_THE_SETTING.get(k, defaults.get(k)))

    return ", ".join(
        f"{k}: {saved_value(k)} -> {v}"
        for k, v in current.items()
        if k not in RESUMABLE_CHANGES and not k.startswith("scst_") and saved_value(k) != v
    )
