"""Requests the runtime rehearsal sends, from inside the pod's network namespace: one HTTP
request, the good and bad cases, the listening sockets."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import time
from pathlib import Path

from common import MODEL, OVERSIZE_BYTES


def request(
    method: str, port: int, path: str, body: bytes | None = None, timeout: float = 180.0
) -> tuple[int | str, str, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        status, text = response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        status, text = "no answer", f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return status, text, round(time.monotonic() - started, 2)


def listeners() -> list[str]:
    """Listening TCP sockets of the namespace, from /proc/net/tcp{,6} (Java listens on IPv6
    sockets; a v4-mapped address is shown as the IPv4 address)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = b"".join(
                int(hex_address[i : i + 8], 16).to_bytes(4, "little")
                for i in range(0, len(hex_address), 8)
            )
            address = ipaddress.ip_address(raw)
            if address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            host = str(address) if address.version == 4 else f"[{address}]"
            found.add(f"{host}:{int(hex_port, 16)}")
    return sorted(found, key=lambda a: (int(a.rsplit(":", 1)[1]), a))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def cases(images: list[str], model: str = MODEL) -> list[tuple[str, str, str, bytes | None]]:
    """(name, method, path, body). Bodies are KServe v1/v2 JSON unless the case says otherwise."""
    good, other = images
    v1, v2 = f"/v1/models/{model}:predict", f"/v2/models/{model}/infer"

    def j(obj) -> bytes:
        return json.dumps(obj).encode()

    def tensor(data, datatype="BYTES"):
        return {"name": "image", "shape": [len(data)], "datatype": datatype, "data": data}

    not_image = base64.b64encode(b"hello, this is not an image").decode()
    truncated = base64.b64encode(base64.b64decode(good)[:3000]).decode()
    oversize = j({"instances": [{"data": "A" * OVERSIZE_BYTES}]})
    return [
        ("v1 good JPEG", "POST", v1, j({"instances": [{"data": good}]})),
        ("v1 two JPEGs", "POST", v1, j({"instances": [{"data": good}, {"data": other}]})),
        (
            "v1 beam_width 5",
            "POST",
            v1,
            j({"instances": [{"data": good}], "parameters": {"beam_width": 5}}),
        ),
        ("v1 not an image", "POST", v1, j({"instances": [{"data": not_image}]})),
        ("v1 truncated JPEG", "POST", v1, j({"instances": [{"data": truncated}]})),
        ("v1 bad base64", "POST", v1, j({"instances": [{"data": "!!not base64!!"}]})),
        ("v1 wrong envelope {images}", "POST", v1, j({"images": [good]})),
        ("v1 invalid JSON", "POST", v1, b'{"instances": [{"data": '),
        ("v1 empty body", "POST", v1, b""),
        ("v1 empty instances", "POST", v1, j({"instances": []})),
        ("v1 instances not a list", "POST", v1, j({"instances": good})),
        ("v1 instance without data", "POST", v1, j({"instances": [{"image": good}]})),
        (
            "v1 beam_width 10^9",
            "POST",
            v1,
            j({"instances": [{"data": good}], "parameters": {"beam_width": 10**9}}),
        ),
        (
            "v1 max_len -1",
            "POST",
            v1,
            j({"instances": [{"data": good}], "parameters": {"max_len": -1}}),
        ),
        (
            "v1 unknown parameter",
            "POST",
            v1,
            j({"instances": [{"data": good}], "parameters": {"temperature": 2}}),
        ),
        ("v1 body over 10 MiB", "POST", v1, oversize),
        ("v2 good JPEG", "POST", v2, j({"inputs": [tensor([good])]})),
        ("v2 two JPEGs", "POST", v2, j({"inputs": [tensor([good, other])]})),
        ("v2 not an image", "POST", v2, j({"inputs": [tensor([not_image])]})),
        ("v2 bad base64", "POST", v2, j({"inputs": [tensor(["!!not base64!!"])]})),
        ("v2 datatype FP32", "POST", v2, j({"inputs": [tensor([1.0, 2.0], "FP32")]})),
        ("v2 path with a v1 body", "POST", v2, j({"instances": [{"data": good}]})),
        ("v2 wrong envelope {inputs: {}}", "POST", v2, j({"inputs": {"image": good}})),
        ("v2 invalid JSON", "POST", v2, b'{"inputs": ['),
        ("v2 empty inputs", "POST", v2, j({"inputs": []})),
        (
            "v2 beam_width 10^9",
            "POST",
            v2,
            j({"inputs": [tensor([good])], "parameters": {"beam_width": 10**9}}),
        ),
        # what clients send (issue 23): RFC 2045 line breaks, a browser's data: URL, KServe's
        # image samples' {"b64": ...}; and a data: URL that is not an image
        (
            "v1 good JPEG, client form: base64 with line breaks",
            "POST",
            v1,
            j(
                {
                    "instances": [
                        {"data": "\n".join(good[i : i + 76] for i in range(0, len(good), 76))}
                    ]
                }
            ),
        ),
        (
            "v1 good JPEG, client form: data URL",
            "POST",
            v1,
            j({"instances": [{"data": f"data:image/jpeg;base64,{good}"}]}),
        ),
        (
            "v1 good JPEG, client form: image_bytes b64",
            "POST",
            v1,
            j({"instances": [{"image_bytes": {"b64": good}}]}),
        ),
        (
            "v2 good JPEG, client form: b64 object",
            "POST",
            v2,
            j({"inputs": [tensor([{"b64": good}])]}),
        ),
        (
            "v1 client form: data URL of text/plain",
            "POST",
            v1,
            j({"instances": [{"data": f"data:text/plain;base64,{not_image}"}]}),
        ),
        ("GET /v1/models/<m>", "GET", f"/v1/models/{model}", None),
        ("GET /v2/health/ready", "GET", "/v2/health/ready", None),
        ("GET /v2/models/<m>/ready", "GET", f"/v2/models/{model}/ready", None),
        ("GET /ping", "GET", "/ping", None),
    ]
