"""The native KServe predictor: the same model store and answers as TorchServe, on the kserve SDK.

`kserve.Model` gets KServe's v1 and v2 routes, readiness (`GET /v1/models/<m>`,
`/v2/health/ready`) and Prometheus `/metrics` from the SDK. The model loads the serving bundle from
the MAR in the model store (the same file TorchServe serves), so both runtimes caption with the
same TorchScript encoder. The model is a thin shell over the request handling the TorchServe
handler uses too (serving/request.py) and the same Captioner: `preprocess` parses a request and
decodes its images, `predict` captions them, `postprocess` builds the v1 or v2 answer. Concurrent
requests are micro-batched like TorchServe's batchSize and maxBatchDelay: one encoder pass and one
beam search per batch, run off the event loop.

Limits, as TorchServe's handler enforces them plus what a server of its own must do itself:
- bodies over protocol.MAX_REQUEST_BYTES get a 413, also when sent chunked (no Content-Length);
  the rest of the body is read and dropped first (up to the store's max_request_size), so that a
  client still sending receives the 413 instead of a reset connection;
- images are decoded (and resized to the encoder's input) in a small thread pool, never on the
  event loop; requests waiting for the model are bounded (the store's job_queue_size, as in
  TorchServe): one more gets 503 with Retry-After;
- a waiting request that is cancelled (client gone) is skipped; 5xx answers carry no exception
  text (it goes to the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kserve
from fastapi import Request
from fastapi.responses import JSONResponse

from imagelingo.errors import ImageLingoError
from imagelingo.inference.captioner import Captioner
from imagelingo.serving import oip
from imagelingo.serving.protocol import (
    INTERNAL_ERROR,
    MAX_REQUEST_BYTES,
    BadRequest,
    Options,
    error_body,
)
from imagelingo.serving.request import ParsedRequest, caption_requests, parse_body, response_body
from imagelingo.serving.store import model_names, store_properties

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
DECODE_THREADS = 2


class Overloaded(Exception):
    """Too many requests are waiting: answered 503 with Retry-After."""


class InternalError(Exception):
    """A server-side failure, already logged: answered 500 with a generic message."""


class MicroBatcher:
    """Collects concurrent requests' images for up to `max_delay_s`, or until `max_images`."""

    def __init__(self, captioner: Captioner, max_images: int, max_delay_s: float) -> None:
        self.captioner, self.max_images, self.max_delay_s = captioner, max_images, max_delay_s
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    async def caption(self, images: list, options: Options) -> list[dict]:
        if self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, options, future))
        return await future

    async def _collect(self) -> list[tuple]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count, deadline = len(batch[0][0]), loop.time() + self.max_delay_s
        while count < self.max_images and (remaining := deadline - loop.time()) > 0:
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
            count += len(batch[-1][0])
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            # a request whose caller is gone (cancelled) costs no encoder work
            batch = [item for item in batch if not item[2].done()]
            if batch:
                try:
                    await self._answer(batch)
                # a failed batch answers 500 to its requests; the worker lives on, or later
                # requests would hang
                except Exception as exc:
                    log.exception("captioning failed")
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(InternalError(str(exc)))

    async def _answer(self, batch: list[tuple]) -> None:
        loop = asyncio.get_running_loop()
        requests = [(images, options) for images, options, _ in batch]
        predictions = await loop.run_in_executor(None, caption_requests, self.captioner, requests)
        for (*_, future), answer in zip(batch, predictions, strict=True):
            if not future.done():  # cancelled while the batch ran
                future.set_result(answer)


def v2_request_to_dict(request: kserve.InferRequest) -> dict:
    """kserve's parsed v2 request back to the JSON shape protocol.parse_v2 checks. Every request
    reaches kserve as JSON (InferAsJson converts binary ones), so BYTES are base64 text."""
    inputs = [
        {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.data}
        for t in request.inputs
    ]
    body = {
        "id": request.id or "",
        "inputs": inputs,
        "parameters": dict(request.parameters or {}) or None,
    }
    if request.request_outputs:
        body["outputs"] = [
            {"name": o.name, **({"parameters": o.parameters} if o.parameters else {})}
            for o in request.request_outputs
        ]
    return body


def binary_infer_response(body: dict) -> kserve.InferResponse:
    """A v2 answer as kserve's InferResponse with binary outputs: kserve's own encoder
    (InferResponse.to_rest) writes the binary data and the header's length."""
    from kserve import InferOutput

    outputs = [
        InferOutput(o["name"], o["shape"], o["datatype"], [d.encode() for d in o["data"]])
        for o in body["outputs"]
    ]
    return kserve.InferResponse(body["id"], body["model_name"], outputs, use_binary_outputs=True)


class CaptionModel(kserve.Model):
    """kserve's model: `preprocess` decodes a request's images (in a thread), `predict` captions
    them with other waiting requests' images (MicroBatcher), `postprocess` builds the answer."""

    def __init__(
        self,
        name: str,
        bundle_dir: Path,
        max_batch_size: int = 8,
        max_batch_delay_ms: int = 20,
        max_waiting: int = 100,
    ) -> None:
        super().__init__(name)
        self.bundle_dir = Path(bundle_dir)
        self.max_batch_size, self.max_batch_delay_ms = max_batch_size, max_batch_delay_ms
        self.max_waiting, self.waiting = max_waiting, 0
        self.batcher: MicroBatcher | None = None
        self.decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")

    def load(self) -> bool:
        captioner = Captioner.load(self.bundle_dir)
        self.batcher = MicroBatcher(captioner, self.max_batch_size, self.max_batch_delay_ms / 1000)
        self.ready = True
        return self.ready

    def parse(self, body: Any) -> ParsedRequest:
        """Decode a request's images, already resized to the encoder's input, so that a waiting
        request holds ~150 kB per image, not its full-size pixels. (Runs in a thread.)"""
        return parse_body(body, self.batcher.captioner.image_size)

    async def preprocess(self, payload: Any, headers: dict | None = None) -> ParsedRequest:
        """The request's images and options; BadRequest (a 4xx) or Overloaded (503) if not.
        From here until `predict` returns, the request counts as waiting for the model."""
        if isinstance(payload, (dict, bytes, bytearray)):
            body = payload  # bytes: a body not sent as application/json; parse_body decodes it
        else:
            body = v2_request_to_dict(payload)
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} requests are waiting for the model; retry later")
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.decoders, self.parse, body)
        except BaseException:
            self.waiting -= 1
            raise

    def validate(self, payload: ParsedRequest) -> ParsedRequest:
        return payload  # parse_body has checked it, for both protocols

    async def predict(
        self, payload: ParsedRequest, headers: dict | None = None
    ) -> tuple[ParsedRequest, list[dict]]:
        try:
            return payload, await self.batcher.caption(payload.images, payload.options)
        finally:
            self.waiting -= 1

    async def postprocess(
        self,
        result: tuple[ParsedRequest, list[dict]],
        headers: dict | None = None,
        response_headers: dict | None = None,
    ) -> dict:
        request, predictions = result
        body = response_body(request, predictions, self.name)
        return binary_infer_response(body) if request.binary_output else body

    def get_input_types(self) -> list[dict]:
        return oip.INPUTS

    def get_output_types(self) -> list[dict]:
        return oip.OUTPUTS


async def bad_request_handler(_: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=error_body(exc.status, str(exc)))


async def overloaded_handler(_: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content=error_body(503, str(exc)),
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def internal_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Every other failure: logged with its traceback, answered without its text."""
    if not isinstance(exc, InternalError):  # InternalError's cause is logged where it happened
        log.error("request failed", exc_info=exc)
    return JSONResponse(status_code=500, content=error_body(500, INTERNAL_ERROR))


def json_413(message: str) -> tuple[dict, bytes]:
    body = json.dumps(error_body(413, message)).encode()
    start = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes, with or without Content-Length, gets a JSON 413
    naming the limit. The excess is read and dropped (up to `drain_limit` bytes, `drain_s`
    seconds) before answering: a server that answers and closes while the client still sends
    makes the client's kernel see a reset, and urllib or requests never show the 413. A client
    that sent `Expect: 100-continue` has sent nothing yet, so it is answered at once."""

    def __init__(self, app, limit: int, drain_limit: int, drain_s: float = 10.0) -> None:
        self.app, self.limit, self.drain_limit, self.drain_s = app, limit, drain_limit, drain_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.limit:
            expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
            if not expects_continue and int(length) <= self.drain_limit:
                await self._drain(receive, 0)
            return await self._refuse(send, int(length))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                size = await self._drain(receive, size) if message.get("more_body") else size
                return await self._refuse(send, size, at_least=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)

    async def _drain(self, receive, size: int) -> int:
        deadline = time.monotonic() + self.drain_s
        while size <= self.drain_limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                break
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return size

    async def _refuse(self, send, size: int, at_least: bool = False) -> None:
        more = "at least " if at_least else ""
        message = f"request body of {more}{size:,} bytes is over the {self.limit:,} bytes allowed"
        start, body = json_413(message)
        await send(start)
        await send({"type": "http.response.body", "body": body})


class InferAsJson:
    """ASGI middleware: every v2 infer body reaches kserve as JSON. A binary-extension request
    (Inference-Header-Content-Length) becomes the same request in JSON (oip.json_from_binary,
    as TorchServe's front does), answered with a 400 naming what does not add up; a body sent
    without `Content-Type: application/json` (tritonclient and the KServe SDK send none) is
    read as JSON, where kserve's route would take it for binary data lacking the header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/infer")
        ):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(oip.HEADER_LENGTH.encode())
        if length is None:
            if b"json" in headers.get(b"content-type", b""):
                return await self.app(scope, receive, send)
            plain = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*plain, (b"content-type", b"application/json")]}
            return await self.app(scope, receive, send)
        dropped = (b"content-type", b"content-length", oip.HEADER_LENGTH.encode())
        kept = [(k, v) for k, v in scope["headers"] if k not in dropped]
        body = await read_all(receive)
        try:
            size = oip.header_length(length.decode("latin-1"), len(body))
            converted = json.dumps(oip.json_from_binary(body, size)).encode()
        except oip.ProtocolError as exc:
            return await JSONResponse(status_code=400, content=error_body(400, str(exc)))(
                scope, receive, send
            )
        kept += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(converted)).encode()),
        ]
        await self.app({**scope, "headers": kept}, replay(converted, receive), send)


async def read_all(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """An ASGI receive that gives `body` once, then the client's own messages (disconnect)."""
    sent = False

    async def receive_once():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_once


def unpack_bundle(store_dir: Path, workdir: Path) -> tuple[str, Path, dict[str, str]]:
    """The model name, its unpacked MAR and the packaged TorchServe properties."""
    properties = store_properties(store_dir)
    name = model_names(properties)[0]
    mar = Path(store_dir) / "model-store" / f"{name}.mar"
    if not mar.is_file():
        raise ImageLingoError(f"{mar} not found: is {store_dir} a model store?")
    bundle = Path(workdir) / name
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(bundle)
    return name, bundle, properties


def build_app(store_dir: Path, workdir: Path):
    """A ready FastAPI app serving the model store with kserve's REST routes.

    The app is the one `kserve.ModelServer.start` serves, built the same way (its RESTServer's
    create_application), but not started by it: in kserve 0.21 ModelServer binds 0.0.0.0 whatever
    the host (RESTServer hard-codes it), and it registers kserve's own handlers for Exception and
    InferenceError only once started, replacing ours: their 500s would carry the exception text.
    """
    import json

    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    name, bundle, properties = unpack_bundle(store_dir, workdir)
    snapshot = json.loads(properties["model_snapshot"])["models"][name]["1.0"]
    waiting = int(properties.get("job_queue_size", 100))
    model = CaptionModel(
        name, bundle, snapshot["batchSize"], snapshot["maxBatchDelay"], max_waiting=waiting
    )
    model.load()
    repository = ModelRepository()
    repository.update(model)
    server = RESTServer(
        "kserve.model_server:app",
        DataPlane(model_registry=repository),
        ModelRepositoryExtension(model_registry=repository),
        http_port=0,
    )
    server.create_application()
    from kserve.errors import InferenceError
    from kserve.model_server import app

    app.state.caption_model = model  # for tests and operators
    app.add_exception_handler(BadRequest, bad_request_handler)
    app.add_exception_handler(Overloaded, overloaded_handler)
    app.add_exception_handler(InferenceError, internal_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    # The documented limit (what TorchServe's handler enforces too); the store's
    # max_request_size is the outer cap up to which an over-size body is read and dropped.
    outer = max(int(properties.get("max_request_size", 0)), MAX_REQUEST_BYTES)
    app.add_middleware(InferAsJson)  # inside BodyLimit: it reads bodies already held to the limit
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES, drain_limit=outer)
    return app


def serve(store_dir: Path, workdir: Path, port: int, host: str = "127.0.0.1") -> None:
    """Load the model store, then serve it until interrupted (announced once it is loaded)."""
    import uvicorn

    app = build_app(store_dir, workdir)
    print(f"kserve predictor on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
