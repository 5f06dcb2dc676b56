"""A small KServe REST client (v1 or v2) for `imagelingo caption --url`, the demo and benchmarks."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from imagelingo.errors import ImageLingoError
from imagelingo.serving.protocol import MAX_IMAGES_PER_REQUEST, MAX_REQUEST_BYTES


def request_body(images: list[bytes], protocol: str = "v1", parameters: dict | None = None) -> dict:
    encoded = [base64.b64encode(image).decode("ascii") for image in images]
    if protocol == "v1":
        body: dict = {"instances": [{"data": e} for e in encoded]}
    elif protocol == "v2":
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(encoded)]}]}
        body["inputs"][0]["data"] = encoded
    else:
        raise ImageLingoError(f"unknown protocol {protocol!r}; expected v1 or v2")
    if parameters:
        body["parameters"] = parameters
    return body


def endpoint(url: str, model: str, protocol: str) -> str:
    base = url.rstrip("/")
    return (
        f"{base}/v1/models/{model}:predict"
        if protocol == "v1"
        else f"{base}/v2/models/{model}/infer"
    )


def post_json(url: str, body: dict | bytes, timeout_s: float = 120.0) -> tuple[int, dict]:
    """(status, JSON answer) for any status: 4xx answers are returned, not raised."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"error": text.decode(errors="replace")}
    except OSError as exc:
        raise ImageLingoError(f"cannot reach {url}: {exc}") from exc


def predictions(answer: dict, protocol: str) -> list[dict]:
    if protocol == "v1":
        return answer["predictions"]
    return [json.loads(item) for item in answer["outputs"][0]["data"]]


def request_groups(images: list[bytes]) -> list[list[bytes]]:
    """Consecutive groups of images that each fit the server's per-request limits (image count,
    body size). An image too large on its own still goes alone: the server says why."""
    budget = MAX_REQUEST_BYTES - 64 * 1024  # the JSON around the base64 text
    groups: list[list[bytes]] = []
    size = 0
    for image in images:
        encoded = (len(image) + 2) // 3 * 4 + 16
        if not groups or len(groups[-1]) >= MAX_IMAGES_PER_REQUEST or size + encoded > budget:
            groups.append([])
            size = 0
        groups[-1].append(image)
        size += encoded
    return groups


def caption_remote(
    url: str,
    images: list[bytes],
    protocol: str = "v1",
    model: str = "imagelingo",
    parameters: dict | None = None,
) -> list[dict]:
    """Caption images with a served model, in as many requests as the server's limits need;
    a 4xx/5xx becomes an error naming the server's reason."""
    target = endpoint(url, model, protocol)
    served: list[dict] = []
    for group in request_groups(images):
        status, answer = post_json(target, request_body(group, protocol, parameters))
        if status != 200:
            reason = answer.get("error") or answer.get("message") or answer.get("detail") or answer
            raise ImageLingoError(f"{target} answered {status}: {reason}")
        served += predictions(answer, protocol)
    return served
