"""Stage 1, ingest: any Flickr8k source -> dataset/ (validated RGB JPEGs + captions.jsonl).

Sources: a local directory in the Flickr8k layout, the public archive URLs ("flickr8k" or one or
more http(s) URLs, comma-separated), an s3:// prefix, or "synthetic". Every image is decoded; every
image or caption that is not carried over is counted with its reason and reported by name.
"""

from __future__ import annotations

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
from imagelingo.data.synthetic import generate_synthetic
from imagelingo.errors import ImageLingoError
from imagelingo.storage import download_prefix

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
    """Turn any supported source into a local directory in the Flickr8k layout."""
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
        bucket_and_prefix = source[len("s3://") :].strip("/").replace("/", "_")
        return download_prefix(source, cache_dir / "s3" / bucket_and_prefix, s3_endpoint_url)
    path = Path(source)
    if not path.is_dir():
        raise ImageLingoError(
            f"dataset source {source!r}: not a directory, s3:// URI, http(s) URL, 'flickr8k' "
            "or 'synthetic'"
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


def _report_skipped(skipped: list[dict[str, str]], out_dir: Path) -> None:
    """One warning line per reason, naming the first images; metadata.json lists them all."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        by_reason.setdefault(_reason_kind(item["reason"]), []).append(item["image"])
    for reason, names in by_reason.items():
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        log.warning(
            "skipped %d image(s), %s: %s%s (all listed in %s/metadata.json)",
            len(names),
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


def ingest(
    source: str,
    out_dir: Path,
    cache_dir: Path,
    config: IngestConfig | None = None,
    s3_endpoint_url: str | None = None,
    strict: bool = False,
) -> dict:
    """Run the ingest stage and return its metadata record."""
    config = config or IngestConfig()
    synthetic_images, seed = config.synthetic_images, config.seed
    started = time.perf_counter()
    root = resolve_source(source, Path(cache_dir), synthetic_images, seed, s3_endpoint_url)
    layout = flickr8k.locate_layout(root)
    tokens = flickr8k.parse_token_file(layout.token_file)
    splits = {s: flickr8k.parse_split_file(p) for s, p in layout.split_files.items()}

    out_dir = Path(out_dir)
    image_out = out_dir / "images"
    shutil.rmtree(image_out, ignore_errors=True)
    image_out.mkdir(parents=True)

    skipped: list[dict[str, str]] = []
    wanted: list[tuple[str, str]] = []
    seen: set[str] = set()
    for split in SPLITS:
        for name in splits[split]:
            if name in seen:
                skipped.append({"image": name, "reason": f"listed again in {split} split"})
            elif name not in tokens.captions:
                skipped.append({"image": name, "reason": "in a split file but has no captions"})
            else:
                wanted.append((split, name))
            seen.add(name)
    for name, captions in tokens.captions.items():
        if name not in seen:
            has_file = (layout.image_dir / name).is_file()
            reason = "in no split file" if has_file else "caption id without an image file"
            skipped.append({"image": name, "reason": f"{reason} ({len(captions)} captions)"})

    def validate(item: tuple[str, str]) -> str | None:
        return _copy_validated_image(layout.image_dir / item[1], image_out / item[1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = list(
            tqdm(pool.map(validate, wanted), total=len(wanted), desc="ingest images", unit="img")
        )
    records = []
    for (split, name), problem in zip(wanted, problems, strict=True):
        if problem is None:
            records.append(ImageRecord(name, split, tokens.captions[name]))
        else:
            skipped.append({"image": name, "reason": problem})
            if strict:
                raise ImageLingoError(f"{layout.image_dir / name}: {problem}")

    _report_skipped(skipped, out_dir)
    for split in SPLITS:
        if not any(r.split == split for r in records):
            raise ImageLingoError(f"{root}: no usable images in the {split} split")
    write_records(out_dir, records)

    caption_counts = Counter(len(r.captions) for r in records)
    counts = {
        "images": {s: sum(r.split == s for r in records) for s in SPLITS},
        "captions": {s: sum(len(r.captions) for r in records if r.split == s) for s in SPLITS},
        "images_by_caption_count": {str(k): v for k, v in sorted(caption_counts.items())},
        "skipped_by_reason": dict(Counter(_reason_kind(i["reason"]) for i in skipped)),
        "skipped_caption_lines": dict(tokens.skipped_lines),
        "repaired_caption_lines": dict(tokens.repaired),
    }
    return write_metadata(
        out_dir,
        "ingest",
        inputs={"source": source, "resolved": str(root)},
        params={"synthetic_images": synthetic_images, "seed": seed},
        counts=counts,
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 2),
    )
