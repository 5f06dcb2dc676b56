"""Karpathy split JSON (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json).

    {"images": [{"filename": "1000268201_693b08cb0e.jpg", "filepath": "val2014" (COCO only),
                 "split": "train" | "val" | "test" | "restval",
                 "sentences": [{"raw": "A child in a pink dress ...", ...}, ...]}, ...]}

An image is read from <image folder>/<filepath>/<filename>. `val` is our dev split; `restval`
(COCO's val2014 images outside Karpathy's 5000 val and 5000 test) goes where
params.yaml's ingest.restval_split says: train by default, as in most papers, or `skip`.
"""

from __future__ import annotations

import json
from pathlib import Path

from imagelingo.data.listing import Listing, SourceImage, relative_image_name
from imagelingo.errors import ImageLingoError

SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}
RESTVAL_CHOICES = ("train", "dev", "test", "skip")


def load_json(path: Path) -> object:
    """A JSON file, or one line naming where it stops being JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ImageLingoError(
            f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ImageLingoError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def read_listing(path: Path, image_dir: Path, restval_split: str = "train") -> Listing:
    if restval_split not in RESTVAL_CHOICES:
        raise ImageLingoError(
            f"ingest.restval_split={restval_split!r}: expected one of {', '.join(RESTVAL_CHOICES)}"
        )
    data = load_json(path)
    if isinstance(data, dict) and "annotations" in data:
        raise ImageLingoError(
            f"{path}: has annotations[] like COCO caption annotations, which ingest reads from a "
            "file named captions_<set>.json (the set, train or val, gives the split)"
        )
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ImageLingoError(f"{path}: expected a Karpathy split JSON, an object with images[]")
    listing = Listing()
    seen: dict[str, int] = {}
    for index, entry in enumerate(data["images"]):
        where = f"{path} images[{index}]"
        if not isinstance(entry, dict):
            raise ImageLingoError(f"{where}: expected an object, got {entry!r:.60}")
        filename = relative_image_name(entry.get("filename"), f"{where}.filename")
        folder = entry.get("filepath") or ""
        if not isinstance(folder, str):
            raise ImageLingoError(f"{where}.filepath: expected a folder name, got {folder!r}")
        name = relative_image_name(f"{folder}/{filename}" if folder else filename, where)
        split = entry.get("split")
        if split not in (*SPLIT_NAMES, "restval"):
            raise ImageLingoError(
                f"{where}.split: expected train, val, test or restval, got {split!r}"
            )
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise ImageLingoError(f"{where}.sentences: expected a list, got {sentences!r:.60}")
        captions = []
        for n, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):
                raise ImageLingoError(
                    f"{where}.sentences[{n}]: expected an object with a 'raw' caption, "
                    f"got {sentence!r:.60}"
                )
            if raw.strip():
                captions.append(raw.strip())
            else:
                listing.skip_line(f"{where}.sentences[{n}]", "empty caption")
        target = SPLIT_NAMES.get(split, restval_split)
        if name in seen:
            listing.skip(name, f"listed again (images[{seen[name]}] and images[{index}])")
        elif not captions:
            listing.skip(name, f"no captions (images[{index}])")
        elif target == "skip":
            listing.skip(name, "restval image (ingest.restval_split=skip)")
        else:
            listing.images.append(SourceImage(target, name, image_dir / name, captions))
        seen.setdefault(name, index)
    return listing
