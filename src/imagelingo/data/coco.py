"""COCO caption annotations (captions_train2017.json, captions_val2017.json, or 2014's).

    {"images": [{"id": 391895, "file_name": "000000391895.jpg", ...}, ...],
     "annotations": [{"image_id": 391895, "caption": "A man riding a bike ...", ...}, ...]}

The layout is COCO's own, as unzipped: <root>/annotations/captions_<set>.json with the images of
<set> in <root>/<set>/ (or in the folder given with --images, or <that folder>/<set>/).

Splits: COCO publishes captions for train and val only, so `train*` sets are our train split and
`val*` sets are divided between dev and test by a hash of the file name, in the proportion
params.yaml's ingest.dev_fraction : ingest.test_fraction (halves by default: val2017's 5000
images give about 2500 dev and 2500 test).
"""

from __future__ import annotations

from pathlib import Path

from imagelingo.data.karpathy import load_json
from imagelingo.data.listing import Listing, SourceImage, hash_split, relative_image_name
from imagelingo.errors import ImageLingoError

PREFIX = "captions_"


def annotation_files(root: Path) -> list[Path]:
    return sorted((root / "annotations").glob(f"{PREFIX}*.json"))


def image_set(annotation_file: Path) -> str:
    """captions_val2017.json -> val2017, or an error saying which names are understood."""
    stem = annotation_file.stem
    name = stem[len(PREFIX) :] if stem.startswith(PREFIX) else ""
    if not name.startswith(("train", "val")):
        raise ImageLingoError(
            f"{annotation_file}: expected a COCO caption file named captions_train<year>.json "
            "or captions_val<year>.json (the name says which split its images go to)"
        )
    return name


def image_folder(annotation_file: Path, given: Path | None) -> Path:
    """<base>/<set>/ when it exists, else <base> itself; <base> is --images or the COCO root
    (the folder above annotations/)."""
    parent = annotation_file.parent
    root = parent.parent if parent.name == "annotations" else parent
    base = Path(given) if given is not None else root
    nested = base / image_set(annotation_file)
    return nested if nested.is_dir() else base


def read_listing(
    files: list[Path], given_image_dir: Path | None, dev_fraction: float, test_fraction: float
) -> Listing:
    if dev_fraction + test_fraction <= 0:
        raise ImageLingoError(
            "ingest.dev_fraction + ingest.test_fraction must be above 0: COCO's val images are "
            "divided between dev and test in that proportion"
        )
    dev_share = dev_fraction / (dev_fraction + test_fraction)
    listing = Listing()
    seen: dict[str, str] = {}
    for path in files:
        is_train = image_set(path).startswith("train")
        folder = image_folder(path, given_image_dir)
        for name, captions in _captions_by_image(path, listing).items():
            if name in seen:
                listing.skip(name, f"listed again (in {seen[name]} and {path.name})")
                continue
            seen[name] = path.name
            if not captions:
                listing.skip(name, f"no captions (in {path.name})")
                continue
            split = "train" if is_train else hash_split(name, dev_share, 1 - dev_share)
            listing.images.append(SourceImage(split, name, folder / name, captions))
    return listing


def _captions_by_image(path: Path, listing: Listing) -> dict[str, list[str]]:
    """file_name -> its captions, in the order of images[]; a caption row whose image_id no
    image has is set aside by name."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise ImageLingoError(f"{path}: expected a COCO caption file, an object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ImageLingoError(f"{path}: expected a list {key}[] (COCO caption annotations)")
    names: dict[object, str] = {}
    captions: dict[str, list[str]] = {}
    for index, image in enumerate(data["images"]):
        where = f"{path} images[{index}]"
        if not isinstance(image, dict) or "id" not in image:
            raise ImageLingoError(f"{where}: expected an object with id and file_name")
        name = relative_image_name(image.get("file_name"), f"{where}.file_name")
        names[image["id"]] = name
        captions.setdefault(name, [])
    for index, row in enumerate(data["annotations"]):
        where = f"{path} annotations[{index}]"
        if not isinstance(row, dict) or not isinstance(row.get("caption"), str):
            raise ImageLingoError(f"{where}: expected an object with image_id and a caption text")
        if row.get("image_id") not in names:
            listing.skip(
                f"image_id {row.get('image_id')!r}",
                f"caption for an image_id not in images[] (annotations[{index}])",
            )
        elif not row["caption"].strip():
            listing.skip_line(where, "empty caption")
        else:
            captions[names[row["image_id"]]].append(row["caption"].strip())
    return captions
