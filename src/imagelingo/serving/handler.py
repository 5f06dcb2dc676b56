"""Answering a batch of KServe requests, and the TorchServe handler that does only that.

TorchServe hands the handler a batch: one row per HTTP request, each with its raw body. Every
request is parsed on its own (a bad one gets its own 4xx and does not fail the others), all
images of all good requests go through the encoder together, and requests with the same options
are beam-searched together.

Why not TorchServe's `service_envelope=kserve`: that envelope reads only the first request of a
batch (ts/torch_handler/request_envelope/kserve.py), so with batchSize > 1 the other requests get
no answer. The handler speaks KServe v1 and v2 itself; TorchServe still routes
`/v1/models/<m>:predict` and `/v2/models/<m>/infer` to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .images import decode_images
from .protocol import (
    MAX_IMAGES_PER_REQUEST,
    BadRequest,
    Options,
    check_body_size,
    parse_v1,
    parse_v2,
    v2_response,
)
from .runtime import CaptionRuntime

log = logging.getLogger(__name__)

MAX_IMAGES_PER_PASS = MAX_IMAGES_PER_REQUEST


@dataclass
class ParsedRequest:
    protocol: str  # "v1" or "v2"
    images: list
    options: Options
    input_name: str = ""
    request_id: str = ""


def parse_body(body: Any, image_size: int = 0) -> ParsedRequest:
    """A request body (bytes or already-decoded JSON) -> its images and options, or BadRequest.
    `image_size` (the encoder's input side) lets large JPEGs decode at a reduced scale."""
    if isinstance(body, BadRequest):
        raise body
    if isinstance(body, (bytes, bytearray)):
        if not body:
            raise BadRequest("empty request body; expected KServe v1 or v2 JSON")
        check_body_size(len(body))
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON ({exc})") from exc
        except RecursionError as exc:  # e.g. 200,000 "[": not a client's honest mistake
            raise BadRequest("request body is JSON nested too deeply") from exc
    if isinstance(body, dict) and "inputs" in body:
        blobs, options, name = parse_v2(body)
        images = decode_images(blobs, image_size)
        return ParsedRequest("v2", images, options, name, str(body.get("id") or ""))
    blobs, options = parse_v1(body)
    return ParsedRequest("v1", decode_images(blobs, image_size), options)


def error_body(status: int, message: str) -> dict:
    return {"error": message, "code": status}


# What a 5xx says: the exception's text stays in the server log, never in the answer.
INTERNAL_ERROR = "internal error while captioning; the server log has the details"


def parse_or_answer(body: Any, image_size: int) -> ParsedRequest | tuple[int, dict]:
    """The parsed request, or the (status, error) that answers it. Never raises: whatever one
    request's body does to the parser fails that request alone, not the others of its batch."""
    try:
        return parse_body(body, image_size)
    except BadRequest as exc:
        return exc.status, error_body(exc.status, str(exc))
    except RecursionError:  # nesting json.loads survived, deeper in Python code
        return 400, error_body(400, "request body is nested too deeply")
    except MemoryError:
        log.error("out of memory while parsing a request")
        return 413, error_body(413, "request too large to parse")
    except Exception:
        log.exception("unexpected error while parsing a request")
        return 500, error_body(500, INTERNAL_ERROR)


def answer_requests(
    runtime: CaptionRuntime, bodies: list[Any], model_name: str
) -> list[tuple[int, dict]]:
    """One (HTTP status, JSON response) per request body, in order. Never raises."""
    answers: list[tuple[int, dict] | None] = [None] * len(bodies)
    parsed: dict[int, ParsedRequest] = {}
    image_size = int(getattr(runtime, "image_size", 0) or 0)
    for index, body in enumerate(bodies):
        outcome = parse_or_answer(body, image_size)
        if isinstance(outcome, ParsedRequest):
            parsed[index] = outcome
        else:
            answers[index] = outcome
    images, options, owners = [], [], []
    for index, request in parsed.items():
        images += request.images
        options += [request.options] * len(request.images)
        owners += [index] * len(request.images)
    if images:
        log.info("batch: %d requests, %d images", len(parsed), len(images))
        try:
            captions = []
            # one encoder pass per MAX_IMAGES_PER_PASS images: 256 images in one pass (8 full
            # requests) peaked at 3.4 GB; captions do not depend on how images are grouped
            for start in range(0, len(images), MAX_IMAGES_PER_PASS):
                end = start + MAX_IMAGES_PER_PASS
                captions += runtime.caption(images[start:end], options[start:end])
        except Exception:  # a model failure answers 500 for this batch; the worker lives
            log.exception("captioning failed")
            for index in parsed:
                answers[index] = (500, error_body(500, INTERNAL_ERROR))
            return answers  # type: ignore[return-value]
        per_request: dict[int, list[dict]] = {index: [] for index in parsed}
        assert len(captions) == len(owners), "one caption per image"  # Python 3.9: no strict zip
        for owner, caption in zip(owners, captions):  # noqa: B905 (Python 3.9)
            per_request[owner].append(caption)
        for index, request in parsed.items():
            predictions = per_request[index]
            answers[index] = (
                200,
                v2_response(model_name, predictions, request.request_id)
                if request.protocol == "v2"
                else {"predictions": predictions},
            )
    return answers  # type: ignore[return-value]


FORM_ENCODED = (
    "the body arrived as form fields (Content-Type application/x-www-form-urlencoded, curl's "
    "default with -d); send the JSON with Content-Type: application/json"
)


def row_body(row: Any) -> Any:
    """TorchServe puts a request's body under "body" (or "data"). A form-encoded body arrives
    split into fields instead, which cannot be rejoined faithfully: answer that with a 400."""
    if isinstance(row, dict):
        if "body" in row or "data" in row:
            return row.get("body", row.get("data"))
        return BadRequest(FORM_ENCODED) if row else b""
    return row


class CaptionHandler:
    """TorchServe custom handler: `initialize(context)` once per worker, `handle` per batch."""

    def __init__(self) -> None:
        self.runtime: CaptionRuntime | None = None
        self.model_name = "imagelingo"
        self.initialized = False

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        self.runtime = CaptionRuntime.load(model_dir)
        self.model_name = context.manifest.get("model", {}).get("modelName", self.model_name)
        self.initialized = True
        log.info("imagelingo handler ready: %s", model_dir)

    def handle(self, data: list, context: Any) -> list:
        answers = answer_requests(self.runtime, [row_body(row) for row in data], self.model_name)
        for index, (status, response) in enumerate(answers):
            if status != 200:
                context.set_response_status(status, response["error"], idx=index)
        return [response for _, response in answers]
