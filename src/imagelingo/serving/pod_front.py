"""TorchServe's front in the runtime pod: the Open Inference Protocol routes TorchServe lacks.

TorchServe 0.9.0 (and 0.12.0) answers `/v1/models/<m>:predict` and `/v2/models/<m>/infer` but
none of the protocol's health and metadata routes (its InferenceRequestHandler knows ping,
predictions, explanations, the KServe predict/infer paths and nothing else: torchserve-kfs/v0.9.0
frontend/server/.../http/api/rest/InferenceRequestHandler.java:55-106, under
../shared/cluster-reference/), and reads no binary tensor data. A client that checks readiness
before it infers, as tritonclient's and the KServe SDK's docs show, never got to infer.

So PID 1 (pod_entrypoint.py `serve`) listens on the serving port itself and moves TorchServe's
inference API to a loopback port. It answers here:
    GET /                                  {"status": "alive"}             (KServe v1 liveness)
    GET /v2/health/live, /v2/health/ready  {"live"|"ready": bool}
    GET /v2                                server metadata
    GET /v2/models/<m>[/versions/<v>]      model metadata (oip.model_metadata)
    GET /v2/models/<m>[/versions/<v>]/ready, /v1/models/<m>   {"name", "ready"}
and passes every other request to TorchServe: inference bodies unchanged, except binary-extension
requests, turned into the same JSON with the images as base64 (the handler reads JSON only), and
answers turned into binary data when the client asked for it. Readiness is the management API's
word (a READY worker), as the pod's readiness probe. Standard library only, Python 3.9.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from imagelingo.serving import oip
except ImportError:  # in the model store: copied beside this file by `imagelingo package`
    import oip

# Connections served at once; one more is answered 503 at once. A thread each: a slow client
# holds one thread, never the others.
MAX_CONNECTIONS = 256
SOCKET_TIMEOUT_S = 60
MAX_IDLE_BACKEND = 32
DRAIN_FACTOR = 4
BACKEND_TIMEOUT_S = 300
MODEL_PATH = ("v2", "models")
ALLOW = {"Allow": "GET, HEAD, POST"}
# not passed from TorchServe's answer to the client's: this connection's own, or set here
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-type",
    "date",
    "server",
}


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "code": status}).encode()


class Front(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections (8
    # clients each opening one per request): they came back after the kernel's 1+2+4 s retries
    request_queue_size = 1024

    def __init__(self, address, backend, model_name, ready, max_body, version="unknown"):
        super().__init__(address, FrontHandler)
        self.backend = urllib.parse.urlsplit(backend)
        self.model_name, self.ready, self.max_body = model_name, ready, max_body
        self.version = version
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.idle = queue.SimpleQueue()  # kept-alive connections to TorchServe, shared

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            body = error_body(503, f"more than {MAX_CONNECTIONS} connections; retry later")
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
            )
            try:
                request.sendall(head.encode() + body)
            finally:
                self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def backend_connection(self) -> http.client.HTTPConnection:
        """An idle kept-alive connection to TorchServe, or a new one. Clients that open a
        connection per request (urllib, curl) would otherwise cost TorchServe a new channel
        each: ~1 ms of its CPU per request, measured."""
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            return http.client.HTTPConnection(
                self.backend.hostname, self.backend.port, timeout=BACKEND_TIMEOUT_S
            )

    def release(self, connection: http.client.HTTPConnection) -> None:
        if self.idle.qsize() < MAX_IDLE_BACKEND:
            self.idle.put(connection)
        else:
            connection.close()


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server: Front

    def setup(self) -> None:
        super().setup()
        # no Nagle: with it, a small write after the headers waited for the client's delayed
        # ACK (40 ms on Linux) on every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # TorchServe logs every inference; health checks would flood the pod log

    def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        """Status line, headers and body in one write."""
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def answer_json(self, status: int, value: dict) -> None:
        self.answer(status, json.dumps(value).encode())

    def model_or_404(self, name: str) -> bool:
        if name == self.server.model_name:
            return True
        message = (
            f"model {name!r} is not served here; this server serves {self.server.model_name!r}"
        )
        self.answer(404, error_body(404, message))
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self.answer_json(200, {"status": "alive"})
        if parts == ["v2", "health", "live"]:
            return self.answer_json(200, {"live": True})
        if parts == ["v2", "health", "ready"]:
            ready = self.server.ready()
            return self.answer_json(200 if ready else 503, {"ready": ready})
        if parts == ["v2"]:
            return self.answer_json(200, oip.server_metadata("torchserve", self.server.version))
        if parts[:2] == ["v1", "models"] and len(parts) == 3 and ":" not in parts[2]:
            return self.model_ready(parts[2])
        if tuple(parts[:2]) == MODEL_PATH and len(parts) >= 3:
            tail = parts[3:]
            if tail[:1] == ["versions"] and len(tail) >= 2:
                tail = tail[2:]  # one version is served: any version names it
            if not tail and self.model_or_404(parts[2]):
                return self.answer_json(200, oip.model_metadata(parts[2], "pytorch_torchserve"))
            if tail == ["ready"]:
                return self.model_ready(parts[2])
        self.forward(b"")

    do_HEAD = do_GET

    def model_ready(self, name: str) -> None:
        if self.model_or_404(name):
            ready = self.server.ready()
            self.answer_json(200 if ready else 503, {"name": name, "ready": ready})

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_body()
        if body is None:
            return
        binary_output = False
        parts = [p for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
        if tuple(parts[:2]) == MODEL_PATH and parts[-1:] == ["infer"]:
            try:
                body, binary_output = self.as_json(body)
            except oip.ProtocolError as exc:
                return self.answer(400, error_body(400, str(exc)))
        self.forward(body, binary_output)

    do_PUT = do_DELETE = do_POST

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.answer(405, error_body(405, f"{self.command} is not supported here"), ALLOW)

    do_PATCH = do_OPTIONS

    def handle_expect_100(self) -> bool:
        """A body announced over the limit is refused before the client sends it."""
        length = self.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > self.server.max_body:
            self.refuse_size(int(length), self.server.max_body)
            return False
        return super().handle_expect_100()

    def as_json(self, body: bytes) -> tuple[bytes, bool]:
        """The body TorchServe's handler reads (JSON) and whether the answer goes back binary."""
        length = oip.header_length(self.headers.get(oip.HEADER_LENGTH), len(body))
        if length is None:
            if b"binary_data" not in body:  # the common case: no JSON parse here
                return body, False
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return body, False  # not JSON: the handler's 400 says so
            if not isinstance(request, dict):
                return body, False  # not a v2 request: the handler's 400 says so
            return body, oip.binary_output_requested(request)
        request = oip.json_from_binary(body, length)
        return json.dumps(request).encode(), oip.binary_output_requested(request)

    def read_body(self) -> bytes | None:
        """The request's body (Content-Length or chunked), or None once answered 4xx."""
        limit = self.server.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked(limit)
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            self.answer(400, error_body(400, f"Content-Length {length!r} is not a number"))
            return None
        if int(length) > limit:
            # read and drop what is sent (up to DRAIN_FACTOR x the limit): answering and closing
            # while the client still sends shows it a reset, not the 413
            expects = self.headers.get("Expect", "").lower() == "100-continue"
            if int(length) <= DRAIN_FACTOR * limit and not expects:
                self.drop(int(length))
            self.refuse_size(int(length), limit)
            return None
        return self.rfile.read(int(length))

    def drop(self, size: int) -> None:
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                return
            size -= len(chunk)

    def read_chunked(self, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                chunk_size = int(line, 16)
            except ValueError:
                self.answer(400, error_body(400, f"bad chunk size {line[:20]!r}"))
                return None
            if chunk_size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            size += chunk_size
            if size > limit:
                self.refuse_size(size, limit, at_least=True)
                return None
            chunks.append(self.rfile.read(chunk_size))
            self.rfile.readline(16)

    def refuse_size(self, size: int, limit: int, at_least: bool = False) -> None:
        more = "at least " if at_least else ""
        message = f"request body of {more}{size:,} bytes is over the {limit:,} bytes allowed"
        self.close_connection = True
        self.answer(413, error_body(413, message), {"Connection": "close"})

    def forward(self, body: bytes, binary_output: bool = False) -> None:
        """The request to TorchServe and its answer back, the answer binary if asked for."""
        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
        for attempt in (1, 2):  # a kept-alive connection TorchServe closed: reconnect once
            connection = self.server.backend_connection()
            try:
                connection.request(self.command, self.path, body or None, headers)
                response = connection.getresponse()
                answer = response.read()
                if response.will_close:
                    connection.close()
                else:
                    self.server.release(connection)
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                connection.close()
                if attempt == 2:
                    message = f"the model server is not answering ({type(exc).__name__})"
                    return self.answer(503, error_body(503, message), {"Retry-After": "1"})
        extra = {}
        if binary_output and response.status == 200:
            answer, header_length = oip.binary_response(json.loads(answer))
            extra = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length),
            }
        else:
            extra = {"Content-Type": response.getheader("Content-Type", "application/json")}
        passed = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
        self.answer(response.status, answer, {**passed, **extra})


def start_front(host, port, backend, model_name, ready, max_body, version="unknown") -> Front:
    """The front listening on host:port, served from a daemon thread."""
    front = Front((host, port), backend, model_name, ready, max_body, version)
    threading.Thread(target=front.serve_forever, name="front", daemon=True).start()
    return front
