"""Stage 1, ingest: any caption source -> dataset/ (validated RGB JPEGs + captions.jsonl).

Sources: a local folder or file in one of the formats of imagelingo.data.formats (the Flickr8k
layout, a Karpathy split JSON, COCO caption annotations, a CSV or JSONL of image,caption rows),
the public Flickr8k archive URLs ("flickr8k" or one or more http(s) URLs, comma-separated), an
s3:// prefix holding any of those formats (or s3://.../<captions file>), or "synthetic". Every
image is decoded; every image or caption row that is not carried over is counted with its reason
and reported by name.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from imagelingo.artifacts import write_metadata
from imagelingo.config import settings
from imagelingo.data import flickr8k
from imagelingo.data.dataset import SPLITS, ImageRecord, write_records
from imagelingo.data.formats import read_source
from imagelingo.data.listing import SourceImage
from imagelingo.data.synthetic import generate_synthetic
from imagelingo.errors import ImageLingoError
from imagelingo.storage import CAPTION_FILE_SUFFIXES, download_prefix

log = logging.getLogger(__name__)
# Refuse absurd images; Flickr photos are at most a few megapixels.
Image.MAX_IMAGE_PIXELS = 50_000_000


def resolve_source(
    source: str,
    cache_dir: Path,
    synthetic_images: int,
    seed: int,
    s3_endpoint_url: str | None = None,
) -> Path:
    """Turn any supported source into a local folder or captions file."""
    if source == "synthetic":
        return generate_synthetic(
            cache_dir / f"synthetic-{synthetic_images}-{seed}", synthetic_images, seed
        )
    if source == "flickr8k":
        return flickr8k.download_archives(
            list(flickr8k.PUBLIC_ARCHIVES.values()), cache_dir / "flickr8k"
        )
    if source.startswith(("http://", "https://")):
        return flickr8k.download_archives(source.split(","), cache_dir / "download")
    if source.startswith("s3://"):
        # s3://b/data/captions.csv: the prefix holding the file (and so its images), then the file
        prefix, _, file_name = source.rstrip("/").rpartition("/")
        is_file = Path(file_name).suffix in CAPTION_FILE_SUFFIXES
        prefix = prefix if is_file else source
        bucket_and_prefix = prefix[len("s3://") :].strip("/").replace("/", "_")
        local = download_prefix(prefix, cache_dir / "s3" / bucket_and_prefix, s3_endpoint_url)
        return local / file_name if is_file else local
    path = Path(source)
    if not path.exists():
        raise ImageLingoError(
            f"dataset source {source!r}: not a directory, captions file, s3:// URI, http(s) URL, "
            "'flickr8k' or 'synthetic'"
        )
    return path


def _copy_validated_image(src: Path, dest: Path) -> str | None:
    """Decode the whole image; store it as an RGB JPEG. Return why it was refused, or None."""
    try:
        with Image.open(src) as image:
            image.load()  # a truncated file fails here, not later in the encoder
            if image.format == "JPEG" and image.mode == "RGB":
                shutil.copyfile(src, dest)
            else:
                image.convert("RGB").save(dest, format="JPEG", quality=95)
    except FileNotFoundError:
        return "image file missing"
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        return f"cannot decode image: {exc}"
    return None


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def _report_skipped(
    skipped: list[dict[str, str]], out_dir: Path, key: str = "image", what: str = "image(s)"
) -> None:
    """One warning line per reason, naming the first items (`key` of each: an image, or a
    caption line); metadata.json lists them all."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        by_reason.setdefault(_reason_kind(item["reason"]), []).append(item[key])
    for reason, names in by_reason.items():
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        log.warning(
            "skipped %d %s, %s: %s%s (all listed in %s/metadata.json)",
            len(names),
            what,
            reason,
            ", ".join(names[:5]),
            more,
            out_dir,
        )


@settings("ingest")
class IngestConfig:
    """params.yaml's `ingest` section: the defaults and what each means are written there."""

    synthetic_images: int
    seed: int
    restval_split: str
    dev_fraction: float
    test_fraction: float


def ingest(
    source: str,
    out_dir: Path,
    cache_dir: Path,
    config: IngestConfig | None = None,
    s3_endpoint_url: str | None = None,
    strict: bool = False,
    image_dir: Path | None = None,
) -> dict:
    """Run the ingest stage and return its metadata record. `image_dir` is where the images of
    a captions file are, when not beside it (`--images`)."""
    config = config or IngestConfig()
    started = time.perf_counter()
    root = resolve_source(
        source, Path(cache_dir), config.synthetic_images, config.seed, s3_endpoint_url
    )
    fmt, listing = read_source(
        root, image_dir, config.restval_split, config.dev_fraction, config.test_fraction
    )

    out_dir = Path(out_dir)
    image_out = out_dir / "images"
    shutil.rmtree(image_out, ignore_errors=True)
    image_out.mkdir(parents=True)

    def validate(item: SourceImage) -> str | None:
        (image_out / item.name).parent.mkdir(parents=True, exist_ok=True)
        return _copy_validated_image(item.path, image_out / item.name)

    wanted, skipped = listing.images, listing.skipped
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = list(
            tqdm(pool.map(validate, wanted), total=len(wanted), desc="ingest images", unit="img")
        )
    records = []
    for item, problem in zip(wanted, problems, strict=True):
        if problem is None:
            records.append(ImageRecord(item.name, item.split, item.captions))
        else:
            skipped.append({"image": item.name, "reason": problem})
            if strict:
                raise ImageLingoError(f"{item.path}: {problem}")

    _report_skipped(skipped, out_dir)
    _report_skipped(listing.skipped_line_places, out_dir, key="line", what="caption line(s)")
    for split in SPLITS:
        if not any(r.split == split for r in records):
            left_out = Counter(_reason_kind(i["reason"]) for i in skipped)
            why = ", ".join(f"{n} {reason}" for reason, n in left_out.most_common(3))
            raise ImageLingoError(
                f"{root}: no usable images in the {split} split"
                + (f" (left out: {why})" if why else "")
            )
    write_records(out_dir, records)

    caption_counts = Counter(len(r.captions) for r in records)
    counts = {
        "images": {s: sum(r.split == s for r in records) for s in SPLITS},
        "captions": {s: sum(len(r.captions) for r in records if r.split == s) for s in SPLITS},
        "images_by_caption_count": {str(k): v for k, v in sorted(caption_counts.items())},
        "skipped_by_reason": dict(Counter(_reason_kind(i["reason"]) for i in skipped)),
        "skipped_caption_lines": dict(listing.skipped_lines),
        "repaired_caption_lines": dict(listing.repaired),
    }
    inputs = {"source": source, "resolved": str(root), "format": fmt}
    if image_dir is not None:
        inputs["images"] = str(image_dir)
    return write_metadata(
        out_dir,
        "ingest",
        inputs=inputs,
        params=dataclasses.asdict(config),
        counts=counts,
        skipped=skipped,
        skipped_lines=listing.skipped_line_places,
        seconds=round(time.perf_counter() - started, 2),
    )
