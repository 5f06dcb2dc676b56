"""The Open Inference Protocol (KServe v2) around the inference JSON: model metadata and the binary
tensor data extension, as tritonclient and the KServe SDK send and read them.

Standard library only, Python 3.9: TorchServe's front in the runtime pod (serving/pod_front.py,
copied beside this file into the model store) imports it, as does the library.

The binary extension (kserve/open-inference-protocol, `binary_tensor_data` in the KServe v2
REST docs): the body is a JSON header of `Inference-Header-Content-Length` bytes, then each
input's data, in input order, of `parameters.binary_data_size` bytes. A BYTES tensor's data is its
elements one after the other, each a 4-byte little-endian length and then the bytes. A response
answers in binary when the request asks (`outputs[].parameters.binary_data`, else the request
parameter `binary_data_output`), with the same layout and the header's length in the response
header.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

INPUT_NAME = "image"
OUTPUT_NAME = "caption"
# What a client must send and gets back; the options are the request parameters protocol.py
# parses (beam_width, max_len): the metadata's tensor schema has no place for them.
INPUTS = [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]
OUTPUTS = [{"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]}]
HEADER_LENGTH = "inference-header-content-length"
# request parameters the protocol defines (not options of ours): accepted and acted on here
PROTOCOL_PARAMETERS = ("binary_data_output",)
EXTENSIONS = ["binary_tensor_data"]


class ProtocolError(ValueError):
    """A request the protocol cannot read: answered with a 400 naming what was wrong."""


def model_metadata(name: str, platform: str) -> dict:
    return {
        "name": name,
        "versions": ["1"],
        "platform": platform,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def server_metadata(name: str, version: str) -> dict:
    return {"name": name, "version": version, "extensions": EXTENSIONS}


def header_length(value: str | None, body_size: int) -> int | None:
    """The `Inference-Header-Content-Length` header's value, checked against the body."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ProtocolError(f"Inference-Header-Content-Length must be a number, got {value!r}")
    length = int(value)
    if length > body_size:
        raise ProtocolError(
            f"Inference-Header-Content-Length {length:,} is longer than the body "
            f"({body_size:,} bytes)"
        )
    return length


def bytes_elements(buffer: bytes, name: str) -> list[bytes]:
    """A BYTES tensor's binary data: 4-byte little-endian length, then the element, repeated."""
    elements, offset = [], 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise ProtocolError(f"input {name!r}: binary BYTES data ends inside an element length")
        (size,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + size > len(buffer):
            raise ProtocolError(
                f"input {name!r}: a binary BYTES element of {size:,} bytes runs past the "
                f"input's binary_data_size"
            )
        elements.append(bytes(buffer[offset : offset + size]))
        offset += size
    return elements


def read_binary_request(body: bytes, length: int) -> dict:
    """A binary-extension request -> its JSON header with each binary input's elements as bytes
    under "data" (binary_data_size removed from its parameters)."""
    try:
        header = json.loads(body[:length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(
            f"the first {length:,} bytes (Inference-Header-Content-Length) are not a JSON "
            f"header ({exc})"
        ) from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ProtocolError('the JSON header must be an object with "inputs" (KServe v2)')
    offset = length
    for tensor in header["inputs"]:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name, size = tensor.get("name"), parameters.pop("binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(f"input {name!r}: binary_data_size must be a size, got {size!r}")
        if offset + size > len(body):
            raise ProtocolError(
                f"input {name!r}: binary_data_size {size:,} runs past the end of the body "
                f"({len(body) - offset:,} bytes left)"
            )
        if tensor.get("datatype") != "BYTES":
            raise ProtocolError(
                f"input {name!r}: binary data of datatype {tensor.get('datatype')!r}; this "
                'model takes "BYTES" (the image files)'
            )
        tensor["data"] = bytes_elements(body[offset : offset + size], name)
        offset += size
        if not parameters:
            del tensor["parameters"]
    if offset != len(body):
        raise ProtocolError(
            f"{len(body) - offset:,} bytes after the inputs' binary data: binary_data_size "
            "does not add up to the body"
        )
    return header


def json_from_binary(body: bytes, length: int) -> dict:
    """A binary-extension request as the same request in JSON: each image file's bytes as base64
    text, which both runtimes' parsers read (serving/protocol.py)."""
    request = read_binary_request(body, length)
    for tensor in request["inputs"]:
        data = tensor.get("data") if isinstance(tensor, dict) else None
        if isinstance(data, list):
            tensor["data"] = [
                base64.b64encode(d).decode() if isinstance(d, bytes) else d for d in data
            ]
    return request


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false, got {value!r}")
    return value


def binary_output_requested(body: dict) -> bool:
    """Whether a v2 request asks for the caption output as binary data: "outputs" may name this
    model's one output ("caption") with {"binary_data": bool}; else the request parameter
    binary_data_output decides. A malformed choice is a ProtocolError naming it."""
    parameters, outputs = body.get("parameters"), body.get("outputs")
    default = False
    if isinstance(parameters, dict) and "binary_data_output" in parameters:
        default = _flag("binary_data_output", parameters["binary_data_output"])
    if outputs is None:
        return default
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError(
            f'"outputs" must be a list of objects such as {{"name": "{OUTPUT_NAME}"}}'
        )
    names = [o.get("name") for o in outputs]
    if names != [OUTPUT_NAME]:
        raise ProtocolError(f'"outputs" names {names}; this model has one output, "{OUTPUT_NAME}"')
    output_parameters = outputs[0].get("parameters") or {}
    if not isinstance(output_parameters, dict) or set(output_parameters) - {"binary_data"}:
        raise ProtocolError(
            f'output "{OUTPUT_NAME}" parameters {output_parameters!r}: only "binary_data" is known'
        )
    if "binary_data" in output_parameters:
        return _flag("binary_data", output_parameters["binary_data"])
    return default


def binary_response(response: dict) -> tuple[bytes, int]:
    """A JSON v2 response -> the binary-extension body and its JSON header's length."""
    header, chunks = dict(response), []
    outputs = []
    for output in response["outputs"]:
        output = dict(output)
        data = output.pop("data")
        encoded = b"".join(
            struct.pack("<I", len(item)) + item
            for item in (value.encode() if isinstance(value, str) else value for value in data)
        )
        output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(encoded)}
        outputs.append(output)
        chunks.append(encoded)
    header["outputs"] = outputs
    encoded_header = json.dumps(header).encode()
    return encoded_header + b"".join(chunks), len(encoded_header)
