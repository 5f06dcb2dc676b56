"""Untrusted image bytes -> RGB PIL images, or a BadRequest that says what was wrong.

Honours EXIF orientation, takes the first frame of animations, flattens alpha onto white,
converts grayscale/CMYK/palette to RGB, and refuses decompression bombs before decoding pixels.
Only JPEG, PNG, WebP and GIF are parsed (Pillow's other decoders are never reached), and one
request's images together may hold at most MAX_REQUEST_PIXELS decoded pixels.

Large JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, `Image.draft`) when they are at
least 4x the encoder's input on both sides, to no less than 2x the input: a 12 MP photo decodes to
~1/16 of its pixels (2400x1800: 38 ms instead of 203 ms), and the pixels the encoder sees after
the bicubic resize stay close to a full decode: on Flickr8k photos enlarged 4-12x, mean absolute
difference 0.001-0.002 and at most 0.031 on the normalised [-1, 1] scale (4 grey levels),
encoder features' cosine similarity >= 0.998 (tests/test_serving_limits.py checks a bound).
Images under that size, such as every Flickr8k image (at most 500 px a side), decode exactly as
training decoded them.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..inference.preprocess import encoder_sized
from .protocol import BadRequest

MAX_PIXELS = 40_000_000  # about 6,300 x 6,300; anything larger is refused, not decoded
# decoded pixels of all images of one request (after draft scaling): ~150 MB of RGB at most
MAX_REQUEST_PIXELS = 50_000_000
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # Image.open tries no other decoder
JPEGS = ("JPEG", "MPO")  # MPO: a JPEG with a second picture, as phone cameras write them
DRAFT_FACTOR = 2  # draft-decode a JPEG to no less than this many times the encoder input


class PixelBudget:
    """The decoded pixels one request's images may hold; spending past it is a 413 naming it."""

    def __init__(self, limit: int = MAX_REQUEST_PIXELS) -> None:
        self.limit, self.used = limit, 0

    def spend(self, pixels: int, where: str) -> None:
        self.used += pixels
        if self.used > self.limit:
            raise BadRequest(
                f"{where}: the request's images hold more than the {self.limit:,} decoded "
                "pixels allowed per request (send fewer or smaller images)",
                status=413,
            )


def draft_size(width: int, height: int, target_size: int) -> tuple[int, int] | None:
    """The size to ask `Image.draft` for, or None to decode at full size."""
    if target_size <= 0 or min(width, height) < 2 * DRAFT_FACTOR * target_size:
        return None
    return (DRAFT_FACTOR * target_size, DRAFT_FACTOR * target_size)


def decode_image(
    data: bytes, index: int = 0, target_size: int = 0, budget: PixelBudget | None = None
) -> Image.Image:
    """Decode one request image; `index` names it in errors. With `target_size` (the encoder's
    input side) a large JPEG is decoded at a reduced scale; `budget` counts decoded pixels."""
    where = f"instance {index}"
    if not data:
        raise BadRequest(f"{where}: empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadRequest(
                    f"{where}: {width}x{height} pixels is more than the {MAX_PIXELS:,} allowed",
                    status=413,
                )
            image.seek(0)  # first frame of a GIF/WebP animation
            draft = draft_size(width, height, target_size) if image.format in JPEGS else None
            if draft is not None:
                image.draft("RGB", draft)
            if budget is not None:
                budget.spend(image.size[0] * image.size[1], where)
            image.load()
    except BadRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRequest(f"{where}: refused as a decompression bomb ({exc})", status=413) from exc
    except UnidentifiedImageError as exc:
        raise BadRequest(f"{where}: not an image (JPEG, PNG, WebP or GIF expected)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"{where}: cannot decode image ({exc})") from exc
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_images(blobs: list[bytes], target_size: int = 0) -> list[Image.Image]:
    """All images of one request, within one pixel budget. With `target_size` each is resized
    to the encoder's input as soon as it is decoded (the same pixels as resizing later, see
    encoder_sized), so a request holds one full-size image at a time, not all of them."""
    budget = PixelBudget()
    decoded = []
    for index, blob in enumerate(blobs):
        image = decode_image(blob, index, target_size, budget)
        decoded.append(encoder_sized(image, target_size) if target_size else image)
    return decoded
