"""One pod-faithful round of the rehearsal (rehearse.py runs it inside the pod's network
namespace): the predictor Pod the real KServe built on the box (pod.py: captured by
box/kserve/capture-pods.sh, with the substitutions pod.SUBSTITUTIONS lists), the packaged store
uploaded to an S3 API on 127.0.0.1 (moto) under that Pod's own storageUri, the Pod run as a
kubelet runs it (kubelet.py), probed, and stopped with SIGTERM.

The InferenceService is the one the box's overlay created (`imagelingo`); that the URL's model
name follows the InferenceService and not the packaged name (the runtime's --model-name={{.Name}})
is tests/test_pod_runtime.py's to show.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kubelet
import pod as podspec
import yaml

# the storage-initializer image's entrypoint at KServe v0.15.2 (kserve/kserve
# python/storage-initializer/scripts/initializer-entrypoint), its logging call left out
INITIALIZER = (
    "import sys\nfrom kserve.storage import Storage\nStorage.download(sys.argv[1], sys.argv[2])\n"
)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal-secret"}


def start_moto(work: Path) -> tuple[subprocess.Popen, str]:
    from imagelingo.serving.torchserve import free_port

    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = open(work / "moto.log", "wb")
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not kubelet.tcp_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError("moto did not start")
        time.sleep(0.1)
    return process, f"127.0.0.1:{port}"


def upload(store: Path, endpoint: str, uri: str) -> str:
    """What `imagelingo deploy` uploads, as it uploads it, to `uri` (the captured Pod's
    storageUri); returns the store's version."""
    import boto3

    from imagelingo.deploy import store_version, upload_store

    os.environ.update(CREDENTIALS, AWS_DEFAULT_REGION="us-east-1")
    bucket = uri.removeprefix("s3://").split("/")[0]
    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=bucket)
    upload_store(store, uri, f"http://{endpoint}")
    return store_version(store)


def network_policy_ports(mode: str) -> list[int]:
    """Ports the rendered NetworkPolicy admits from any namespace (manifests/overlays)."""
    overlay = "minio-standard" if mode == "Standard" else "minio"
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(podspec.REPO / "manifests/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ports = set()
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "NetworkPolicy":
            for rule in doc["spec"].get("ingress", []):
                ports |= {p["port"] for p in rule.get("ports", [])}
    return sorted(ports)


def pod_images(pod: dict, plan: dict) -> dict[str, kubelet.Image]:
    """What stands in for each image the Pod names (pod.py's docstring: not a spec change)."""
    images = {}
    for container in pod["initContainers"] + pod["containers"]:
        image = container["image"]
        if container["name"] == podspec.INITIALIZER:  # kserve/storage-initializer:<kserve>
            images[image] = kubelet.Image(
                path=[str(Path(plan["storage_venv"]) / "bin")],
                entrypoint=["python", "-c", INITIALIZER],
            )
        else:  # pytorch/torchserve-kfs:0.9.0
            images[image] = kubelet.Image(
                path=[str(Path(plan["kfs_venv"]) / "bin")],
                env={"TEMP": "/home/model-server/tmp", "PYTHONUNBUFFERED": "TRUE"},
                workdir="/home/model-server",  # torchserve-kfs/v0.9.0/docker/Dockerfile:135-136
            )
    return images


def run_pod_round(mode: str, plan: dict, work: Path, cases, request, listeners) -> dict:
    from imagelingo.serving.consistency import check_batch_mixes

    root = work / f"pod-{mode.lower()}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    moto, endpoint = start_moto(root)
    node = None
    result = {"name": f"pod-{mode.lower()}", "mode": mode}
    started = time.monotonic()
    try:
        kserve = plan.get("kserve", podspec.KSERVE)
        service = podspec.inference_service_name(mode, kserve)
        result["kserve"], result["service"] = kserve, service
        result["version"] = upload(Path(plan["store"]), endpoint, podspec.storage_uri(mode, kserve))
        pod = podspec.pod(mode, endpoint, kserve)
        (root / "pod.json").write_text(json.dumps(pod, indent=1))
        images = pod_images(pod, plan)
        result["images"] = {name: image.path[0] for name, image in images.items()}
        node = kubelet.Kubelet(pod, images, CREDENTIALS, root)
        container = pod["containers"][0]
        result["command"] = " ".join(container["command"] + container["args"])
        result["user"] = container["securityContext"].get("runAsUser")
        node.run_init_containers()
        downloaded = sorted(
            str(p.relative_to(node.volumes[podspec.PROVISION_VOLUME]))
            for p in node.volumes[podspec.PROVISION_VOLUME].rglob("*")
            if p.is_file()
        )
        result["downloaded"] = downloaded
        node.start()
        ready = node.wait_ready(True, float(os.environ.get("REHEARSAL_READY_S", 300)))
        if ready is None:
            raise RuntimeError(
                f"never Ready (last probe: {node.last_probe}); see {root}/kserve-container.log"
            )
        result["ready_s"] = ready
        images_b64 = plan["images_b64"]
        port = container["ports"][0]["containerPort"]
        body = json.dumps({"instances": [{"data": images_b64[0]}]}).encode()
        first = request("POST", port, f"/v1/models/{service}:predict", body)
        result["first_request"] = {"status": first[0], "body": first[1], "s": first[2]}
        probes = []
        for case, method, path, data in cases(images_b64, service):
            status, text, seconds = request(method, port, path, data)
            probes.append({"case": case, "status": status, "body": text, "s": seconds})
        result["probes"] = probes
        # issue 29: tritonclient and the KServe SDK (this .venv's, and 0.15.2's) as users call it
        image_file = root / "probe.jpg"
        image_file.write_bytes(base64.b64decode(images_b64[0]))
        result["clients"] = client_checks(f"http://127.0.0.1:{port}", service, image_file, plan)
        # issue 30: each image's answer alone vs inside random batch mixes
        mixes = check_batch_mixes(
            f"http://127.0.0.1:{port}",
            [base64.b64decode(i) for i in plan["mix_images_b64"]],
            model=service,
        )
        result["batch_mixes"] = {**dataclasses.asdict(mixes), "ok": mixes.ok}
        result["listeners"] = listeners()
        result["policy_ports"] = network_policy_ports(mode)
        # the model goes away (TorchServe 0.9.0: the model API cannot be switched off)
        asked = time.monotonic() - node.started
        status, text, _ = request("DELETE", 8083, f"/models/{service}")
        result["unregister"] = {"status": status, "body": text}
        gone = node.wait_ready(False, 60)
        result["not_ready_after_unregister_s"] = None if gone is None else round(gone - asked, 1)
        result["stop"] = node.terminate()
        result["events"] = node.events
    finally:
        if node is not None and getattr(node, "sandbox", None) is not None:
            node.sandbox.stop()  # a failed round leaves no container behind
        moto.terminate()
        moto.wait(timeout=10)
        result["round_s"] = round(time.monotonic() - started, 1)
    return result


def client_checks(url: str, model: str, image_file: Path, plan: dict) -> list[dict]:
    """client_probe.py run by each Python that has clients; one dict per call."""
    probe = Path(__file__).with_name("client_probe.py")
    calls = []
    for python in (sys.executable, str(Path(plan["storage_venv"]) / "bin" / "python")):
        done = subprocess.run(
            [python, str(probe), url, model, str(image_file)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            detail = done.stderr.strip()[-500:]
            calls.append({"client": python, "call": "run", "ok": False, "detail": detail})
            continue
        calls += json.loads(done.stdout.strip().splitlines()[-1])
    return calls


def render(rounds: list[dict]) -> list[str]:
    """The pod rounds' own table (rehearse.render adds their cases to the common one)."""
    if not rounds:
        return []
    lines = [
        "",
        "The project's runtime as the pod the real KServe "
        f"{', '.join(sorted({r['kserve'] for r in rounds}))} built on the box for "
        "manifests/overlays (box/kserve/observed/, substitutions in serving/kfs-runtime/pod.py; "
        "Knative mode: KServe's Knative Service + its pod mutator's injection, Knative's part "
        "from reading), run as a kubelet runs it (kubelet.py):",
        "",
        "| round | PID 1 (uid) | storage-initializer downloaded | Ready after | first request "
        "| good → caption | bad → 4xx | alone = batched (issue 30) | unregister → NotReady "
        "| SIGTERM → gone (grace) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        stop = r["stop"]
        killed = " SIGKILL" if stop["killed"] else ""
        lines.append(
            f"| {r['name']} | `{r['command']}` ({r['user']}) | {', '.join(r['downloaded'])} "
            f"| {r['ready_s']} s | **{r['first_request']['status']}** | "
            f"{r['verdict']['good_captioned']} | {r['verdict']['bad_4xx']} | {mixes_cell(r)} | "
            f"{r['unregister']['status']}, NotReady {r['not_ready_after_unregister_s']} s later | "
            f"{stop['stop_s']} s{killed} ({stop['grace_s']} s) |"
        )
    for r in rounds:
        stand_ins = "; ".join(f"`{image}` → {path}" for image, path in r["images"].items())
        lines.append(f"- {r['name']} images: {stand_ins}")
    lines += ["", "The clients (client_probe.py; issue 29), each call's outcome:", ""]
    for r in rounds:
        calls = r.get("clients", [])
        failed = [f"{c['client']} {c['call']}: {c['detail'][:200]}" for c in calls if not c["ok"]]
        clients = sorted({c["client"] for c in calls})
        lines.append(
            f"- {r['name']}: {sum(c['ok'] for c in calls)}/{len(calls)} calls succeeded "
            f"({', '.join(clients)}){'; failed: ' + '; '.join(failed) if failed else ''}"
        )
    lines += ["", "Listening sockets vs the ports the rendered NetworkPolicy admits:", ""]
    for r in rounds:
        open_ports = {int(a.rsplit(":", 1)[1]) for a in r["listeners"] if not a.startswith("127.")}
        shut = sorted(open_ports - set(r["policy_ports"]))
        lines.append(
            f"- {r['name']}: listening {', '.join(r['listeners'])}; admitted {r['policy_ports']};"
            f" on all interfaces but not admitted: {shut}"
        )
    return lines


def mixes_cell(round_result: dict) -> str:
    mixes = round_result.get("batch_mixes")
    if mixes is None:
        return "not run"
    same = mixes["compared"] - mixes["token_mismatches"]
    return (
        f"{same}/{mixes['compared']} same tokens, score diff ≤ "
        f"{mixes['max_relative_score_diff']:.0e} ({mixes['images']} images)"
    )
