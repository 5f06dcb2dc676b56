"""KServe v1 and v2 request parsing and response building, with bounded per-request options.

v1: {"instances": [{"data": IMAGE} | {"image_bytes": IMAGE} | {"b64": "<base64>"} | "<base64>"],
     "parameters": {...}}
v2: {"inputs": [{"name": ..., "datatype": "BYTES", "shape": [n], "data": [IMAGE, ...]}],
     "parameters": {...}}
where IMAGE is what clients send: "<base64>" (RFC 2045 line breaks and other whitespace inside
are ignored: `base64` without -w0, Java's MIME encoder, `openssl base64`), a data URL
"data:image/<type>;base64,<base64>" (a browser's FileReader.readAsDataURL), or {"b64": "<base64>"}
(TensorFlow Serving's and AI Platform's binary convention, which KServe's samples send:
{"instances": [{"image_bytes": {"b64": ...}}]}).
Options (beam_width, max_len) are given per request in "parameters".

Limits per request (each refusal names its limit): MAX_REQUEST_BYTES of body (413),
MAX_IMAGES_PER_REQUEST images (413); images.py adds a per-image and a per-request pixel budget.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from ..inference.errors import ImageLingoError
from ..inference.options import Options
from . import oip
from .oip import PROTOCOL_PARAMETERS

if TYPE_CHECKING:
    from ..inference.captioner import Caption

BEAM_WIDTH_RANGE = (1, 10)
MAX_LEN_RANGE = (1, 50)
# The documented body limit, enforced by both runtimes with a 413 naming it. TorchServe's own
# max_request_size (package.py) is a higher outer cap, so that bodies between the two reach the
# handler and get a JSON 413 the client can read instead of Netty's close-while-sending.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Every image costs an encoder pass: 3,000 1x1 PNGs in one 2 MB body killed the worker (OOM).
MAX_IMAGES_PER_REQUEST = 32


class BadRequest(ImageLingoError):
    """A client error: the server answers 4xx with this message and keeps serving."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _bounded(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


def parse_options(parameters: Any, defaults: Options = Options()) -> Options:
    if parameters is None:
        return defaults
    if not isinstance(parameters, dict):
        raise BadRequest(f"parameters must be an object, got {type(parameters).__name__}")
    unknown = set(parameters) - {"beam_width", "max_len"}
    if unknown:
        raise BadRequest(f"unknown parameter(s) {sorted(unknown)}; expected beam_width, max_len")
    return Options(
        _bounded(
            "beam_width", parameters.get("beam_width", defaults.beam_width), *BEAM_WIDTH_RANGE
        ),
        _bounded("max_len", parameters.get("max_len", defaults.max_len), *MAX_LEN_RANGE),
    )


# RFC 2045 6.8: encoded lines are at most 76 characters; decoders ignore the line breaks. Only
# ASCII whitespace is ignored here: any other character outside the alphabet is still a 400.
WHITESPACE = {ord(c): None for c in " \t\r\n\v\f"}
DATA_URL_HEADER = 256  # "data:image/jpeg;base64," with parameters; the ',' must come before this
IMAGE_KEYS = ("data", "image_bytes", "b64")  # a v1 instance's image, in the order looked up


def decode_base64(text: Any, index: int) -> bytes:
    """One image as a client sent it: base64 text (whitespace ignored), a base64 data: URL of an
    image type, or bytes (a runtime that decoded the base64 already)."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if not isinstance(text, str):
        raise BadRequest(f"instance {index}: expected a base64 string, got {type(text).__name__}")
    if text[:5].lower() == "data:":  # RFC 2397; the scheme is case-insensitive
        text = data_url_payload(text, index)
    try:
        return base64.b64decode(text.translate(WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"instance {index}: invalid base64 ({exc})") from exc


def data_url_payload(url: str, index: int) -> str:
    """The base64 text of `data:image/<type>[;<parameter>]*;base64,<text>` (RFC 2397 section 3),
    or a BadRequest naming what the data URL lacks."""
    header, comma, _ = url[:DATA_URL_HEADER].partition(",")
    if not comma:
        raise BadRequest(
            f"instance {index}: a data URL needs ',' within its first {DATA_URL_HEADER} "
            "characters (data:image/jpeg;base64,<base64>)"
        )
    media_type, *parameters = header[5:].split(";")
    if not media_type.strip().lower().startswith("image/"):
        raise BadRequest(
            f"instance {index}: data URL of type {media_type.strip() or 'text/plain'!r} is not "
            "an image (data:image/jpeg;base64,... expected)"
        )
    if not parameters or parameters[-1].strip().lower() != "base64":
        raise BadRequest(
            f"instance {index}: data URL {header + ','!r} is not base64 (';base64,' expected "
            "before the data: percent-encoded image bytes are not accepted)"
        )
    return url[len(header) + 1 :]


def unwrap_b64(payload: Any, index: int, key: str) -> Any:
    """{"b64": "<base64>"} -> its text; other values are returned for decode_base64 to judge."""
    if not isinstance(payload, dict):
        return payload
    if set(payload) != {"b64"}:
        raise BadRequest(
            f'instance {index}: "{key}" must be a base64 string or {{"b64": "<base64>"}}, got an '
            f"object with keys {sorted(payload)}"
        )
    if not isinstance(payload["b64"], str):
        raise BadRequest(
            f'instance {index}: "b64" must be a base64 string, got {type(payload["b64"]).__name__}'
        )
    return payload["b64"]


def instance_image(instance: Any, index: int) -> bytes:
    """A v1 instance's image: a bare IMAGE, or one under "data", "image_bytes" or "b64"."""
    if not isinstance(instance, dict):
        return decode_base64(instance, index)
    keys = [key for key in IMAGE_KEYS if key in instance]
    if not keys:
        raise BadRequest(
            f'instance {index}: expected {{"data": "<base64 image>"}} (or "image_bytes"), got '
            f"keys {sorted(instance)[:5]}"
        )
    if len(keys) > 1:
        raise BadRequest(f"instance {index}: holds an image under both {keys}; send one")
    return decode_base64(unwrap_b64(instance[keys[0]], index, keys[0]), index)


def check_body_size(size: int) -> None:
    if size > MAX_REQUEST_BYTES:
        raise BadRequest(
            f"request body of {size:,} bytes is over the {MAX_REQUEST_BYTES:,} bytes allowed",
            status=413,
        )


def check_image_count(count: int) -> None:
    if count > MAX_IMAGES_PER_REQUEST:
        raise BadRequest(
            f"request holds {count:,} images; at most {MAX_IMAGES_PER_REQUEST} images per "
            "request are allowed (split it into several requests)",
            status=413,
        )


def parse_v1(body: Any) -> tuple[list[bytes], Options]:
    if not isinstance(body, dict) or "instances" not in body:
        raise BadRequest('expected a JSON object with "instances" (KServe v1)')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list')
    check_image_count(len(instances))
    options = parse_options(body.get("parameters"))
    images = [instance_image(instance, i) for i, instance in enumerate(instances)]
    return images, options


def parse_v2(body: Any) -> tuple[list[bytes], Options, str, bool]:
    """Returns the images, the options, the input's name (echoed in the response) and whether the
    client asked for binary output. An image is base64 text in JSON, or the file's bytes when it
    came as binary data (oip.read_binary_request)."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadRequest('expected a JSON object with "inputs" (KServe v2)')
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest('"inputs" must hold exactly one tensor of BYTES')
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f'input datatype must be "BYTES", got {tensor.get("datatype")!r}')
    if "binary_data_size" in (tensor.get("parameters") or {}):
        raise BadRequest(
            f"input {tensor.get('name')!r} has binary_data_size but the request has no "
            "Inference-Header-Content-Length header (the binary extension needs both)"
        )
    data = tensor.get("data")
    if not isinstance(data, list) or not data:
        raise BadRequest('input "data" must be a non-empty list of base64 images')
    check_image_count(len(data))
    check_shape(tensor.get("shape"), len(data))
    parameters = body.get("parameters")
    try:
        binary_output = oip.binary_output_requested(body)
    except oip.ProtocolError as exc:
        raise BadRequest(str(exc)) from exc
    if isinstance(parameters, dict):
        parameters = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
    options = parse_options(parameters)
    images = [decode_base64(unwrap_b64(item, i, "data"), i) for i, item in enumerate(data)]
    return images, options, str(tensor.get("name", "image")), binary_output


def check_shape(shape: Any, count: int) -> None:
    """A v2 tensor's shape must describe its data: [n] (or dimensions whose product is n)."""
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest(f'input "shape" must be a list of sizes such as [{count}], got {shape!r}')
    product = 1
    for dimension in shape:
        product *= dimension
    if product != count:
        raise BadRequest(
            f'input "shape" {shape} describes {product:,} elements but "data" holds {count:,}'
        )


def prediction(caption: Caption) -> dict:
    """One image's answer: {"caption": "...", "tokens": [...], "score": -4.2}."""
    return {"caption": caption.text, "tokens": caption.words, "score": round(caption.score, 4)}


def error_body(status: int, message: str) -> dict:
    return {"error": message, "code": status}


# What a 5xx says: the exception's text stays in the server log, never in the answer.
INTERNAL_ERROR = "internal error while captioning; the server log has the details"


def v2_response(model_name: str, predictions: list[dict], request_id: str = "") -> dict:
    """The v2 response echoes the request's id (a fresh one when the request had none)."""
    import json
    import uuid

    return {
        "id": request_id or str(uuid.uuid4()),
        "model_name": model_name,
        "outputs": [
            {
                "name": "caption",
                "datatype": "BYTES",
                "shape": [len(predictions)],
                "data": [json.dumps(p) for p in predictions],
            }
        ],
    }
