"""Request-level limits and failure isolation, without a server: image count and pixel budget
(413), JPEG draft decoding, parser abuse (400, never failing the rest of a batch), the Pillow
format whitelist, no internal text in 5xx answers, and the kserve predictor's queue bound,
cancellation and off-loop decoding. tests/test_serving_http.py checks the same over HTTP."""

import asyncio
import base64
import io
import json
import threading
import time

import pytest
import torch
from PIL import Image

from imagelingo.inference.captioner import Caption
from imagelingo.inference.preprocess import to_pixels
from imagelingo.serving import images
from imagelingo.serving.handler import answer_requests
from imagelingo.serving.images import MAX_REQUEST_PIXELS, decode_image, decode_images
from imagelingo.serving.protocol import (
    INTERNAL_ERROR,
    MAX_IMAGES_PER_REQUEST,
    MAX_REQUEST_BYTES,
    BadRequest,
    parse_v1,
    parse_v2,
)
from imagelingo.serving.request import parse_body


def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


TINY_PNG = encoded(Image.new("RGB", (1, 1), (9, 9, 9)))
GOOD = encoded(Image.new("RGB", (40, 30), (200, 10, 10)), "JPEG")


def v1(*blobs: bytes) -> bytes:
    return json.dumps({"instances": [{"data": b64(b)} for b in blobs]}).encode()


class FakeRuntime:
    """A Captioner that counts images and captions each with its size. `fail` makes it raise."""

    image_size = 224

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.calls = fail, []

    def caption_images(self, images, options=None):
        self.calls.append(len(images))
        if self.fail:
            raise self.fail
        return [Caption([f"{i.size[0]}x{i.size[1]}"], 0.0, torch.zeros(1, 1)) for i in images]


# --- how many images, how many pixels ---------------------------------------------------------


def test_thousands_of_tiny_images_are_a_413_naming_the_limit_without_touching_the_model():
    runtime = FakeRuntime()
    started = time.monotonic()
    (status, answer), (good_status, _) = answer_requests(
        runtime, [v1(*[TINY_PNG] * 3000), v1(GOOD)], "imagelingo"
    )
    assert time.monotonic() - started < 2
    assert status == 413 and f"at most {MAX_IMAGES_PER_REQUEST} images" in answer["error"]
    assert "3,000 images" in answer["error"]
    assert good_status == 200 and runtime.calls == [1]  # only the good request was captioned


def test_the_image_cap_holds_for_v2_and_allows_the_limit_itself():
    data = [b64(TINY_PNG)] * (MAX_IMAGES_PER_REQUEST + 1)
    body = {"inputs": [{"name": "i", "datatype": "BYTES", "shape": [len(data)], "data": data}]}
    with pytest.raises(BadRequest, match="images per request") as error:
        parse_v2(body)
    assert error.value.status == 413
    images, _ = parse_v1({"instances": [b64(TINY_PNG)] * MAX_IMAGES_PER_REQUEST})
    assert len(images) == MAX_IMAGES_PER_REQUEST


def test_images_under_the_per_image_cap_still_share_one_pixel_budget_per_request():
    # each 6,000 x 5,000 (30 Mpixels) is allowed alone; two in one request are over 50 Mpixels
    flat = encoded(Image.new("1", (6000, 5000)))
    assert len(flat) < 100_000 and 30_000_000 < MAX_REQUEST_PIXELS < 60_000_000
    assert decode_images([flat])[0].size == (6000, 5000)
    with pytest.raises(BadRequest, match=f"{MAX_REQUEST_PIXELS:,} decoded pixels") as error:
        decode_images([flat, flat])
    assert error.value.status == 413 and "instance 1" in str(error.value)


def test_the_documented_body_size_is_a_413_before_the_json_is_parsed():
    with pytest.raises(BadRequest, match=f"over the {MAX_REQUEST_BYTES:,} bytes allowed") as error:
        parse_body(b"[" * (MAX_REQUEST_BYTES + 1))
    assert error.value.status == 413


def test_line_breaks_count_toward_the_body_limit_and_the_image_cap_holds_for_every_form():
    # the forms of issue 23 are decoded from the same bounded body: no new size to budget
    wrapped = "\r\n".join(["A" * 76] * (MAX_REQUEST_BYTES // 78 + 1))
    with pytest.raises(BadRequest, match="bytes allowed") as error:
        parse_body(json.dumps({"instances": [{"data": wrapped}]}).encode())
    assert error.value.status == 413
    many = [{"image_bytes": {"b64": b64(TINY_PNG)}}] * (MAX_IMAGES_PER_REQUEST + 1)
    with pytest.raises(BadRequest, match=f"at most {MAX_IMAGES_PER_REQUEST} images") as error:
        parse_v1({"instances": many})
    assert error.value.status == 413


def test_a_data_url_header_is_read_only_up_to_its_bound():
    long_header = "data:image/jpeg;" + "x=y;" * 100 + "base64," + b64(TINY_PNG)
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="needs ',' within its first 256 characters"):
        parse_v1({"instances": [long_header]})
    no_comma = "data:image/jpeg;base64" + "A" * (MAX_REQUEST_BYTES - 100)
    with pytest.raises(BadRequest, match="needs ','"):
        parse_v1({"instances": [no_comma]})
    assert time.perf_counter() - started < 0.5


def test_a_batch_of_full_requests_is_encoded_in_passes_of_bounded_size():
    # 256 images in one encoder pass (8 requests of 32) peaked at 3.4 GB resident
    runtime = FakeRuntime()
    bodies = [v1(*[TINY_PNG] * MAX_IMAGES_PER_REQUEST)] * 3 + [v1(GOOD)]
    answers = answer_requests(runtime, bodies, "imagelingo")
    assert [status for status, _ in answers] == [200] * 4
    assert [len(answer["predictions"]) for _, answer in answers] == [32, 32, 32, 1]
    assert runtime.calls == [32, 32, 32, 1]


def test_images_resized_when_decoded_give_the_encoder_exactly_the_same_pixels():
    data = encoded(photo(500, 375), "JPEG", quality=90)
    [early] = decode_images([data], target_size=224)
    assert early.size == (224, 224)
    half = (0.5, 0.5, 0.5)
    assert torch.equal(
        to_pixels(early, 224, half, half), to_pixels(decode_image(data), 224, half, half)
    )


# --- parser abuse --------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_and_the_other_requests_of_the_batch_are_answered():
    runtime = FakeRuntime()
    answers = answer_requests(runtime, [b"[" * 200_000, v1(GOOD), b"{" * 200_000], "imagelingo")
    assert [status for status, _ in answers] == [400, 200, 400]
    assert "nested too deeply" in answers[0][1]["error"]
    assert answers[1][1]["predictions"][0]["caption"] == "224x224"  # resized when decoded


def test_an_unexpected_parser_failure_fails_only_its_own_request(monkeypatch):
    from imagelingo.serving import handler

    real = handler.parse_body

    def parse(body, image_size=0):
        if body == b"boom":
            raise KeyError("internal detail /secret/path")
        return real(body, image_size)

    monkeypatch.setattr(handler, "parse_body", parse)
    answers = answer_requests(FakeRuntime(), [b"boom", v1(GOOD)], "imagelingo")
    assert [status for status, _ in answers] == [500, 200]
    assert "secret" not in json.dumps(answers[0][1]) and answers[0][1]["error"] == INTERNAL_ERROR


@pytest.mark.parametrize("shape", [[3], [1], [2, 2], "2", [], None, [True, 2]])
def test_a_v2_shape_that_disagrees_with_its_data_is_a_400(shape):
    tensor = {"name": "image", "datatype": "BYTES", "data": [b64(GOOD)] * 2}
    if shape is not None:
        tensor["shape"] = shape
    with pytest.raises(BadRequest, match='"shape"') as error:
        parse_v2({"inputs": [tensor]})
    assert error.value.status == 400


def test_a_v2_shape_that_matches_is_accepted():
    tensor = {"name": "image", "datatype": "BYTES", "data": [b64(GOOD)] * 2, "shape": [2, 1]}
    assert len(parse_v2({"inputs": [tensor]})[0]) == 2


# --- which decoders run, and at which scale ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM", "TGA", "PCX"])
def test_formats_outside_the_whitelist_are_refused_before_any_decoder_runs(fmt):
    data = encoded(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow alone would decode it
    with pytest.raises(BadRequest, match="not an image") as error:
        decode_image(data)
    assert error.value.status == 400


def test_a_phone_jpeg_with_a_second_picture_mpo_is_accepted():
    image = Image.new("RGB", (64, 48), (10, 200, 10))
    buffer = io.BytesIO()
    image.save(buffer, format="MPO", save_all=True, append_images=[image])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert decode_image(buffer.getvalue()).size == (64, 48)


def photo(width: int, height: int) -> Image.Image:
    """A photo-like image: smooth gradients plus texture, so that scaling has work to do."""
    torch.manual_seed(0)
    base = torch.rand(3, height // 16, width // 16)
    texture = torch.rand(3, height // 4, width // 4) * 0.3
    pixels = torch.nn.functional.interpolate(base[None], (height, width), mode="bicubic")[0]
    pixels += torch.nn.functional.interpolate(texture[None], (height, width), mode="nearest")[0]
    array = (pixels.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def test_large_jpegs_are_draft_decoded_and_the_encoder_input_stays_close():
    data = encoded(photo(2400, 1800), "JPEG", quality=92)
    full, draft = decode_image(data), decode_image(data, target_size=224)
    assert full.size == (2400, 1800)
    # scaled by libjpeg to no less than 2x the encoder input: 1/4 of each side here
    assert draft.size == (600, 450)
    half = (0.5, 0.5, 0.5)
    a, b = to_pixels(full, 224, half, half), to_pixels(draft, 224, half, half)
    # normalised pixels span [-1, 1]; one grey level is 2/255 = 0.0078
    assert (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.1


def test_images_under_4x_the_encoder_input_decode_exactly_as_in_training():
    for size in [(500, 375), (640, 480), (895, 1200)]:  # Flickr8k originals are at most 500 px
        data = encoded(photo(*size), "JPEG", quality=90)
        assert decode_image(data, target_size=224).size == size
        assert decode_image(data, target_size=224).tobytes() == decode_image(data).tobytes()


def test_draft_decoding_does_not_apply_to_pngs():
    data = encoded(photo(1024, 1024))
    assert decode_image(data, target_size=224).size == (1024, 1024)


# --- what a 5xx says -------------------------------------------------------------------------


def test_a_model_failure_answers_500_without_the_exception_text(caplog):
    runtime = FakeRuntime(fail=RuntimeError("CUDA error at /opt/secret/model.py:12"))
    [(status, answer)] = answer_requests(runtime, [v1(GOOD)], "imagelingo")
    assert status == 500 and answer == {"error": INTERNAL_ERROR, "code": 500}
    assert "/opt/secret/model.py" in caplog.text  # the log keeps it


# --- the kserve predictor --------------------------------------------------------------------


class BlockingRuntime(FakeRuntime):
    """caption() waits until `release` is set, and says when it started."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def caption_images(self, images, options=None):
        self.started.set()
        assert self.release.wait(10), "never released"
        return super().caption_images(images, options)


def test_a_request_cancelled_while_its_batch_runs_does_not_break_later_requests():
    from imagelingo.serving.kserve_predictor import MicroBatcher

    async def scenario():
        runtime = BlockingRuntime()
        batcher = MicroBatcher(runtime, max_images=8, max_delay_s=0.001)
        image = Image.new("RGB", (5, 5))
        first = asyncio.create_task(batcher.caption([image], None))
        while not runtime.started.is_set():
            await asyncio.sleep(0.01)
        first.cancel()  # the client went away while the model was busy with its image
        runtime.release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        # a cancelled future must not kill the batch worker: the next request is answered
        return await asyncio.wait_for(batcher.caption([image], None), 5)

    assert asyncio.run(scenario())[0]["caption"] == "5x5"


def test_a_request_cancelled_while_waiting_costs_no_model_work():
    from imagelingo.serving.kserve_predictor import MicroBatcher

    async def scenario():
        runtime = BlockingRuntime()
        batcher = MicroBatcher(runtime, max_images=1, max_delay_s=0.001)
        image = Image.new("RGB", (5, 5))
        busy = asyncio.create_task(batcher.caption([image], None))
        while not runtime.started.is_set():
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(batcher.caption([image] * 3, None))
        await asyncio.sleep(0.05)
        waiting.cancel()
        runtime.release.set()
        await busy
        answer = await asyncio.wait_for(batcher.caption([image] * 2, None), 5)
        return runtime.calls, answer

    calls, answer = asyncio.run(scenario())
    assert calls == [1, 2] and len(answer) == 2


def caption_model(max_waiting: int, runtime):
    from imagelingo.serving.kserve_predictor import CaptionModel, MicroBatcher

    model = CaptionModel("imagelingo", bundle_dir=".", max_waiting=max_waiting)
    model.batcher = MicroBatcher(runtime, max_images=8, max_delay_s=0.001)
    model.ready = True
    return model


async def kserve_answer(model, body):
    """What kserve does with a request body: preprocess, predict, postprocess."""
    response, _headers = await model(body)
    return response


def test_the_predictor_queue_is_bounded_and_answers_503_with_retry_after():
    from imagelingo.serving.kserve_predictor import Overloaded, overloaded_handler

    async def scenario():
        runtime = BlockingRuntime()
        model = caption_model(2, runtime)
        body = {"instances": [{"data": b64(GOOD)}]}
        waiting = [asyncio.create_task(kserve_answer(model, body)) for _ in range(2)]
        while not runtime.started.is_set():
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await asyncio.wait_for(kserve_answer(model, body), 2)
        runtime.release.set()
        answers = await asyncio.gather(*waiting)
        after = await asyncio.wait_for(kserve_answer(model, body), 5)  # room again
        return refused.value, answers, after

    refused, answers, after = asyncio.run(scenario())
    assert [a["predictions"][0]["caption"] for a in answers] == ["224x224"] * 2
    assert after["predictions"][0]["caption"] == "224x224"
    response = asyncio.run(overloaded_handler(None, refused))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "retry" in json.loads(response.body)["error"]


def test_the_predictor_decodes_images_off_the_event_loop(monkeypatch):
    model = caption_model(10, FakeRuntime())
    real = model.parse

    def slow_parse(body):
        time.sleep(0.5)  # a large image's decode, as far as the event loop is concerned
        return real(body)

    monkeypatch.setattr(model, "parse", slow_parse)

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        clock = asyncio.create_task(ticker())
        answer = await kserve_answer(model, {"instances": [{"data": b64(GOOD)}]})
        clock.cancel()
        return ticks, answer

    ticks, answer = asyncio.run(scenario())
    assert answer["predictions"][0]["caption"] == "224x224"  # resized for the encoder early
    assert ticks >= 5, f"the event loop ran only {ticks} times during a 0.5 s decode"


def test_a_predictor_failure_answers_500_without_the_exception_text():
    from imagelingo.serving.kserve_predictor import internal_error_handler

    async def scenario():
        model = caption_model(10, FakeRuntime(fail=RuntimeError("/opt/secret/weights.pt")))
        try:
            await kserve_answer(model, {"instances": [{"data": b64(GOOD)}]})
        except Exception as exc:  # what kserve hands to the app's exception handler
            return await internal_error_handler(None, exc)
        raise AssertionError("the failure was swallowed")

    response = asyncio.run(scenario())
    assert response.status_code == 500
    assert json.loads(response.body) == {"error": INTERNAL_ERROR, "code": 500}


def test_draft_threshold_follows_the_encoder_input():
    assert images.draft_size(895, 2000, 224) is None
    assert images.draft_size(896, 2000, 224) == (448, 448)
    assert images.draft_size(4000, 3000, 0) is None


# --- the kserve predictor's app, in this process (no server) ------------------------------------


@pytest.fixture(scope="module")
def kserve_app(model_store, tmp_path_factory):
    """The predictor's FastAPI app over the test model store. kserve's app is a module-level
    object, so it is built once per test process."""
    from fastapi.testclient import TestClient

    from imagelingo.serving.kserve_predictor import build_app

    app = build_app(model_store, tmp_path_factory.mktemp("kserve-app"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app.state.caption_model, client


def test_the_predictor_app_answers_500_without_the_exception_text(kserve_app, monkeypatch):
    model, client = kserve_app
    secret = RuntimeError("CUDA error in /opt/secret/weights.pt")
    monkeypatch.setattr(
        model.batcher.captioner, "caption_images", FakeRuntime(fail=secret).caption_images
    )
    answer = client.post("/v1/models/imagelingo:predict", json={"instances": [b64(GOOD)]})
    assert answer.status_code == 500 and answer.json() == {"error": INTERNAL_ERROR, "code": 500}


def test_the_predictor_app_answers_503_with_retry_after_when_its_queue_is_full(
    kserve_app, monkeypatch
):
    model, client = kserve_app
    monkeypatch.setattr(model, "max_waiting", 0)
    answer = client.post("/v1/models/imagelingo:predict", json={"instances": [b64(GOOD)]})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "retry later" in answer.json()["error"]
    monkeypatch.setattr(model, "max_waiting", 100)
    answer = client.post("/v1/models/imagelingo:predict", json={"instances": [b64(GOOD)]})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["caption"]


def test_the_client_splits_many_images_into_requests_the_server_accepts(monkeypatch):
    from imagelingo.serving import client

    sent = []

    def post_json(url, body):
        sent.append(body)
        count = len(body["instances"])
        assert count <= MAX_IMAGES_PER_REQUEST and len(json.dumps(body)) <= MAX_REQUEST_BYTES
        return 200, {"predictions": [{"caption": str(len(sent))}] * count}

    monkeypatch.setattr(client, "post_json", post_json)
    images = [TINY_PNG] * 70 + [b"x" * (3 * 1024 * 1024)] * 5
    served = client.caption_remote("http://server", images)
    assert len(served) == 75
    assert [len(body["instances"]) for body in sent] == [32, 32, 8, 2, 1]


# --- the kserve predictor's body limit, on a real socket -----------------------------------------


@pytest.fixture(scope="module")
def limited_echo_server():
    """uvicorn on 127.0.0.1 serving an app that echoes the body's size, behind BodyLimit
    (limit 1,000 bytes, excess read and dropped up to 40 MB)."""
    import uvicorn

    from imagelingo.serving.kserve_predictor import BodyLimit
    from imagelingo.serving.torchserve import free_port

    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps({"bytes": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    app = BodyLimit(echo, limit=1000, drain_limit=40_000_000)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def urllib_post(url: str, body: bytes, chunked: bool = False) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    data = iter([body[i : i + 16384] for i in range(0, len(body), 16384)]) if chunked else body
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data), timeout=20) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_over_size_body_gets_a_413_the_client_receives_and_the_next_body_is_served(
    limited_echo_server, chunked
):
    started = time.monotonic()
    status, answer = urllib_post(limited_echo_server, b"x" * 20_000_000, chunked)
    assert status == 413 and "over the 1,000 bytes allowed" in answer["error"]
    assert time.monotonic() - started < 2
    assert urllib_post(limited_echo_server, b"y" * 1000, chunked) == (200, {"bytes": 1000})


@pytest.mark.slow
def test_an_over_size_body_announced_with_expect_100_continue_is_refused_unsent(
    limited_echo_server,
):
    import http.client

    connection = http.client.HTTPConnection(
        "127.0.0.1", int(limited_echo_server.split(":")[2][:-1])
    )
    connection.putrequest("POST", "/")
    connection.putheader("Content-Length", "2000000")
    connection.putheader("Expect", "100-continue")
    connection.endheaders()  # and no body: the answer must come anyway
    connection.sock.settimeout(5)
    response = connection.getresponse()
    assert response.status == 413 and b"2,000,000 bytes" in response.read()
    connection.close()
