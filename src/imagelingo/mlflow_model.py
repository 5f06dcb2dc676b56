"""The captioner as an MLflow pyfunc model: what a registry version of `imagelingo` holds.

    model = mlflow.pyfunc.load_model("models:/imagelingo@production")
    model.predict(pandas.DataFrame({"image": [Path("dog.jpg").read_bytes()]}))  # -> "caption"
    mlflow models serve -m models:/imagelingo@production --env-manager local

Input: a column "image" of encoded images (JPEG, PNG, WebP, GIF), as bytes or as base64 text
(whitespace ignored; `mlflow models serve` hands a binary column over as bytes). Output: a column
"caption". Params: beam_width and max_len, defaults as served (inference/options.py).

model_logging.log_captioner logs it: this module and the torch-only inference package are its code
(code_paths), the serving bundle exported at fp32 (TorchScript encoder, decoder weights, config,
vocabulary) its artifact, so it captions as `imagelingo caption` does. It imports nothing of this
project but imagelingo.inference.
"""

from __future__ import annotations

import base64
import binascii
import io
import numbers
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from PIL import Image, UnidentifiedImageError

from imagelingo.inference.captioner import Captioner
from imagelingo.inference.options import Options
from imagelingo.inference.preprocess import encoder_sized

BUNDLE = "bundle"  # the artifact: a serving bundle directory (Captioner.load reads it)
IMAGE, CAPTION = "image", "caption"  # the input and output columns
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # as served (serving/images.py): no other decoder runs
MAX_PIXELS = 40_000_000  # per image, as served
# the served bounds (serving/protocol.py, which this module cannot import)
BEAM_WIDTH_RANGE, MAX_LEN_RANGE = (1, 10), (1, 50)
IMAGES_PER_PASS = 32  # one encoder pass holds at most this many images (serving's request cap)
WHITESPACE = {ord(c): None for c in " \t\r\n\v\f"}


def bad_image(row: int, problem: str) -> MlflowException:
    """A client error: `mlflow models serve` answers it with a 400 naming the row."""
    return MlflowException.invalid_parameter_value(f"image {row}: {problem}")


def image_bytes(value: Any, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise bad_image(row, f"expected bytes or base64 text, got {type(value).__name__}")
    try:
        return base64.b64decode(value.translate(WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_image(row, f"invalid base64 ({exc})") from exc


def open_image(data: bytes, row: int, size: int) -> Image.Image:
    """Encoded bytes -> the RGB image the encoder sees, as `imagelingo caption` opens a file."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise bad_image(row, f"{image.size[0]}x{image.size[1]} pixels is too large")
            return encoder_sized(image, size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise bad_image(row, f"not a readable JPEG, PNG, WebP or GIF ({exc})") from exc


def bounded(params: dict, name: str, default: int, limits: tuple[int, int]) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        value = None  # e.g. 2.5 or "3": refused below, not rounded
    if value is None or not limits[0] <= value <= limits[1]:
        raise MlflowException.invalid_parameter_value(
            f"{name} must be an integer from {limits[0]} to {limits[1]}, got {params.get(name)!r}"
        )
    return int(value)


class CaptionerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.captioner = Captioner.load(Path(context.artifacts[BUNDLE]))

    def predict(self, context, model_input, params: dict | None = None):
        import pandas as pd

        params = params or {}
        options = Options(
            bounded(params, "beam_width", Options.beam_width, BEAM_WIDTH_RANGE),
            bounded(params, "max_len", Options.max_len, MAX_LEN_RANGE),
        )
        values = list(model_input[IMAGE])
        captions: list[str] = []
        for start in range(0, len(values), IMAGES_PER_PASS):
            chunk = values[start : start + IMAGES_PER_PASS]
            images = [
                open_image(image_bytes(value, row), row, self.captioner.image_size)
                for row, value in enumerate(chunk, start)
            ]
            captions += [c.text for c in self.captioner.caption_images(images, options)]
        return pd.DataFrame({CAPTION: captions})
