"""The encodings clients send an image in (issue 23), as v1 and v2 request bodies, and malformed
variants with the words their 4xx must hold. Shared by the parser's unit tests, both local
runtimes (test_serving_http.py) and the MAR under Python 3.9 (test_runtime_compat.py)."""

from __future__ import annotations

import base64


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def wrapped(image: bytes, newline: str = "\n") -> str:
    """RFC 2045 base64: 76-character lines, as `base64` (no -w0) and `openssl base64` write it
    ("\\n") and Java's Base64.getMimeEncoder ("\\r\\n")."""
    text = b64(image)
    return newline.join(text[i : i + 76] for i in range(0, len(text), 76)) + newline


def data_url(image: bytes, media_type: str = "image/jpeg") -> str:
    """What a browser's FileReader.readAsDataURL gives."""
    return f"data:{media_type};base64,{b64(image)}"


def v2(*items) -> dict:
    return {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [len(items)], "data": list(items)}
        ]
    }


def client_forms(image: bytes) -> dict[str, tuple[str, dict]]:
    """name -> (protocol, body): one image in each accepted form."""
    return {
        "v1 base64 with line breaks": ("v1", {"instances": [{"data": wrapped(image)}]}),
        "v1 base64 with CRLF line breaks": (
            "v1",
            {"instances": [{"data": wrapped(image, "\r\n")}]},
        ),
        "v1 data URL": ("v1", {"instances": [{"data": data_url(image)}]}),
        "v1 bare data URL": ("v1", {"instances": [data_url(image, "image/png")]}),
        "v1 image_bytes b64 object": ("v1", {"instances": [{"image_bytes": {"b64": b64(image)}}]}),
        "v1 data b64 object": ("v1", {"instances": [{"data": {"b64": wrapped(image)}}]}),
        "v2 base64 with line breaks": ("v2", v2(wrapped(image))),
        "v2 data URL": ("v2", v2(data_url(image))),
        "v2 b64 object": ("v2", v2({"b64": b64(image)})),
    }


def malformed_forms(image: bytes) -> dict[str, tuple[str, dict, str]]:
    """name -> (protocol, body, words the 4xx must hold): variants still refused."""
    text = b64(image)
    return {
        "data URL not an image": (
            "v1",
            {"instances": [{"data": data_url(image, "text/plain")}]},
            "is not an image",
        ),
        "data URL not base64": (
            "v1",
            {"instances": [{"data": "data:image/jpeg," + text}]},
            "is not base64",
        ),
        "data URL without a comma": ("v1", {"instances": ["data:image/jpeg;base64"]}, "needs ','"),
        "b64 object holding a number": (
            "v1",
            {"instances": [{"image_bytes": {"b64": 12}}]},
            '"b64" must be a base64 string',
        ),
        "b64 object with other keys": (
            "v1",
            {"instances": [{"data": {"b64": text, "mime": "image/jpeg"}}]},
            "must be a base64 string or",
        ),
        "two image keys": (
            "v1",
            {"instances": [{"data": text, "image_bytes": {"b64": text}}]},
            "under both",
        ),
        "garbage among line breaks": (
            "v1",
            {"instances": [{"data": wrapped(image).replace("\n", "\n*", 1)}]},
            "invalid base64",
        ),
        "v2 data URL not an image": (
            "v2",
            v2(data_url(image, "application/pdf")),
            "is not an image",
        ),
        "v2 b64 object holding a list": (
            "v2",
            v2({"b64": [text]}),
            '"b64" must be a base64 string',
        ),
    }
