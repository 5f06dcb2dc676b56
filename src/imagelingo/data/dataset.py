"""The ingested dataset: images/ plus captions.jsonl, one {image, split, captions} per line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from imagelingo.errors import ImageLingoError

CAPTIONS_FILE = "captions.jsonl"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class ImageRecord:
    image: str
    split: str
    captions: list[str]


def write_records(dataset_dir: Path, records: list[ImageRecord]) -> None:
    with open(Path(dataset_dir) / CAPTIONS_FILE, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record)) + "\n")


def load_records(dataset_dir: Path, split: str | None = None) -> list[ImageRecord]:
    """Read captions.jsonl; a malformed line is an error that names it."""
    path = Path(dataset_dir) / CAPTIONS_FILE
    if not path.is_file():
        raise ImageLingoError(
            f"{path} not found: is {dataset_dir} the output of `imagelingo ingest`?"
        )
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                record = ImageRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ImageLingoError(
                    f"{path} line {line_no}: expected {{image, split, captions}}: {exc}"
                ) from exc
            if split is None or record.split == split:
                records.append(record)
    return records


def image_path(dataset_dir: Path, record: ImageRecord) -> Path:
    return Path(dataset_dir) / "images" / record.image
