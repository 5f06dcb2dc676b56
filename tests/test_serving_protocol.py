"""Serving input handling: KServe v1/v2 envelopes, bounded options and untrusted image bytes.
Every bad input becomes a BadRequest with a 4xx status and a message naming the problem."""

import base64
import io
import json
import re

import pytest
from client_forms import client_forms, malformed_forms
from PIL import Image

from imagelingo.serving.images import decode_image
from imagelingo.serving.protocol import (
    BadRequest,
    Options,
    decode_base64,
    parse_options,
    parse_v1,
    parse_v2,
)
from imagelingo.serving.request import parse_body


def encoded(image: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


JPEG = encoded(Image.new("RGB", (32, 24), (200, 10, 10)))


def test_v1_accepts_data_b64_and_bare_strings_with_parameters():
    body = {
        "instances": [{"data": b64(JPEG)}, {"b64": b64(JPEG)}, b64(JPEG)],
        "parameters": {"beam_width": 5},
    }
    images, options = parse_v1(body)
    assert images == [JPEG] * 3
    assert options == Options(beam_width=5, max_len=30)


def test_v2_reads_one_bytes_tensor():
    body = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(JPEG), b64(JPEG)]}
        ]
    }
    images, options, name, _ = parse_v2(body)
    assert images == [JPEG, JPEG] and options == Options() and name == "image"


@pytest.mark.parametrize("form", list(client_forms(JPEG)))
def test_every_client_form_gives_the_image_bytes(form):
    protocol, body = client_forms(JPEG)[form]
    images = parse_v1(body)[0] if protocol == "v1" else parse_v2(body)[0]
    assert images == [JPEG]


@pytest.mark.parametrize("form", list(malformed_forms(JPEG)))
def test_malformed_client_forms_are_400s_naming_the_problem(form):
    protocol, body, words = malformed_forms(JPEG)[form]
    with pytest.raises(BadRequest, match=re.escape(words)) as error:
        parse_body(json.dumps(body).encode())
    assert error.value.status == 400 and "instance 0" in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "DATA:image/jpeg;base64," + b64(JPEG),  # RFC 2397: the scheme is case-insensitive
        "data:image/jpeg;name=photo.jpg;BASE64," + b64(JPEG),  # parameters before ;base64
        " \t" + b64(JPEG) + "\r\n",  # leading and trailing whitespace
    ],
)
def test_data_url_variants_and_surrounding_whitespace_are_accepted(text):
    assert decode_base64(text, 0) == JPEG


def test_only_ascii_whitespace_is_ignored_in_base64():
    with pytest.raises(BadRequest, match="invalid base64"):
        decode_base64(b64(JPEG)[:8] + "\u00a0" + b64(JPEG)[8:], 0)  # no-break space


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": []}, '"instances"'),
        ([], '"instances"'),
        ({"instances": []}, "non-empty"),
        ({"instances": [{"image": "x"}]}, 'instance 0: expected {"data"'),
        ({"instances": [{"data": "not base64!"}]}, "instance 0: invalid base64"),
        ({"instances": [{"data": 12}]}, "expected a base64 string"),
    ],
)
def test_bad_v1_envelopes_are_400s_that_say_why(body, message):
    with pytest.raises(BadRequest, match=message) as error:
        parse_v1(body)
    assert error.value.status == 400


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": []}, '"inputs"'),
        ({"inputs": [{"datatype": "FP32", "data": [1.0]}]}, 'must be "BYTES"'),
        ({"inputs": [{"datatype": "BYTES", "data": []}]}, "non-empty list"),
    ],
)
def test_bad_v2_envelopes_are_400s_that_say_why(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_v2(body)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"beam_width": 0}, "beam_width must be from 1 to 10, got 0"),
        ({"beam_width": 10000}, "beam_width must be from 1 to 10, got 10000"),
        ({"beam_width": "3"}, "beam_width must be an integer"),
        ({"max_len": 500}, "max_len must be from 1 to 50"),
        ({"temperature": 2}, "unknown parameter"),
    ],
)
def test_options_are_bounded(parameters, message):
    with pytest.raises(BadRequest, match=message):
        parse_options(parameters)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty image"),
        (b"this is text, not an image", "not an image"),
        (JPEG[: len(JPEG) // 2], "cannot decode image"),
    ],
)
def test_bad_image_bytes_are_refused_with_the_reason(data, message):
    with pytest.raises(BadRequest, match=message) as error:
        decode_image(data, index=0)
    assert error.value.status == 400


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encoded(Image.new("1", (12_000, 12_000)), "PNG")  # tiny file, 144 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(BadRequest, match="pixels is more than|decompression bomb") as error:
        decode_image(bomb)
    assert error.value.status == 413


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA"])
def test_every_colour_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    image = decode_image(encoded(Image.new("RGB", (8, 8), (0, 128, 255)).convert(mode), fmt))
    assert image.mode == "RGB" and image.size == (8, 8)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(encoded(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    assert decode_image(encoded(wide, exif=exif.tobytes())).size == (20, 40)


def test_gif_first_frame_and_webp_are_decoded():
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(gif.getvalue()).size == (10, 10)
    assert decode_image(encoded(Image.new("RGB", (6, 6)), "WEBP")).size == (6, 6)
