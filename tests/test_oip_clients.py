"""The endpoint as its clients speak it: tritonclient (http) and the KServe SDK's
InferenceRESTClient, v1 and v2, against both local runtimes (TorchServe behind the pod's front,
and the kserve predictor). Readiness and metadata first, as both clients' docs show, then
inference in JSON and with the binary tensor data extension; every answer 2xx or a 4xx that
names the problem, never a 5xx.
"""

import asyncio
import base64
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

from imagelingo.data.dataset import load_records
from imagelingo.serving.local import local_server

pytestmark = pytest.mark.slow

RUNTIMES = [
    pytest.param(
        "torchserve",
        marks=pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java"),
    ),
    "kserve",
]
MODEL = "imagelingo"


@pytest.fixture(scope="module", params=RUNTIMES)
def server(request, model_store, tmp_path_factory):
    with local_server(request.param, model_store, tmp_path_factory.mktemp("oip")) as running:
        yield running


@pytest.fixture(scope="module")
def images(pipeline_dirs):
    records = load_records(pipeline_dirs["dataset"], "test")[:2]
    return [(pipeline_dirs["dataset"] / "images" / r.image).read_bytes() for r in records]


@pytest.fixture(scope="module")
def expected(server, images):
    """The captions of `images` as a plain curl-style v1 request gets them."""
    body = json.dumps({"instances": [{"data": base64.b64encode(i).decode()} for i in images]})
    request = urllib.request.Request(
        f"{server.url}/v1/models/{MODEL}:predict",
        body.encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return [p["caption"] for p in json.load(answer)["predictions"]]


def triton_client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)


def captions_of(values) -> list[str]:
    return [json.loads(v.decode() if isinstance(v, bytes) else v)["caption"] for v in values]


def test_tritonclient_health_and_metadata(server):
    client = triton_client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.get_server_metadata()["name"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "caption", "datatype": "BYTES", "shape": [-1]}]
    with pytest.raises(InferenceServerException, match="nosuchmodel"):
        client.get_model_metadata("nosuchmodel")


@pytest.mark.parametrize("binary_input", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_output", [False, True], ids=["json-out", "binary-out"])
def test_tritonclient_infer(server, images, expected, binary_input, binary_output):
    client = triton_client(server)
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary_input:  # the image files' bytes, as the extension carries them
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:  # JSON cannot carry raw bytes: base64 text
        encoded = [base64.b64encode(i).decode() for i in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    output = triton.InferRequestedOutput("caption", binary_data=binary_output)
    result = client.infer(MODEL, [tensor], outputs=[output], parameters={"beam_width": 3})
    assert captions_of(result.as_numpy("caption")) == expected


def test_tritonclient_default_outputs_are_binary(server, images, expected):
    """No outputs named: tritonclient asks for binary_data_output, the protocol's default."""
    client = triton_client(server)
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    result = client.infer(MODEL, [tensor], parameters={"beam_width": 3})
    assert captions_of(result.as_numpy("caption")) == expected


def test_tritonclient_bad_input_is_a_4xx_naming_it(server, images):
    client = triton_client(server)
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="image") as raised:
        client.infer(MODEL, [tensor])
    assert str(raised.value.status()).startswith("4")
    good = triton.InferInput("image", [1], "BYTES")
    good.set_data_from_numpy(np.array(images[:1], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="colour") as raised:
        client.infer(MODEL, [good], parameters={"colour": "blue"})
    assert str(raised.value.status()).startswith("4")
    with pytest.raises(InferenceServerException, match="caption"):
        client.infer(MODEL, [good], outputs=[triton.InferRequestedOutput("logits")])


def kserve_calls(url: str, images: list[bytes], protocol: str, binary: bool = False):
    async def calls():
        client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=60))
        try:
            live = await client.is_server_live(url)
            ready = await client.is_model_ready(url, MODEL)
            server_ready = await client.is_server_ready(url) if protocol == "v2" else True
            if protocol == "v1":
                body = {"instances": [{"data": base64.b64encode(i).decode()} for i in images]}
                answer = await client.infer(url, body, model_name=MODEL)
                return live, ready, server_ready, [p["caption"] for p in answer["predictions"]]
            tensor = InferInput("image", [len(images)], "BYTES")
            if binary:  # InferRequest.to_rest sends it with Inference-Header-Content-Length
                tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
            else:
                tensor.data = [base64.b64encode(i).decode() for i in images]
            request = InferRequest(MODEL, [tensor], parameters={"beam_width": 3})
            answer = await client.infer(url, request, model_name=MODEL)
            return live, ready, server_ready, captions_of(answer.outputs[0].data)
        finally:
            await client.close()

    return asyncio.run(calls())


@pytest.mark.parametrize(
    "protocol,binary", [("v1", False), ("v2", False), ("v2", True)], ids=["v1", "v2", "v2-binary"]
)
def test_kserve_client(server, images, expected, protocol, binary):
    live, ready, server_ready, captions = kserve_calls(server.url, images, protocol, binary)
    assert live and ready and server_ready
    assert captions == expected


@pytest.mark.parametrize(
    "path",
    ["/v2/models/nosuchmodel", "/v2/models/nosuchmodel/ready", "/v1/models/nosuchmodel"],
)
def test_unknown_model_is_a_404_naming_it(server, path):
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(server.url + path, timeout=10)
    assert raised.value.code == 404
    assert "nosuchmodel" in raised.value.read().decode()


def test_binary_request_with_a_bad_header_length_is_a_400(server, images):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 10**6},
                }
            ]
        }
    ).encode()
    request = urllib.request.Request(
        f"{server.url}/v2/models/{MODEL}/infer",
        header + b"\x04\x00\x00\x00abcd",
        {"Inference-Header-Content-Length": str(len(header))},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 400
    assert "binary_data_size" in raised.value.read().decode()
