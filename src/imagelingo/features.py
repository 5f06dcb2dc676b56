"""Stage 3, features: run the pretrained encoder over every image into a resumable feature store.

Layout of features/:
  encoder.json        the EncoderSpec (name, image size, normalisation, feature dim)
  <split>.npy         fp16 array [N, regions, feature_dim], rows in <split>.index.json order
  <split>.index.json  image names, one per row
  progress.json       rows written per split; a killed run resumes from here
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from imagelingo.artifacts import read_metadata, write_json_atomic, write_metadata
from imagelingo.config import settings
from imagelingo.data.dataset import SPLITS, load_records
from imagelingo.encoders import EncoderSpec, build_encoder, preprocess
from imagelingo.errors import ImageLingoError

log = logging.getLogger(__name__)


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], spec: EncoderSpec) -> None:
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return preprocess(image, self.spec)


def _fingerprint(spec: EncoderSpec, weights: Path | None, names: list[str]) -> str:
    payload = json.dumps([spec.to_dict(), str(weights), names])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@settings("features")
class FeaturesConfig:
    """params.yaml's `features` section: the defaults and what each means are written there."""

    encoder: str
    batch_size: int
    num_workers: int


def extract_features(
    dataset_dir: Path,
    out_dir: Path,
    config: FeaturesConfig | None = None,
    encoder_weights: Path | None = None,
) -> dict:
    """Encode every ingested image; resume a killed run; return the metadata record."""
    config = config or FeaturesConfig()
    encoder, batch_size, num_workers = config.encoder, config.batch_size, config.num_workers
    started = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    model, spec = build_encoder(encoder, encoder_weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "encoder.json", spec.to_dict())
    progress_path = out_dir / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}

    counts, encode_seconds, encoded = {}, 0.0, 0
    for split in SPLITS:
        names = [r.image for r in load_records(dataset_dir, split)]
        key = _fingerprint(spec, encoder_weights, names)
        array_path = out_dir / f"{split}.npy"
        done = (
            progress.get(split, {}).get("rows", 0)
            if progress.get(split, {}).get("key") == key
            else 0
        )
        if done and array_path.is_file():
            store = np.load(array_path, mmap_mode="r+")
            log.info("features %s: resuming at row %d of %d", split, done, len(names))
        else:
            done = 0
            regions = _regions(model, spec)
            store = np.lib.format.open_memmap(
                array_path,
                mode="w+",
                dtype=np.float16,
                shape=(len(names), regions, spec.feature_dim),
            )
        write_json_atomic(out_dir / f"{split}.index.json", names)
        paths = [dataset_dir / "images" / n for n in names[done:]]
        loader = DataLoader(
            _ImageFiles(paths, spec),
            batch_size=batch_size,
            num_workers=num_workers,
            persistent_workers=False,
        )
        split_started = time.perf_counter()
        with (
            torch.inference_mode(),
            tqdm(total=len(names), initial=done, desc=f"features {split}", unit="img") as bar,
        ):
            for batch in loader:
                grid = model(batch).to(torch.float16).numpy()
                store[done : done + len(grid)] = grid
                done += len(grid)
                store.flush()  # rows on disk before progress says so
                progress[split] = {"key": key, "rows": done}
                write_json_atomic(progress_path, progress)
                bar.update(len(grid))
        encode_seconds += time.perf_counter() - split_started
        encoded += len(paths)
        counts[split] = {"images": len(names), "shape": list(store.shape)}
        del store

    return write_metadata(
        out_dir,
        "features",
        inputs={
            "dataset": str(dataset_dir),
            "dataset_created": read_metadata(dataset_dir).get("created_at", ""),
        },
        params={
            "encoder": encoder,
            "encoder_weights": str(encoder_weights or ""),
            "batch_size": batch_size,
            "num_workers": num_workers,
        },
        counts=counts,
        encoder=spec.to_dict(),
        images_encoded_this_run=encoded,
        images_per_second=round(encoded / encode_seconds, 2) if encode_seconds else None,
        seconds=round(time.perf_counter() - started, 2),
    )


def _regions(model: torch.nn.Module, spec: EncoderSpec) -> int:
    with torch.inference_mode():
        return model(torch.zeros(1, 3, spec.image_size, spec.image_size)).shape[1]


class FeatureStore:
    """Read access to one split of the feature store: image name -> row."""

    def __init__(self, features_dir: Path, split: str, in_memory: bool = True) -> None:
        features_dir = Path(features_dir)
        array_path = features_dir / f"{split}.npy"
        progress_path = features_dir / "progress.json"
        if not array_path.is_file():
            raise ImageLingoError(f"{array_path} not found: run `imagelingo features` first")
        names = json.loads((features_dir / f"{split}.index.json").read_text())
        rows = json.loads(progress_path.read_text()).get(split, {}).get("rows", 0)
        if rows != len(names):
            raise ImageLingoError(
                f"{array_path}: only {rows} of {len(names)} rows extracted; "
                "rerun `imagelingo features` to finish"
            )
        self.array = np.load(array_path, mmap_mode=None if in_memory else "r")
        self.names = names
        self.row = {name: i for i, name in enumerate(names)}
        self.spec = EncoderSpec.from_dict(json.loads((features_dir / "encoder.json").read_text()))

    def tensor(self, rows: list[int] | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.array[rows], dtype=np.float32))
