"""TorchServe's handler: a batch of KServe v1/v2 requests answered with one Captioner.

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

import logging
from pathlib import Path
from typing import Any

from ..inference.captioner import Captioner
from .protocol import INTERNAL_ERROR, BadRequest, error_body
from .request import ParsedRequest, caption_requests, parse_body, response_body

log = logging.getLogger(__name__)


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
    captioner: Captioner, bodies: list[Any], model_name: str
) -> list[tuple[int, dict]]:
    """One (HTTP status, JSON response) per request body, in order. Never raises."""
    answers: list[tuple[int, dict] | None] = [None] * len(bodies)
    parsed: dict[int, ParsedRequest] = {}
    for index, body in enumerate(bodies):
        outcome = parse_or_answer(body, captioner.image_size)
        if isinstance(outcome, ParsedRequest):
            parsed[index] = outcome
        else:
            answers[index] = outcome
    if parsed:
        try:
            batch = [(request.images, request.options) for request in parsed.values()]
            predictions = caption_requests(captioner, batch)
        except Exception:  # a model failure answers 500 for this batch; the worker lives
            log.exception("captioning failed")
            for index in parsed:
                answers[index] = (500, error_body(500, INTERNAL_ERROR))
            return answers  # type: ignore[return-value]
        # no zip(strict=True): this module runs on the runtime's Python 3.9
        for (index, request), answer in zip(parsed.items(), predictions):  # noqa: B905
            answers[index] = (200, response_body(request, answer, model_name))
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
        self.captioner: Captioner | None = None
        self.model_name = "imagelingo"
        self.initialized = False

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        self.captioner = Captioner.load(model_dir)
        # the name TorchServe registered (a v2 response's model_name): the snapshot key, which
        # the runtime's entrypoint sets to the InferenceService's name; the MAR's manifest keeps
        # the name it was packaged with
        packaged = context.manifest.get("model", {}).get("modelName", self.model_name)
        self.model_name = getattr(context, "model_name", None) or packaged
        self.initialized = True
        log.info("imagelingo handler ready: %s", model_dir)

    def handle(self, data: list, context: Any) -> list:
        answers = answer_requests(self.captioner, [row_body(row) for row in data], self.model_name)
        for index, (status, response) in enumerate(answers):
            if status != 200:
                context.set_response_status(status, response["error"], idx=index)
        return [response for _, response in answers]
