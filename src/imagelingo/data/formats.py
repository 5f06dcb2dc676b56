"""Which caption format a local source is, decided by names alone (never by guessing from
content), and its listing read by that format's reader.

A file:
  *.csv, *.jsonl            image,caption[,split] rows               (tabular.py)
  captions_<set>.json       COCO caption annotations of one set      (coco.py)
  any other *.json          a Karpathy split JSON                    (karpathy.py)
A folder holding exactly one of:
  Flickr8k.token.txt (at any depth) with the split files            (flickr8k.py)
  captions.csv or captions.jsonl                                    (tabular)
  dataset_*.json                                                    (Karpathy)
  annotations/captions_*.json: COCO as unzipped, every set in it    (COCO)
A folder holding two of these is an error: name the file to ingest instead.
"""

from __future__ import annotations

from pathlib import Path

from imagelingo.data import coco, flickr8k, karpathy, tabular
from imagelingo.data.listing import Listing, check_fractions, image_root
from imagelingo.errors import ImageLingoError


def detect(path: Path) -> tuple[str, list[Path]]:
    """(format, the files or folder to read) for a local file or folder."""
    if path.is_file():
        if path.suffix in tabular.SUFFIXES:
            return "tabular", [path]
        if path.suffix == ".json":
            return ("coco" if path.name.startswith(coco.PREFIX) else "karpathy"), [path]
        raise ImageLingoError(
            f"{path}: expected a .csv or .jsonl captions file, a Karpathy split .json or a COCO "
            "captions_<set>.json"
        )
    found: list[tuple[str, list[Path]]] = []
    tables = [path / f"captions{suffix}" for suffix in tabular.SUFFIXES]
    found += [("tabular", [table]) for table in tables if table.is_file()]
    found += [("karpathy", [json]) for json in sorted(path.glob("dataset_*.json"))]
    if coco.annotation_files(path):
        found.append(("coco", coco.annotation_files(path)))
    token_file = next(path.rglob(flickr8k.TOKEN_FILE), None)
    if token_file is not None:
        found.append(("flickr8k", [token_file]))
    if not found:
        raise ImageLingoError(
            f"{path}: no captions found; expected {flickr8k.TOKEN_FILE} (Flickr8k), "
            "captions.csv or captions.jsonl, a Karpathy dataset_*.json, or COCO's "
            "annotations/captions_*.json"
        )
    if len(found) > 1:
        names = ", ".join(str(files[0].relative_to(path)) for _, files in found)
        raise ImageLingoError(
            f"{path} holds captions in more than one format ({names}): name the file to ingest"
        )
    return found[0]


def read_source(
    path: Path,
    image_dir: Path | None,
    restval_split: str,
    dev_fraction: float,
    test_fraction: float,
) -> tuple[str, Listing]:
    """The format of `path` and its listing. `image_dir` (--images) overrides where the images
    of a captions file are looked for; a Flickr8k folder finds its own."""
    check_fractions(dev_fraction, test_fraction)
    fmt, files = detect(Path(path))
    if fmt == "flickr8k":
        if image_dir is not None:
            raise ImageLingoError("--images: a Flickr8k folder finds its image folder itself")
        return fmt, flickr8k.read_listing(Path(path))
    if fmt == "coco":
        return fmt, coco.read_listing(files, image_dir, dev_fraction, test_fraction)
    (file,) = files
    root = image_root(file, image_dir)
    if fmt == "karpathy":
        return fmt, karpathy.read_listing(file, root, restval_split)
    return fmt, tabular.read_listing(file, root, dev_fraction, test_fraction)
