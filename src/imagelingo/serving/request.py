"""What a server does with requests: a body -> its decoded images and options (or the BadRequest
that answers it); the images of several requests -> their predictions, in bounded encoder passes;
predictions -> the response body in the request's protocol.

Both servers are thin shells over this module (serving/handler.py for TorchServe,
serving/kserve_predictor.py for the kserve SDK): they accept, refuse and answer alike.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..inference.captioner import Captioner
from .images import decode_images
from .protocol import (
    MAX_IMAGES_PER_REQUEST,
    BadRequest,
    Options,
    check_body_size,
    parse_v1,
    parse_v2,
    prediction,
    v2_response,
)

log = logging.getLogger(__name__)

# 256 images in one encoder pass (8 full requests) peaked at 3.4 GB resident
MAX_IMAGES_PER_PASS = MAX_IMAGES_PER_REQUEST


@dataclass
class ParsedRequest:
    protocol: str  # "v1" or "v2"
    images: list
    options: Options
    input_name: str = ""
    request_id: str = ""
    binary_output: bool = False  # v2: the client asked for the caption output as binary data


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
        blobs, options, name, binary_output = parse_v2(body)
        images = decode_images(blobs, image_size)
        request_id = str(body.get("id") or "")
        return ParsedRequest("v2", images, options, name, request_id, binary_output)
    blobs, options = parse_v1(body)
    return ParsedRequest("v1", decode_images(blobs, image_size), options)


def caption_requests(
    captioner: Captioner, requests: list[tuple[list, Options]]
) -> list[list[dict]]:
    """The predictions for several requests' (images, options), one list per request, in
    order. Encoder passes of at most MAX_IMAGES_PER_PASS images; captions do not depend on how
    images are grouped."""
    images = [image for request_images, _ in requests for image in request_images]
    options = [option for request_images, option in requests for _ in request_images]
    log.info("batch: %d requests, %d images", len(requests), len(images))
    captions = []
    for start in range(0, len(images), MAX_IMAGES_PER_PASS):
        end = start + MAX_IMAGES_PER_PASS
        captions += captioner.caption_images(images[start:end], options[start:end])
    assert len(captions) == len(images), "one caption per image"
    predictions, start = [], 0
    for request_images, _ in requests:
        predictions.append([prediction(c) for c in captions[start : start + len(request_images)]])
        start += len(request_images)
    return predictions


def response_body(request: ParsedRequest, predictions: list[dict], model_name: str) -> dict:
    """The answer to a parsed request in its protocol (v1 or v2)."""
    if request.protocol == "v2":
        return v2_response(model_name, predictions, request.request_id)
    return {"predictions": predictions}
