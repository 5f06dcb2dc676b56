"""KServe v1 and v2 request parsing and response building, with bounded per-request options.

v1: {"instances": [{"data": "<base64>"} | {"b64": "<base64>"} | "<base64>"], "parameters": {...}}
v2: {"inputs": [{"name": ..., "datatype": "BYTES", "shape": [n], "data": ["<base64>", ...]}],
     "parameters": {...}}
Options (beam_width, max_len) may be given per request in "parameters" or per v1 instance.

Limits per request (each refusal names its limit): MAX_REQUEST_BYTES of body (413),
MAX_IMAGES_PER_REQUEST images (413); images.py adds a per-image and a per-request pixel budget.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from ..inference.errors import ImageLingoError
from ..inference.options import Options

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


def decode_base64(text: Any, index: int) -> bytes:
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if not isinstance(text, str):
        raise BadRequest(f"instance {index}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"instance {index}: invalid base64 ({exc})") from exc


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
    images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            payload = instance.get("data", instance.get("b64"))
            if payload is None:
                raise BadRequest(f'instance {i}: expected {{"data": "<base64 image>"}}')
        else:
            payload = instance
        images.append(decode_base64(payload, i))
    return images, options


def parse_v2(body: Any) -> tuple[list[bytes], Options, str]:
    """Returns the images, the options and the input's name (echoed in the response)."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadRequest('expected a JSON object with "inputs" (KServe v2)')
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest('"inputs" must hold exactly one tensor of BYTES')
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f'input datatype must be "BYTES", got {tensor.get("datatype")!r}')
    data = tensor.get("data")
    if not isinstance(data, list) or not data:
        raise BadRequest('input "data" must be a non-empty list of base64 images')
    check_image_count(len(data))
    check_shape(tensor.get("shape"), len(data))
    options = parse_options(body.get("parameters"))
    images = [decode_base64(item, i) for i, item in enumerate(data)]
    return images, options, str(tensor.get("name", "image"))


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
