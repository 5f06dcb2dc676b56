"""Untrusted image bytes -> RGB PIL images, or a BadRequest that says what was wrong; pixels.

Honours EXIF orientation, takes the first frame of animations, flattens alpha onto white,
converts grayscale/CMYK/palette to RGB, and refuses decompression bombs before decoding pixels.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import functional as TF

from .protocol import BadRequest

MAX_PIXELS = 40_000_000  # about 6,300 x 6,300; anything larger is refused, not decoded


def decode_image(data: bytes, index: int = 0) -> Image.Image:
    """Decode one request image fully; `index` names it in errors."""
    where = f"instance {index}"
    if not data:
        raise BadRequest(f"{where}: empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadRequest(
                    f"{where}: {width}x{height} pixels is more than the {MAX_PIXELS:,} allowed",
                    status=413,
                )
            image.seek(0)  # first frame of a GIF/WebP animation
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


def to_pixels(
    image: Image.Image,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """RGB image -> normalised [3, size, size] tensor, resized to a square without cropping.

    Feature extraction (training) and serving both call this, so they see the same pixels.
    """
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    return TF.normalize(TF.to_tensor(image), mean, std)
