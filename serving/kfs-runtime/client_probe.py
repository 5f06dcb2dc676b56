"""The endpoint as the two common clients call it, for the runtime rehearsal's pod rounds.

    python client_probe.py URL MODEL IMAGE_FILE

Run by whichever Python has the clients: the project's .venv (tritonclient[http] and the KServe
SDK of constraints.txt) and .venv-storage (the KServe 0.15.2 SDK, Kubeflow 1.11's). Each call is
one line of the JSON printed: {"client", "call", "ok", "detail"}; a client not installed in this
Python is skipped. tests/test_oip_clients.py makes the same calls against the local runtimes.
Readiness and metadata first, then inference: JSON and binary tensor data, v1 and v2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys


def caption(value) -> str:
    return json.loads(value.decode() if isinstance(value, bytes) else value)["caption"]


def triton_calls(url: str, model: str, image: bytes) -> list[tuple[str, bool, str]]:
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url.split("://", 1)[1], network_timeout=120)
    calls = [
        ("live", client.is_server_live(), ""),
        ("ready", client.is_server_ready(), ""),
        ("model ready", client.is_model_ready(model), ""),
    ]
    metadata = client.get_model_metadata(model)
    calls.append(("metadata", metadata.get("inputs", [{}])[0].get("name") == "image", ""))
    for binary in (False, True):
        tensor = triton.InferInput("image", [1], "BYTES")
        data = image if binary else base64.b64encode(image).decode()
        tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
        result = client.infer(model, [tensor])  # no outputs named: binary_data_output
        text = caption(result.as_numpy("caption")[0])
        calls.append((f"infer {'binary' if binary else 'JSON'} in, binary out", bool(text), text))
    return calls


def kserve_calls(url: str, model: str, image: bytes) -> list[tuple[str, bool, str]]:
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> list[tuple[str, bool, str]]:
        calls = []
        for protocol in ("v1", "v2"):
            client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=120))
            try:
                calls.append((f"{protocol} live", await client.is_server_live(url), ""))
                ready = await client.is_model_ready(url, model)
                calls.append((f"{protocol} model ready", ready, ""))
                if protocol == "v1":
                    body = {"instances": [{"data": base64.b64encode(image).decode()}]}
                    answer = await client.infer(url, body, model_name=model)
                    text = answer["predictions"][0]["caption"]
                    calls.append(("v1 infer", bool(text), text))
                    continue
                calls.append(("v2 ready", await client.is_server_ready(url), ""))
                for binary in (False, True):
                    tensor = InferInput("image", [1], "BYTES")
                    if binary:
                        array = np.array([image], dtype=np.object_)
                        tensor.set_data_from_numpy(array, binary_data=True)
                    else:
                        tensor.data = [base64.b64encode(image).decode()]
                    request = InferRequest(model, [tensor])
                    answer = await client.infer(url, request, model_name=model)
                    text = caption(answer.outputs[0].data[0])
                    calls.append((f"v2 infer {'binary' if binary else 'JSON'}", bool(text), text))
            finally:
                await client.close()
        return calls

    return asyncio.run(run())


def main(argv: list[str]) -> int:
    url, model, image_file = argv
    with open(image_file, "rb") as f:
        image = f.read()
    lines = []
    for name, module, calls in (
        ("tritonclient", "tritonclient.http", triton_calls),
        ("kserve", "kserve", kserve_calls),
    ):
        try:
            version = __import__("importlib.metadata").metadata.version(name)
            __import__(module)
        except Exception:  # noqa: BLE001 - not installed in this Python: skipped
            continue
        label = f"{name} {version}"
        try:
            for call, ok, detail in calls(url, model, image):
                lines.append({"client": label, "call": call, "ok": bool(ok), "detail": detail})
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the report
            lines.append({"client": label, "call": "error", "ok": False, "detail": repr(exc)})
    print(json.dumps(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
