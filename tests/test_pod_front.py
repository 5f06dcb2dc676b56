"""TorchServe's front (serving/pod_front.py) in front of a stand-in backend on 127.0.0.1 that
records what reaches it: what the front answers itself, what it converts, and that a slow or
absent party costs a clear answer, never a hang. The front before the real TorchServe, with the
real clients: test_oip_clients.py and test_serving_http.py."""

import base64
import json
import socket
import struct
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imagelingo.serving import oip, pod_front

pytestmark = pytest.mark.slow  # HTTP listeners on 127.0.0.1

CAPTION = {"caption": "a dog runs", "tokens": ["a", "dog", "runs"], "score": -1.0}


class Backend(BaseHTTPRequestHandler):
    """TorchServe's part: answers a v2 infer with one caption per input item."""

    protocol_version = "HTTP/1.1"
    received: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Backend.received.append(body)
        items = body["inputs"][0]["data"]
        answer = json.dumps(
            {
                "id": "1",
                "model_name": "imagelingo",
                "outputs": [
                    {
                        "name": "caption",
                        "datatype": "BYTES",
                        "shape": [len(items)],
                        "data": [json.dumps(CAPTION)] * len(items),
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def backend():
    server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Backend))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def front(backend):
    state = {"ready": True}
    server = pod_front.start_front(
        "127.0.0.1", 0, backend, "imagelingo", lambda: state["ready"], 1_000_000, "0.9.0"
    )
    server.state = state
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_and_metadata_follow_the_model_workers(front):
    assert get(front.url + "/") == (200, {"status": "alive"})
    assert get(front.url + "/v2/health/live") == (200, {"live": True})
    assert get(front.url + "/v2/health/ready") == (200, {"ready": True})
    assert get(front.url + "/v1/models/imagelingo") == (200, {"name": "imagelingo", "ready": True})
    status, metadata = get(front.url + "/v2/models/imagelingo/versions/1")
    assert status == 200 and metadata["inputs"] == oip.INPUTS
    assert get(front.url + "/v2")[1]["extensions"] == ["binary_tensor_data"]
    front.state["ready"] = False  # no READY worker: loading, failed, or unregistered
    assert get(front.url + "/v2/health/ready") == (503, {"ready": False})
    assert get(front.url + "/v2/models/imagelingo/ready")[0] == 503
    assert get(front.url + "/v2/health/live")[0] == 200  # alive all the same


def test_another_model_name_is_a_404_naming_both(front):
    status, body = get(front.url + "/v2/models/other/ready")
    assert status == 404 and "'other'" in body["error"] and "'imagelingo'" in body["error"]


def test_a_binary_request_reaches_torchserve_as_json_and_answers_binary(front):
    image = b"\x89PNG fake image bytes"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(image) + 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + struct.pack("<I", len(image)) + image
    request = urllib.request.Request(
        front.url + "/v2/models/imagelingo/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        length = int(answer.headers["Inference-Header-Content-Length"])
        raw = answer.read()
    sent = Backend.received[-1]["inputs"][0]
    assert sent["data"] == [base64.b64encode(image).decode()] and "parameters" not in sent
    response = json.loads(raw[:length])
    assert response["outputs"][0]["parameters"]["binary_data_size"] == len(raw) - length
    (size,) = struct.unpack_from("<I", raw, length)
    assert json.loads(raw[length + 4 : length + 4 + size]) == CAPTION


def test_a_binary_request_that_does_not_add_up_is_a_400(front):
    request = urllib.request.Request(
        front.url + "/v2/models/imagelingo/infer", b"{}", {"Inference-Header-Content-Length": "9"}
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400
    assert "Inference-Header-Content-Length 9" in json.loads(raised.value.read())["error"]


def test_torchserve_not_answering_is_a_503_not_a_hang(backend):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    server = pod_front.start_front("127.0.0.1", 0, nobody, "imagelingo", lambda: False, 1000)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/imagelingo:predict"
        request = urllib.request.Request(url, b"{}", {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        assert raised.value.code == 503 and raised.value.headers["Retry-After"] == "1"
        assert "not answering" in json.loads(raised.value.read())["error"]
    finally:
        server.shutdown()


def test_a_silent_client_does_not_hold_up_the_others(front):
    with socket.create_connection(front.server_address) as silent:
        silent.sendall(b"POST /v2/models/imagelingo/infer HTTP/1.1\r\nContent-Length: 100\r\n")
        assert get(front.url + "/v2/health/live") == (200, {"live": True})


def test_methods_it_does_not_serve_get_a_json_405(front):
    request = urllib.request.Request(front.url + "/v2", method="OPTIONS")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 405 and raised.value.headers["Allow"] == "GET, HEAD, POST"


def test_a_body_over_the_limit_is_a_413_naming_it(front):
    request = urllib.request.Request(front.url + "/v1/models/imagelingo:predict", b"x" * 3_000_000)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 413
    assert "1,000,000 bytes allowed" in json.loads(raised.value.read())["error"]
