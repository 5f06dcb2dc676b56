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

from .images import decode_image
from .protocol import BadRequest, Options, parse_v1, parse_v2, v2_response
from .runtime import CaptionRuntime

log = logging.getLogger(__name__)


@dataclass
class ParsedRequest:
    protocol: str  # "v1" or "v2"
    images: list
    options: Options
    input_name: str = ""
    request_id: str = ""


def parse_body(body: Any) -> ParsedRequest:
    """A request body (bytes or already-decoded JSON) -> its images and options, or BadRequest."""
    if isinstance(body, BadRequest):
        raise body
    if isinstance(body, (bytes, bytearray)):
        if not body:
            raise BadRequest("empty request body; expected KServe v1 or v2 JSON")
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON ({exc})") from exc
    if isinstance(body, dict) and "inputs" in body:
        blobs, options, name = parse_v2(body)
        images = [decode_image(blob, i) for i, blob in enumerate(blobs)]
        return ParsedRequest("v2", images, options, name, str(body.get("id") or ""))
    blobs, options = parse_v1(body)
    return ParsedRequest("v1", [decode_image(blob, i) for i, blob in enumerate(blobs)], options)


def error_body(status: int, message: str) -> dict:
    return {"error": message, "code": status}


def answer_requests(
    runtime: CaptionRuntime, bodies: list[Any], model_name: str
) -> list[tuple[int, dict]]:
    """One (HTTP status, JSON response) per request body, in order. Never raises."""
    answers: list[tuple[int, dict] | None] = [None] * len(bodies)
    parsed: dict[int, ParsedRequest] = {}
    for index, body in enumerate(bodies):
        try:
            parsed[index] = parse_body(body)
        except BadRequest as exc:
            answers[index] = (exc.status, error_body(exc.status, str(exc)))
    images, options, owners = [], [], []
    for index, request in parsed.items():
        images += request.images
        options += [request.options] * len(request.images)
        owners += [index] * len(request.images)
    if images:
        log.info("batch: %d requests, %d images", len(parsed), len(images))
        try:
            captions = runtime.caption(images, options)
        except Exception as exc:  # a model failure answers 500 for this batch; the worker lives
            log.exception("captioning failed")
            for index in parsed:
                answers[index] = (500, error_body(500, f"captioning failed: {exc}"))
            return answers  # type: ignore[return-value]
        per_request: dict[int, list[dict]] = {index: [] for index in parsed}
        assert len(captions) == len(owners), "one caption per image"  # Python 3.9: no strict zip
        for owner, caption in zip(owners, captions):
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
