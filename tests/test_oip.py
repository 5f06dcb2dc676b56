"""The Open Inference Protocol's binary tensor data and output choices (serving/oip.py and the v2
parser): what tritonclient and the KServe SDK send, and every malformed variant a 400 naming it.
The real clients against real servers: test_oip_clients.py."""

import base64
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferOutput, InferResponse

from imagelingo.serving import oip
from imagelingo.serving.protocol import BadRequest, parse_v2

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def tritonclient_body(images, parameters=None, outputs=None) -> tuple[bytes, int]:
    """The body and header length tritonclient sends for a binary BYTES input."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, parameters=parameters
    )
    return body, length


def test_a_tritonclient_binary_request_reads_back_as_its_images():
    body, length = tritonclient_body([PNG, PNG[:20]], parameters={"beam_width": 2})
    request = oip.read_binary_request(body, length)
    assert request["inputs"][0]["data"] == [PNG, PNG[:20]]
    assert "parameters" not in request["inputs"][0]  # binary_data_size consumed
    assert oip.binary_output_requested(request) is True  # no outputs named: binary by default
    as_json = oip.json_from_binary(body, length)
    images, options, name, binary = parse_v2(json.loads(json.dumps(as_json)))
    assert images == [PNG, PNG[:20]] and options.beam_width == 2 and binary


def test_a_named_output_decides_binary_or_json():
    text = triton.InferRequestedOutput("caption", binary_data=False)
    body, length = tritonclient_body([PNG], outputs=[text])
    request = oip.read_binary_request(body, length)
    assert oip.binary_output_requested(request) is False
    assert parse_v2(oip.json_from_binary(body, length))[3] is False


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda h, t: (h, t[:-3]), "runs past the end of the body"),
        (lambda h, t: (h, t + b"xx"), "2 bytes after the inputs' binary data"),
        (lambda h, t: (b"{" + h[1:-1], t), "not a JSON header"),
        (lambda h, t: (h, struct.pack("<I", 99) + t[4:]), "runs past the input's"),
        (lambda h, t: (h.replace(b'"BYTES"', b'"FP32"'), t), "datatype 'FP32'"),
        (lambda h, t: (h.replace(b'"inputs"', b'"inputz"'), t), '"inputs"'),
    ],
    ids=["short", "trailing", "header", "element", "datatype", "no-inputs"],
)
def test_malformed_binary_requests_name_the_problem(mutate, message):
    body, length = tritonclient_body([PNG])
    header, tail = mutate(body[:length], body[length:])
    with pytest.raises(oip.ProtocolError, match=message):
        oip.read_binary_request(header + tail, len(header))


@pytest.mark.parametrize("value", ["12x", "-1", "999999"])
def test_a_bad_header_length_is_refused(value):
    with pytest.raises(oip.ProtocolError, match="Inference-Header-Content-Length"):
        oip.header_length(value, 100)


@pytest.mark.parametrize(
    "body,message",
    [
        ({"parameters": {"binary_data_output": "yes"}}, "binary_data_output must be true"),
        ({"outputs": [{"name": "logits"}]}, 'one output, "caption"'),
        ({"outputs": "caption"}, '"outputs" must be a list'),
        ({"outputs": [{"name": "caption", "parameters": {"top_k": 1}}]}, 'only "binary_data"'),
        ({"parameters": {"colour": 1}}, "unknown parameter"),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["x"],
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            "no Inference-Header-Content-Length",
        ),
    ],
)
def test_protocol_fields_are_checked_with_a_400(body, message):
    request = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(PNG).decode()],
            }
        ]
    }
    request.update(body)
    with pytest.raises(BadRequest, match=message):
        parse_v2(request)


def test_a_binary_response_reads_back_in_both_clients():
    predictions = [
        json.dumps({"caption": "a dog runs", "score": -1.5}),
        json.dumps({"caption": "é"}),
    ]
    response = {
        "id": "r1",
        "model_name": "imagelingo",
        "outputs": [{"name": "caption", "datatype": "BYTES", "shape": [2], "data": predictions}],
    }
    body, length = oip.binary_response(response)
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    assert [v.decode() for v in result.as_numpy("caption")] == predictions
    parsed = InferResponse.from_bytes(body, length)
    assert [
        v.decode() if isinstance(v, bytes) else v for v in parsed.outputs[0].data
    ] == predictions
    # kserve's own encoder, which the kserve predictor answers with, writes the same layout
    ours = InferResponse(
        "r1",
        "imagelingo",
        [InferOutput("caption", [2], "BYTES", [p.encode() for p in predictions])],
        use_binary_outputs=True,
    )
    theirs_body, theirs_length = ours.to_rest()
    assert theirs_body[theirs_length:] == body[length:]
