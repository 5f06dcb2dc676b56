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
import os
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
from imagelingo.devices import resolve_device
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
    torch_threads: int  # 0: torch's default (one per core)
    device: str  # auto | cpu | cuda: where the encoder runs (features are stored fp16 anyway)


def extract_features(
    dataset_dir: Path,
    out_dir: Path,
    config: FeaturesConfig | None = None,
    encoder_weights: Path | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Encode every ingested image (with `shard` (i, n): shard i of n, see `shard_names`);
    resume a killed run; return the metadata record."""
    config = config or FeaturesConfig()
    encoder, batch_size, num_workers = config.encoder, config.batch_size, config.num_workers
    started = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    model, spec = build_encoder(encoder, encoder_weights)
    device = resolve_device(config.device)
    # channels_last: oneDNN's NHWC convolutions, ~2x on CPU with the same features to fp16 (the
    # input follows the weights' layout); thread count: see params.yaml (benchmarks/RESULTS.md)
    model.to(device, memory_format=torch.channels_last)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "encoder.json", spec.to_dict())
    progress_path = out_dir / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}

    counts, encode_seconds, encoded = {}, 0.0, 0
    for split in SPLITS:
        names = shard_names([r.image for r in load_records(dataset_dir, split)], shard)
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
            pin_memory=device.type == "cuda",
        )
        split_started = time.perf_counter()
        with (
            torch.inference_mode(),
            tqdm(total=len(names), initial=done, desc=f"features {split}", unit="img") as bar,
        ):
            for batch in loader:
                grid = model(batch.to(device, non_blocking=True)).to(torch.float16).cpu().numpy()
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
            "torch_threads": config.torch_threads,
            "device": str(device),
            "shard": f"{shard[0]}/{shard[1]}" if shard else "",
        },
        counts=counts,
        encoder=spec.to_dict(),
        images_encoded_this_run=encoded,
        images_per_second=round(encoded / encode_seconds, 2) if encode_seconds else None,
        seconds=round(time.perf_counter() - started, 2),
    )


def _regions(model: torch.nn.Module, spec: EncoderSpec) -> int:
    with torch.inference_mode():
        probe = torch.zeros(1, 3, spec.image_size, spec.image_size)
        return model(probe.to(next(model.parameters()).device)).shape[1]


class FeatureStore:
    """Read access to one split of the feature store: image name -> row.

    Rows are read from the .npy file when asked for (`tensor`, `lazy`), so a process holds the
    rows of one batch, not the split: training memory does not grow with the number of images.
    They are read with pread, not gathered from a memory map: the mapped pages an epoch touches
    stay counted in the process's RSS (and its pod's memory) until the kernel reclaims them, so
    a memmap's RSS still climbs to the file's size (benchmarks/RESULTS.md, "Feature store
    memory"). `in_memory=True` loads the whole split instead (the layout before issue 14).
    """

    def __init__(self, features_dir: Path, split: str, in_memory: bool = False) -> None:
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
        mapped = np.load(array_path, mmap_mode="r")  # reads the header only
        if mapped.ndim != 3 or not mapped.flags.c_contiguous or len(mapped) != len(names):
            raise ImageLingoError(
                f"{array_path}: expected a C-ordered [{len(names)}, regions, dim] array, "
                f"got shape {mapped.shape}"
            )
        self.array = np.load(array_path) if in_memory else mapped
        self._file = None if in_memory else open(array_path, "rb")  # noqa: SIM115 (lives with self)
        self._offset, self._row_bytes = mapped.offset, mapped[0].nbytes if len(mapped) else 0
        self.path = array_path
        self.names = names
        self.row = {name: i for i, name in enumerate(names)}
        self.spec = EncoderSpec.from_dict(json.loads((features_dir / "encoder.json").read_text()))

    def __len__(self) -> int:
        return len(self.names)

    def tensor(self, rows: list[int] | np.ndarray) -> torch.Tensor:
        """The rows' grids as one fp32 tensor [len(rows), regions, dim], in the order asked."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.names)):
            raise IndexError(f"{self.path}: rows must be in [0, {len(self.names)})")
        if self._file is None:
            return torch.from_numpy(np.asarray(self.array[rows], dtype=np.float32))
        out = np.empty((len(rows), *self.array.shape[1:]), dtype=self.array.dtype)
        fd = self._file.fileno()
        for i, row in enumerate(rows.tolist()):
            got = os.preadv(
                fd, [memoryview(out[i]).cast("B")], self._offset + row * self._row_bytes
            )
            if got != self._row_bytes:
                raise ImageLingoError(f"{self.path}: row {row} is cut short ({got} bytes)")
        return torch.from_numpy(out.astype(np.float32))

    def lazy(self, rows: list[int] | np.ndarray) -> LazyRows:
        """The rows as a sequence whose slices are read when taken: `Captioner.caption_features`
        over a whole split then holds one chunk of it at a time."""
        return LazyRows(self, rows)


class LazyRows:
    """`store.tensor(rows)` read slice by slice: len() and [start:stop] -> fp32 tensor."""

    def __init__(self, store: FeatureStore, rows: list[int] | np.ndarray) -> None:
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            raise TypeError("LazyRows takes slices: store.lazy(rows)[start:stop]")
        return self.store.tensor(self.rows[index])


def shard_names(names: list[str], shard: tuple[int, int] | None) -> list[str]:
    """Shard i of n of a split's images: the i-th of n contiguous, near-equal slices, so the
    shards' rows in shard order are the unsharded store's rows (`merge_features`)."""
    if shard is None:
        return names
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ImageLingoError(f"shard {index}/{count}: expected i/n with 0 <= i < n")
    return names[len(names) * index // count : len(names) * (index + 1) // count]


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n` -> (i, n)."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None:
        raise ImageLingoError(f"--shard {text!r}: expected i/n, e.g. 0/4 (shard 0 of 4)")
    shard_names([], shard)  # range check
    return shard


def merge_features(dataset_dir: Path, shard_dirs: list[Path], out_dir: Path) -> dict:
    """One feature store from the stores of shards 0..n-1 of `dataset_dir` (in that order), the
    same rows as an unsharded `extract_features`, which then finds it complete. Shards must be
    finished and share one encoder; rows are copied a chunk at a time (memory stays flat)."""
    started = time.perf_counter()
    dataset_dir, out_dir, shard_dirs = Path(dataset_dir), Path(out_dir), list(map(Path, shard_dirs))
    if not shard_dirs:
        raise ImageLingoError("merge_features: no shard folders given")
    records = [read_metadata(d) for d in shard_dirs]
    expected = [f"{i}/{len(shard_dirs)}" for i in range(len(shard_dirs))]
    for folder, record, shard in zip(shard_dirs, records, expected, strict=True):
        got = record.get("params", {}).get("shard")
        if got != shard and not (got == "" and shard == "0/1"):
            raise ImageLingoError(
                f"{folder}: holds shard {got!r} of the features, expected {shard} "
                "(give every shard's folder, in shard order)"
            )
    spec_text = (shard_dirs[0] / "encoder.json").read_text()
    for folder in shard_dirs[1:]:
        if (folder / "encoder.json").read_text() != spec_text:
            raise ImageLingoError(f"{folder}: another encoder than {shard_dirs[0]}'s")
    spec = EncoderSpec.from_dict(json.loads(spec_text))
    weights = records[0].get("params", {}).get("encoder_weights") or None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "encoder.json", spec.to_dict())
    progress, counts = {}, {}
    for split in SPLITS:
        names = [r.image for r in load_records(dataset_dir, split)]
        stores = [FeatureStore(folder, split) for folder in shard_dirs]
        if [n for store in stores for n in store.names] != names:
            raise ImageLingoError(
                f"shards of split {split} do not hold {dataset_dir}'s {len(names)} images in its "
                f"order: were they extracted from another dataset, or with another shard count?"
            )
        shape = (len(names), *stores[0].array.shape[1:])
        target = np.lib.format.open_memmap(
            out_dir / f"{split}.npy", mode="w+", dtype=np.float16, shape=shape
        )
        row = 0
        for store in tqdm(stores, desc=f"merge {split}", unit="shard"):
            for start in range(0, len(store), 256):
                chunk = store.array[start : start + 256]
                target[row : row + len(chunk)] = chunk
                row += len(chunk)
        target.flush()
        del target
        write_json_atomic(out_dir / f"{split}.index.json", names)
        progress[split] = {"key": _fingerprint(spec, weights, names), "rows": len(names)}
        write_json_atomic(out_dir / "progress.json", progress)
        counts[split] = {"images": len(names), "shape": list(shape)}
    encoded = sum(r.get("images_encoded_this_run", 0) for r in records)
    seconds = sum(
        r["images_encoded_this_run"] / r["images_per_second"]
        for r in records
        if r.get("images_per_second")
    )
    return write_metadata(
        out_dir,
        "features",
        inputs={
            "dataset": str(dataset_dir),
            "dataset_created": read_metadata(dataset_dir).get("created_at", ""),
            "shards": [str(d) for d in shard_dirs],
        },
        params={**records[0].get("params", {}), "shard": "", "shards": len(shard_dirs)},
        counts=counts,
        encoder=spec.to_dict(),
        images_encoded_this_run=encoded,
        # per encoding process: shards that ran side by side encoded this many each
        images_per_second=round(encoded / seconds, 2) if seconds else None,
        seconds=round(time.perf_counter() - started, 2),
    )
