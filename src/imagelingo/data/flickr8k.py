"""Flickr8k: parse the token and split files, locate the layout, download the public archives.

The token file has two known quirks (see shared/flickr8k/README.md): three lines separate the
caption id from the caption with a space instead of a TAB, and one photo's captions use an id with
a ".1" suffix that names no image file. Both are handled and reported, never crashed on.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from imagelingo.data.listing import Listing, SkippedLines, SourceImage
from imagelingo.errors import ImageLingoError

TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset")

# The public archives the classic tutorials use. Their sha256 is checked when known; an unknown
# digest is recorded in the cache so a later download that differs is caught.
PUBLIC_ARCHIVES = {
    "images": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "text": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
}

# "<image>#<n>" then a TAB (or, in 3 known lines, a space) then the caption.
_CAPTION_LINE = re.compile(r"^(?P<image>\S+?)#(?P<n>\d+)(?P<sep>\t| +)(?P<caption>.*)$")


@dataclass
class TokenFile(SkippedLines):
    """Captions per image id, plus what parsing had to repair or leave out."""

    captions: dict[str, list[str]] = field(default_factory=dict)
    repaired: Counter = field(default_factory=Counter)


def parse_token_file(path: Path) -> TokenFile:
    """Read `<image>#<n>\\t<caption>` lines. A line that does not match is an error naming it."""
    result = TokenFile()
    with open(path, encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            match = _CAPTION_LINE.match(line)
            if match is None:
                raise ImageLingoError(
                    f"{path} line {line_no}: expected '<image>#<n><TAB><caption>', "
                    f"got {line[:80]!r}"
                )
            if match["sep"] != "\t":
                result.repaired["space instead of TAB after caption id"] += 1
            caption = match["caption"].strip()
            if not caption:
                result.skip_line(f"{path} line {line_no}", "empty caption")
                continue
            result.captions.setdefault(match["image"], []).append(caption)
    return result


def parse_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ImageLingoError(f"missing split file {path} (expected one image name per line)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


@dataclass(frozen=True)
class Flickr8kLayout:
    token_file: Path
    image_dir: Path
    split_files: dict[str, Path]


def locate_layout(root: Path) -> Flickr8kLayout:
    """Find the token file, split files and image folder under `root` (the archives nest them)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageLingoError(f"Flickr8k directory does not exist: {root}")
    token_files = sorted(root.rglob(TOKEN_FILE))
    if not token_files:
        raise ImageLingoError(f"{root}: no {TOKEN_FILE} found (expected the Flickr8k text files)")
    text_dir = token_files[0].parent
    split_files = {}
    for split, name in SPLIT_FILES.items():
        candidates = [text_dir / name, *sorted(root.rglob(name))]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ImageLingoError(f"{root}: missing split file {name}")
        split_files[split] = found
    image_dirs = [d for name in IMAGE_DIR_NAMES for d in sorted(root.rglob(name)) if d.is_dir()]
    if not image_dirs:
        raise ImageLingoError(f"{root}: no image folder (looked for {', '.join(IMAGE_DIR_NAMES)})")
    return Flickr8kLayout(token_files[0], image_dirs[0], split_files)


def read_listing(root: Path) -> Listing:
    """The images of the split files with their captions; what no split lists, what a split
    lists twice or without captions, set aside with the reason."""
    layout = locate_layout(root)
    tokens = parse_token_file(layout.token_file)
    splits = {s: parse_split_file(p) for s, p in layout.split_files.items()}
    listing = Listing(
        skipped_lines=tokens.skipped_lines,
        skipped_line_places=tokens.skipped_line_places,
        repaired=tokens.repaired,
    )
    seen: set[str] = set()
    for split, names in splits.items():
        for name in names:
            if name in seen:
                listing.skip(name, f"listed again in {split} split")
            elif name not in tokens.captions:
                listing.skip(name, "in a split file but has no captions")
            else:
                image = SourceImage(split, name, layout.image_dir / name, tokens.captions[name])
                listing.images.append(image)
            seen.add(name)
    for name, captions in tokens.captions.items():
        if name not in seen:
            has_file = (layout.image_dir / name).is_file()
            reason = "in no split file" if has_file else "caption id without an image file"
            listing.skip(name, f"{reason} ({len(captions)} captions)")
    return listing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, cache_dir: Path, sha256: str | None = None) -> Path:
    """Download `url` into `cache_dir` once, with a progress bar and a sha256 check.

    The file is written to `<name>.part` and renamed when complete, so an interrupted download is
    never mistaken for a cached one. The digest is kept beside it (`<name>.sha256`); a cached file
    whose digest no longer matches is an error, not a silent re-use.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(urllib.request.urlparse(url).path).name
    digest_file = target.with_name(target.name + ".sha256")
    if target.is_file():
        actual = sha256_of(target)
        expected = sha256 or (digest_file.read_text().strip() if digest_file.is_file() else actual)
        if actual != expected:
            raise ImageLingoError(f"cached {target} has sha256 {actual}, expected {expected}")
        return target
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {target.name}"
            ) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ImageLingoError(f"download of {url} failed: {exc}") from exc
    actual = sha256_of(part)
    if sha256 and actual != sha256:
        part.unlink()
        raise ImageLingoError(f"download of {url}: sha256 {actual}, expected {sha256}")
    part.rename(target)
    digest_file.write_text(actual + "\n")
    return target


def download_archives(urls: list[str], cache_dir: Path) -> Path:
    """Download and unpack zip archives into one folder under the cache; return that folder."""
    unpacked = cache_dir / "unpacked"
    for url in urls:
        archive = download(url, cache_dir)
        marker = unpacked / f".{archive.name}.done"
        if marker.exists():
            continue
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
        except zipfile.BadZipFile as exc:
            raise ImageLingoError(f"{archive} is not a valid zip archive: {exc}") from exc
        marker.touch()
    return unpacked


def clear_cache(cache_dir: Path) -> None:
    shutil.rmtree(cache_dir, ignore_errors=True)
