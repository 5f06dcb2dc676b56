"""The native KServe predictor: the same model store and answers as TorchServe, on the kserve SDK.

`kserve.Model` gets KServe's v1 and v2 routes, readiness (`GET /v1/models/<m>`,
`/v2/health/ready`) and Prometheus `/metrics` from the SDK. The model loads the serving bundle from
the MAR in the model store (the same file TorchServe serves), so both runtimes caption with the
same TorchScript encoder. Concurrent requests are micro-batched like TorchServe's batchSize and
maxBatchDelay: one encoder pass and one beam search per batch, run off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import zipfile
from pathlib import Path
from typing import Any

import kserve
from fastapi import Request
from fastapi.responses import JSONResponse

from imagelingo.errors import ImageLingoError
from imagelingo.serving.handler import error_body, parse_body
from imagelingo.serving.protocol import BadRequest, Options, v2_response
from imagelingo.serving.runtime import CaptionRuntime
from imagelingo.serving.torchserve import model_names, store_properties

log = logging.getLogger(__name__)


class MicroBatcher:
    """Collects concurrent requests' images for up to `max_delay_s`, or until `max_images`."""

    def __init__(self, runtime: CaptionRuntime, max_images: int, max_delay_s: float) -> None:
        self.runtime, self.max_images, self.max_delay_s = runtime, max_images, max_delay_s
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    async def caption(self, images: list, options: Options) -> list[dict]:
        if self.worker is None:
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
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            images = [image for item in batch for image in item[0]]
            options = [item[1] for item in batch for _ in item[0]]
            log.info("batch: %d requests, %d images", len(batch), len(images))
            try:
                captions = await loop.run_in_executor(None, self.runtime.caption, images, options)
            except Exception as exc:  # the requests fail with 500; the server keeps serving
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for item_images, _, future in batch:
                future.set_result(captions[start : start + len(item_images)])
                start += len(item_images)


def v2_request_to_dict(request: kserve.InferRequest) -> dict:
    """kserve's parsed v2 request back to the JSON shape protocol.parse_v2 checks."""
    inputs = []
    for tensor in request.inputs:
        data = tensor.data
        # REST v2 BYTES arrive as str; the base64 text may also come back as bytes.
        data = [d.decode() if isinstance(d, (bytes, bytearray)) else d for d in data]
        inputs.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape, "data": data}
        )
    return {
        "id": request.id or "",
        "inputs": inputs,
        "parameters": dict(request.parameters or {}) or None,
    }


class CaptionModel(kserve.Model):
    def __init__(
        self, name: str, bundle_dir: Path, max_batch_size: int = 8, max_batch_delay_ms: int = 20
    ) -> None:
        super().__init__(name)
        self.bundle_dir = Path(bundle_dir)
        self.max_batch_size, self.max_batch_delay_ms = max_batch_size, max_batch_delay_ms
        self.batcher: MicroBatcher | None = None

    def load(self) -> bool:
        runtime = CaptionRuntime.load(self.bundle_dir)
        self.batcher = MicroBatcher(runtime, self.max_batch_size, self.max_batch_delay_ms / 1000)
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: dict | None = None) -> dict:
        if isinstance(payload, (dict, bytes, bytearray)):
            body = payload  # bytes: a body not sent as application/json; parse_body decodes it
        else:
            body = v2_request_to_dict(payload)
        request = parse_body(body)  # BadRequest -> 4xx through bad_request_handler
        captions = await self.batcher.caption(request.images, request.options)
        if request.protocol == "v2":
            return v2_response(self.name, captions, request.request_id)
        return {"predictions": captions}


async def bad_request_handler(_: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=error_body(exc.status, str(exc)))


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
    """A ready FastAPI app serving the model store with kserve's REST routes."""
    import json

    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    name, bundle, properties = unpack_bundle(store_dir, workdir)
    snapshot = json.loads(properties["model_snapshot"])["models"][name]["1.0"]
    model = CaptionModel(name, bundle, snapshot["batchSize"], snapshot["maxBatchDelay"])
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
    from kserve.model_server import app

    app.add_exception_handler(BadRequest, bad_request_handler)
    limit = int(properties.get("max_request_size", 6_553_500))

    @app.middleware("http")
    async def refuse_oversize_bodies(request: Request, call_next):
        # the same limit TorchServe enforces (max_request_size), before the body is read
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            message = f"request body of {int(length):,} bytes is over the {limit:,} allowed"
            return JSONResponse(status_code=413, content=error_body(413, message))
        return await call_next(request)

    return app


def serve(store_dir: Path, workdir: Path, port: int, host: str = "127.0.0.1") -> None:
    """Load the model store, then serve it until interrupted (announced once it is loaded)."""
    import uvicorn

    app = build_app(store_dir, workdir)
    print(f"kserve predictor on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
