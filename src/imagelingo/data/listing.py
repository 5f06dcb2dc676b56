"""What every source reader returns: the images to ingest per split, with their captions, and
everything it set aside with the reason (ingest counts, names and reports them all).

The readers (flickr8k, karpathy, coco, tabular) only read captions and split assignments; ingest
then decodes every image the listing names, whatever format it came from.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from imagelingo.errors import ImageLingoError


@dataclass(frozen=True)
class SourceImage:
    split: str  # train | dev | test
    name: str  # its name under dataset/images/ (a relative path, '/'-separated)
    path: Path  # where the image is read from
    captions: list[str]


@dataclass
class SkippedLines:
    """Caption rows a reader left out: counted by reason, and each named by where it is."""

    skipped_lines: Counter = field(default_factory=Counter)  # by reason
    skipped_line_places: list[dict[str, str]] = field(default_factory=list)  # {"line", "reason"}

    def skip_line(self, where: str, reason: str) -> None:
        self.skipped_lines[reason] += 1
        self.skipped_line_places.append({"line": where, "reason": reason})


@dataclass
class Listing(SkippedLines):
    images: list[SourceImage] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"image", "reason"}
    repaired: Counter = field(default_factory=Counter)  # caption rows fixed up, by what

    def skip(self, image: str, reason: str) -> None:
        self.skipped.append({"image": image, "reason": reason})


def hash_split(name: str, dev_fraction: float, test_fraction: float) -> str:
    """train, dev or test for an image the source gives no split, from a hash of its name: the
    same image always lands in the same split, also when images are added to the source later
    (a re-shuffle would move test images into train between two retraining runs)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < dev_fraction:
        return "dev"
    return "test" if point < dev_fraction + test_fraction else "train"


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    if min(dev_fraction, test_fraction) < 0 or dev_fraction + test_fraction >= 1:
        raise ImageLingoError(
            f"ingest.dev_fraction={dev_fraction}, ingest.test_fraction={test_fraction}: expected "
            "two shares >= 0 whose sum is below 1 (the rest is train)"
        )


def relative_image_name(value: object, where: str) -> str:
    """An image named by a source: a relative path inside its image folder, never above it."""
    if not isinstance(value, str) or not value.strip():
        raise ImageLingoError(f"{where}: expected an image file name, got {value!r}")
    path = PurePosixPath(value.strip().replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ImageLingoError(
            f"{where}: expected a path relative to the image folder, got {value!r}"
        )
    return path.as_posix()


def image_root(captions_file: Path, given: Path | None) -> Path:
    """The folder a captions file's image names are relative to: the one given (--images), else
    `images/` beside the file when there is one, else the file's own folder."""
    if given is not None:
        if not Path(given).is_dir():
            raise ImageLingoError(f"image folder {given} does not exist")
        return Path(given)
    beside = captions_file.parent / "images"
    return beside if beside.is_dir() else captions_file.parent
