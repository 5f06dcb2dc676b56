"""Real servers on 127.0.0.1 over the packaged model: TorchServe (Java) and the kserve predictor.

Each runtime gets the same checks: v1 and v2, several instances, concurrent requests that are
batched together, every bad input answered with a 4xx (and the next good request still served),
and the served caption equal to the library's caption for the same image and beam settings.
"""

import base64
import http.client
import io
import json
import select
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from client_forms import client_forms, malformed_forms
from PIL import Image

from imagelingo.captioning import caption_image_files
from imagelingo.data.dataset import load_records
from imagelingo.serving.client import (
    caption_remote,
    endpoint,
    post_json,
    predictions,
    request_body,
)
from imagelingo.serving.local import local_server
from imagelingo.serving.protocol import MAX_IMAGES_PER_REQUEST, MAX_REQUEST_BYTES

RUNTIMES = [
    pytest.param(
        "torchserve",
        marks=pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java"),
    ),
    "kserve",
]


@pytest.fixture(scope="module", params=RUNTIMES)
def server(request, model_store, tmp_path_factory):
    with local_server(request.param, model_store, tmp_path_factory.mktemp("serve")) as running:
        running.runtime = request.param
        yield running


@pytest.fixture(scope="module")
def test_images(pipeline_dirs):
    records = load_records(pipeline_dirs["dataset"], "test")[:6]
    return [pipeline_dirs["dataset"] / "images" / r.image for r in records]


def served_log(server) -> str:
    logs = server.workdir / "logs" if server.runtime == "torchserve" else server.workdir
    return "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))


def assert_still_serving(server, image_bytes):
    assert caption_remote(server.url, [image_bytes])[0]["caption"]


def test_v1_caption_equals_the_library_caption(server, trained_model, test_images):
    served = caption_remote(server.url, [test_images[0].read_bytes()], parameters={"beam_width": 3})
    expected = caption_image_files(trained_model, [test_images[0]], beam_width=3, max_len=30)[0]
    assert served[0]["caption"] == expected.text
    assert served[0]["tokens"] == expected.words
    assert isinstance(served[0]["score"], float)


def test_v2_and_v1_give_the_same_captions_for_several_instances(server, test_images):
    images = [p.read_bytes() for p in test_images[:3]]
    v1 = caption_remote(server.url, images, "v1")
    v2 = caption_remote(server.url, images, "v2")
    assert len(v1) == 3 and [p["caption"] for p in v1] == [p["caption"] for p in v2]


def test_concurrent_requests_are_batched_and_answered_correctly(server, test_images):
    """Batched with others, each request gets what it gets alone: caption, tokens, and the score
    within 1e-5 relative (issue 30; tests/test_batch_invariance.py)."""
    images = [p.read_bytes() for p in test_images]
    alone = [caption_remote(server.url, [image])[0] for image in images]
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        together = list(pool.map(lambda image: caption_remote(server.url, [image]), images * 3))
    for got, expected in zip([t[0] for t in together], alone * 3, strict=True):
        assert (got["caption"], got["tokens"]) == (expected["caption"], expected["tokens"])
        assert abs(got["score"] - expected["score"]) <= 1e-5 * abs(expected["score"])
    batch_sizes = [
        int(line.split("batch: ")[1].split(" requests")[0])
        for line in served_log(server).splitlines()
        if "batch: " in line
    ]
    assert max(batch_sizes) > 1, "no two concurrent requests were ever batched together"


@pytest.mark.parametrize("form", list(client_forms(b"")))
def test_each_client_form_gets_the_caption_of_plain_base64(server, test_images, form):
    image = test_images[2].read_bytes()
    protocol, body = client_forms(image)[form]
    status, answer = post_json(endpoint(server.url, "imagelingo", protocol), body)
    assert status == 200, (form, answer)
    assert predictions(answer, protocol) == caption_remote(server.url, [image], protocol)


@pytest.mark.parametrize("form", list(malformed_forms(b"")))
def test_each_malformed_client_form_gets_a_400_naming_the_problem(server, test_images, form):
    protocol, body, words = malformed_forms(test_images[2].read_bytes())[form]
    status, answer = post_json(endpoint(server.url, "imagelingo", protocol), body)
    assert status == 400 and words in answer["error"], (form, status, answer)
    assert_still_serving(server, test_images[1].read_bytes())


def post_expecting_continue(url: str, body: bytes) -> tuple[int, dict]:
    """Send a body the way curl sends a large one: headers with `Expect: 100-continue`, then the
    body only once the server says 100 Continue (or after a second of silence). A server that
    refuses the size before reading answers at once; one that reads the body to refuse it says
    100 first. Either way the client must see the final status, not a reset connection."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", parts.path)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    readable, _, _ = select.select([connection.sock], [], [], 1.0)
    if not readable or connection.sock.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 100"):
        connection.send(body)  # getresponse() skips the interim 100 answer
    response = connection.getresponse()
    text = response.read()
    connection.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"error": text.decode(errors="replace")}


def png_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # ~20 kB, 144 Mpixels decoded
    return buffer.getvalue()


def truncated_jpeg(path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def bad_requests(test_image) -> dict[str, bytes]:
    good = base64.b64encode(test_image.read_bytes()).decode()

    def v1(instances, parameters=None) -> bytes:
        body = {"instances": instances} | ({"parameters": parameters} if parameters else {})
        return json.dumps(body).encode()

    return {
        "not an image": v1([{"data": base64.b64encode(b"hello, not an image").decode()}]),
        "truncated jpeg": v1([{"data": base64.b64encode(truncated_jpeg(test_image)).decode()}]),
        "zero-byte image": v1([{"data": ""}]),
        "zero-byte body": b"",
        "invalid base64": v1([{"data": "@@not base64@@"}]),
        "invalid json": b'{"instances": [',
        "wrong envelope": json.dumps({"images": [good]}).encode(),
        "missing instances": json.dumps({"parameters": {"beam_width": 3}}).encode(),
        "empty instances": v1([]),
        "decompression bomb": v1([{"data": base64.b64encode(png_bomb()).decode()}]),
        "beam width 0": v1([{"data": good}], {"beam_width": 0}),
        "beam width 10000": v1([{"data": good}], {"beam_width": 10_000}),
        "oversize body": v1([{"data": "A" * (11 * 1024 * 1024)}]),
    }


# words the error message must contain (TorchServe or kserve may word their own refusals)
EXPECTED_WORDS = {
    "not an image": ["not an image"],
    "truncated jpeg": ["truncated", "cannot decode", "image file"],
    "zero-byte image": ["empty", "0 bytes"],
    "zero-byte body": ["empty", "zero-length"],
    "invalid base64": ["base64"],
    "invalid json": ["json", "request format"],
    "wrong envelope": ["instances"],
    "missing instances": ["instances"],
    "empty instances": ["instances"],
    "decompression bomb": ["pixels", "bomb"],
    "beam width 0": ["beam_width"],
    "beam width 10000": ["beam_width"],
    "oversize body": ["size", "bytes", "large"],
}


@pytest.mark.parametrize("case", list(EXPECTED_WORDS))
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(
    server, test_images, case
):
    body = bad_requests(test_images[0])[case]
    url = endpoint(server.url, "imagelingo", "v1")
    # An oversize body is refused before it is read, the way curl sends large bodies.
    post = post_expecting_continue if case == "oversize body" else post_json
    status, answer = post(url, body)
    assert 400 <= status < 500, (case, status, answer)
    message = json.dumps(answer).lower()
    if case == "oversize body":
        # TorchServe's Netty refuses it with a bare 413 (empty body): the status names it
        assert status == 413 and (server.runtime == "torchserve" or "bytes" in message)
        return assert_still_serving(server, test_images[1].read_bytes())
    assert any(word in message for word in EXPECTED_WORDS[case]), (case, answer)
    assert_still_serving(server, test_images[1].read_bytes())


def urllib_post(url: str, body: bytes, chunked: bool = False) -> tuple[int, dict, float]:
    """(status, JSON answer, seconds) as urllib sees it: a server that answers before reading the
    body and closes makes this raise ConnectionResetError instead."""
    data = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, json.loads(text), time.monotonic() - started


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def abusive_requests(test_image) -> dict[str, tuple[str, bytes, bool, int, str]]:
    """name -> (protocol, body, chunked, expected status, words the error must hold)."""
    oversize = json.dumps({"instances": [{"data": "A" * (MAX_REQUEST_BYTES + 1024)}]}).encode()
    tiny = base64.b64encode(tiny_png()).decode()
    v2 = request_body([test_image.read_bytes()], "v2")
    v2["inputs"][0]["shape"] = [3]
    return {
        "over-size body": ("v1", oversize, False, 413, f"{MAX_REQUEST_BYTES:,} bytes allowed"),
        "chunked over-size body": ("v1", oversize, True, 413, f"{MAX_REQUEST_BYTES:,} bytes"),
        "3,000 tiny images": (
            "v1",
            json.dumps({"instances": [{"data": tiny}] * 3000}).encode(),
            False,
            413,
            f"at most {MAX_IMAGES_PER_REQUEST} images",
        ),
        "3,000 tiny images, v2": (
            "v2",
            json.dumps(request_body([tiny_png()] * 3000, "v2")).encode(),
            False,
            413,
            f"at most {MAX_IMAGES_PER_REQUEST} images",
        ),
        "200,000 [": ("v1", b"[" * 200_000, False, 400, ""),
        "200,000 [, v2": ("v2", b"[" * 200_000, False, 400, ""),
        "v2 shape disagrees with data": ("v2", json.dumps(v2).encode(), False, 400, "shape"),
    }


ABUSE = [
    "over-size body",
    "chunked over-size body",
    "3,000 tiny images",
    "3,000 tiny images, v2",
    "200,000 [",
    "200,000 [, v2",
    "v2 shape disagrees with data",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ABUSE)
def test_abusive_requests_get_a_4xx_that_urllib_receives_quickly_and_the_server_keeps_serving(
    server, test_images, case
):
    protocol, body, chunked, expected, words = abusive_requests(test_images[0])[case]
    status, answer, seconds = urllib_post(
        endpoint(server.url, "imagelingo", protocol), body, chunked
    )
    assert status == expected, (case, status, answer)
    assert words.lower() in json.dumps(answer).lower(), (case, answer)
    assert seconds < 5, f"{case}: answered after {seconds:.1f} s"  # ~0.5 s measured, loaded
    assert_still_serving(server, test_images[1].read_bytes())


@pytest.mark.slow
def test_deeply_nested_bodies_batched_with_good_requests_fail_only_themselves(server, test_images):
    """TorchServe hands the handler concurrent requests as one batch: a RecursionError used to
    fail them all with 503."""
    url = endpoint(server.url, "imagelingo", "v1")
    good = json.dumps(request_body([test_images[0].read_bytes()])).encode()
    bodies = [b"[" * 200_000, good, good, b"[" * 200_000, good]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        statuses = list(pool.map(lambda body: urllib_post(url, body)[0], bodies))
    assert statuses == [400, 200, 200, 400, 200]


def test_v2_bad_datatype_is_a_4xx(server, test_images):
    body = request_body([test_images[0].read_bytes()], "v2")
    body["inputs"][0]["datatype"] = "FP32"
    status, answer = post_json(endpoint(server.url, "imagelingo", "v2"), body)
    assert 400 <= status < 500, answer
    assert_still_serving(server, test_images[1].read_bytes())


def test_a_form_encoded_body_is_captioned_or_answered_with_a_400_naming_the_content_type(
    server, test_images
):
    """curl -d without -H sends the JSON as application/x-www-form-urlencoded. TorchServe
    splits such a body into form fields; the handler says so instead of a puzzling error."""
    body = json.dumps(request_body([test_images[0].read_bytes()], "v1")).encode()
    request = urllib.request.Request(
        endpoint(server.url, "imagelingo", "v1"),
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.load(response)["predictions"][0]["caption"]
    except urllib.error.HTTPError as error:
        assert error.code == 400 and "Content-Type" in json.load(error)["error"]
    assert_still_serving(server, test_images[1].read_bytes())


@pytest.mark.parametrize("runtime", ["torchserve", "kserve"])
def test_serving_a_folder_that_is_not_a_model_store_is_a_clear_error(tmp_path, capsys, runtime):
    from imagelingo.cli import main

    assert main(["serve", str(tmp_path / "nope"), "--runtime", runtime]) == 2
    assert "not found: is" in capsys.readouterr().err
