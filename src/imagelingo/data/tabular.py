"""A folder of images plus one caption per row, as CSV or JSONL.

    captions.csv                          captions.jsonl
    image,caption,split                   {"image": "dogs/1.jpg", "caption": "A dog runs ."}
    dogs/1.jpg,A dog runs .,train         {"image": "dogs/1.jpg", "caption": "A brown dog ."}
    dogs/1.jpg,A brown dog .,train

An image has as many rows as captions. `image` is a path relative to the image folder (--images,
else images/ beside the file, else the file's folder). `split` (train, dev or val, test) may be
left out or empty: such an image gets its split from a hash of its name, with the shares
params.yaml's ingest.dev_fraction and ingest.test_fraction, so it keeps it when rows are added.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from imagelingo.data.listing import Listing, SourceImage, hash_split, relative_image_name
from imagelingo.errors import ImageLingoError

SUFFIXES = (".csv", ".jsonl")
SPLIT_NAMES = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if not {"image", "caption"} <= set(columns):
            raise ImageLingoError(
                f"{path} line 1: expected a header with the columns image,caption[,split], "
                f"got {','.join(columns)!r}"
            )
        for row in reader:
            if None in row or None in row.values():
                raise ImageLingoError(
                    f"{path} line {reader.line_num}: expected {len(columns)} fields "
                    f"({','.join(columns)}), got {row}"
                )
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImageLingoError(
                    f"{path} line {line_no}: expected a JSON object, not valid JSON ({exc.msg})"
                ) from exc
            if not isinstance(row, dict) or not isinstance(row.get("caption"), str):
                raise ImageLingoError(
                    f'{path} line {line_no}: expected {{"image": ..., "caption": ...'
                    f'[, "split": ...]}}, got {line.strip()[:80]!r}'
                )
            yield line_no, row


def read_listing(path: Path, image_dir: Path, dev_fraction: float, test_fraction: float) -> Listing:
    if path.suffix not in SUFFIXES:
        raise ImageLingoError(f"{path}: expected a .csv or .jsonl captions file")
    rows = _csv_rows(path) if path.suffix == ".csv" else _jsonl_rows(path)
    listing = Listing()
    captions: dict[str, list[str]] = {}
    given_split: dict[str, tuple[str, int]] = {}  # image -> (split, line that gave it)
    try:
        for line_no, row in rows:
            where = f"{path} line {line_no}"
            name = relative_image_name(row.get("image"), f"{where} image")
            split = (row.get("split") or "").strip()
            if split and split not in SPLIT_NAMES:
                raise ImageLingoError(
                    f"{where}: expected split train, dev (or val) or test, got {split!r}"
                )
            if split:
                earlier = given_split.setdefault(name, (SPLIT_NAMES[split], line_no))
                if earlier[0] != SPLIT_NAMES[split]:
                    raise ImageLingoError(
                        f"{where}: {name} is in split {split!r} here and in "
                        f"{earlier[0]!r} at line {earlier[1]}; expected one split per image"
                    )
            caption = row["caption"].strip()
            captions.setdefault(name, [])
            if caption:
                captions[name].append(caption)
            else:
                listing.skip_line(where, "empty caption")
    except UnicodeDecodeError as exc:
        raise ImageLingoError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    for name, texts in captions.items():
        if not texts:
            listing.skip(name, "no captions (only empty ones)")
            continue
        split = given_split.get(name, (None,))[0]
        split = split or hash_split(name, dev_fraction, test_fraction)
        listing.images.append(SourceImage(split, name, image_dir / name, texts))
    return listing
