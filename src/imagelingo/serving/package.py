"""`imagelingo package`: a trained model directory -> a KServe model store for TorchServe.

    <out>/model-store/imagelingo.mar     torch-model-archiver archive (see below)
    <out>/config/config.properties       TorchServe behind the kserve wrapper: KServe's stock
                                         `kserve-torchserve` runtime (inference on 8085)
    <out>/config/direct.properties       TorchServe answering clients itself on 8080: the
                                         project's `imagelingo-torchserve` ServingRuntime and
                                         the standalone image (serving/Dockerfile)
    <out>/config/entrypoint.py           their PID 1 and readiness probe (serving/
                                         pod_entrypoint.py: graceful stop, model-aware
                                         readiness, the model served under the service's name)
    <out>/metadata.json

KServe copies this directory (the storageUri prefix) to /mnt/models. Both configs are as closed as
TorchServe allows: the HTTP management API listens on 127.0.0.1 only with the model API off
(0.11+), models can only
be registered from the model store (allowed_urls), and TS_* environment variables are ignored
(enable_envvars_config=false), so the TS_SERVICE_ENVELOPE=kserve that KServe always sets cannot
wrap the handler in TorchServe's envelope. TorchServe 0.9.0 (the image both runtimes use) has no
address keys for gRPC: its gRPC inference (7070) and management (7071) APIs listen on all
interfaces, unauthenticated, whatever this file says (torchserve_properties explains); only the
NetworkPolicy, which admits the serving port alone, keeps other pods from them.

The MAR must run in KServe's stock TorchServe image (torch, torchvision, Pillow; no timm, nltk or
this package). So it carries a serving bundle (TorchScript encoder, decoder state dict, config,
vocab; see inference/captioner.py) and, under the name `imagelingo_runtime` so that it can never
shadow (or be shadowed by) an installed `imagelingo`, a copy of the torch-only inference package
as it is, plus the request parsing and the TorchServe handler.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from imagelingo.artifacts import write_metadata
from imagelingo.captioning import load_captioner
from imagelingo.config import settings
from imagelingo.errors import ImageLingoError
from imagelingo.inference.captioner import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    SERVING_FILE,
    VOCAB_FILE,
    Speed,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGE = "imagelingo_runtime"
# What the MAR runs: the inference package as it is, and the serving modules the handler needs.
# All use relative imports and need only torch, torchvision and Pillow (tests/test_runtime_compat).
SERVING_MODULES = ("oip.py", "protocol.py", "images.py", "request.py", "handler.py")
RUNTIME_MODULES = (
    "__init__.py",
    *sorted(f"inference/{p.name}" for p in (PACKAGE_ROOT / "inference").glob("*.py")),
    "serving/__init__.py",
    *(f"serving/{name}" for name in SERVING_MODULES),
)
HANDLER_ENTRY = Path(__file__).with_name("mar_entry.py")
# Runs in the runtime image's Python 3.9, standard library only (tests/test_pod_runtime.py).
POD_ENTRYPOINT = Path(__file__).with_name("pod_entrypoint.py")
POD_MODULES = ("pod_front.py", "oip.py")


@settings("package")
class ServingConfig:
    """TorchServe's per-model settings, written into config.properties' model_snapshot:
    params.yaml's `package` section, where the defaults and what each means are written."""

    model_name: str
    batch_size: int
    max_batch_delay_ms: int
    min_workers: int
    max_workers: int
    response_timeout_s: int
    # Netty's outer cap, above the handler's documented protocol.MAX_REQUEST_BYTES: bodies
    # between the two are read, so their client gets the handler's JSON 413.
    max_request_size: int
    # TorchServe starts workers with OMP_NUM_THREADS=1; the handler sets this many instead.
    torch_threads: int
    # How the served model computes (inference.captioner.Speed), written to serving.json.
    encoder_precision: str
    decoder_precision: str

    @property
    def speed(self) -> Speed:
        return Speed(self.torch_threads, self.encoder_precision, self.decoder_precision)


def export_bundle(
    model_dir: Path,
    bundle_dir: Path,
    encoder_weights: Path | None = None,
    speed: Speed = Speed(),
) -> None:
    """Write the serving bundle: the encoder traced to TorchScript, the decoder as a state dict."""
    captioner = load_captioner(model_dir, encoder_weights)
    encoder, spec = captioner.encoder, captioner.spec
    example = torch.rand(2, 3, spec.image_size, spec.image_size)
    with torch.inference_mode(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but is what the stock TorchServe image (any torch
        # 2.x) can load without this code; torch.export programs are tied to the torch version.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(encoder, example[:1])
        # A trace records one execution; check it generalises to another batch size.
        if not torch.allclose(traced(example), encoder(example), atol=1e-4):
            raise ImageLingoError(f"encoder {spec.name}: TorchScript trace differs from the model")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    traced.save(str(bundle_dir / ENCODER_FILE))
    torch.save(captioner.decoder.state_dict(), bundle_dir / DECODER_FILE)
    shutil.copy2(Path(model_dir) / CONFIG_FILE, bundle_dir / CONFIG_FILE)
    shutil.copy2(Path(model_dir) / VOCAB_FILE, bundle_dir / VOCAB_FILE)
    (bundle_dir / SERVING_FILE).write_text(json.dumps(asdict(speed)))


def copy_runtime_sources(target: Path) -> None:
    for relative in RUNTIME_MODULES:
        destination = target / RUNTIME_PACKAGE / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_ROOT / relative, destination)


# Where KServe's storage initializer puts the storageUri prefix (the `imagelingo package` output).
MOUNT = "/mnt/models"
STOCK_PROPERTIES = "config.properties"  # read by kserve-torchserve (--ts-config) and its wrapper
DIRECT_PROPERTIES = "direct.properties"  # read by imagelingo-torchserve and serving/Dockerfile
ENTRYPOINT = "entrypoint.py"  # PID 1 and readiness probe of both (pod_entrypoint.py)
# TorchServe's management API: loopback only, and on a port that neither the kserve wrapper (HTTP
# 8080, gRPC 8081, both hard-coded on all interfaces) nor TorchServe's other listeners use.
MANAGEMENT_ADDRESS = "http://127.0.0.1:8083"
_REGEX_SPECIALS = set(".$*+?(){}|")


def allowed_urls(model_store: str) -> str:
    """TorchServe's allowed_urls (Java regexes, comma-separated, each matched against the whole
    URL of a registration request): only .mar files directly in the model store. TorchServe
    itself refuses URLs containing "..". Metacharacters go in brackets, not after a backslash,
    which .properties files would eat; the few that cannot are refused."""
    store = model_store.rstrip("/")
    if not store.startswith("/") or any(c in store for c in ",\\[]^&"):
        raise ImageLingoError(f"model store path {model_store!r} cannot go into allowed_urls")
    escaped = "".join(f"[{c}]" if c in _REGEX_SPECIALS else c for c in store)
    return f"file://{escaped}/[^/]+[.]mar"


def torchserve_properties(
    config: ServingConfig,
    model_store: str = f"{MOUNT}/model-store",
    inference_address: str = "http://0.0.0.0:8085",
    management_address: str = MANAGEMENT_ADDRESS,
    metrics_address: str = "http://0.0.0.0:8082",
    grpc_ports: tuple[int, int] = (7070, 7071),
) -> str:
    """A TorchServe config.properties for the model store mounted at `model_store`.

    The defaults are KServe's stock runtime: the kserve wrapper owns 8080 and forwards to
    TorchServe's inference API on 8085 (it reads inference_address, management_address,
    grpc_inference_port and model_store from this file). `direct_properties` moves inference to
    8080 for runtimes without the wrapper. Metrics stay on 8082, where KServe's Prometheus
    annotation points.

    Every key exists in TorchServe 0.12's ConfigManager. Three are newer than 0.9.0 (the
    torchserve-kfs tag KServe 0.20 deploys), whose ConfigManager ignores them:
    disable_token_authorization and enable_model_api (0.11+; 0.9.0 has no token auth and always
    has the model API on, so there the loopback management address and allowed_urls are what
    protect it) and grpc_*_address (0.11+). TorchServe 0.9.0 binds both gRPC servers with
    NettyServerBuilder.forPort(port), all interfaces, and a failed bind ends the server
    (pytorch/serve v0.9.0 frontend/server/src/main/java/org/pytorch/serve/ModelServer.java:
    445-470, 77-110); its ConfigManager has gRPC port and SSL keys only (torchserve-kfs/v0.9.0/
    .../util/ConfigManager.java:99-101,338-350). So on 0.9.0 the gRPC management API (7071:
    Register, Unregister, ScaleWorker without authentication; Register is held to the store's
    MARs by allowed_urls) cannot be closed from here; the NetworkPolicy admits only the serving
    port, and the readiness probe (pod_entrypoint.py) turns an Unregister into a pod that is not
    Ready instead of one answering 404.
    """
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            config.model_name: {
                "1.0": {
                    "defaultVersion": True,
                    "marName": f"{config.model_name}.mar",
                    "minWorkers": config.min_workers,
                    "maxWorkers": config.max_workers,
                    "batchSize": config.batch_size,
                    "maxBatchDelay": config.max_batch_delay_ms,
                    "responseTimeout": config.response_timeout_s,
                }
            }
        },
    }
    lines = {
        "inference_address": inference_address,
        "management_address": management_address,
        "metrics_address": metrics_address,
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": grpc_ports[0],
        "grpc_management_address": "127.0.0.1",
        "grpc_management_port": grpc_ports[1],
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
        "number_of_netty_threads": 4,
        "job_queue_size": 100,
        "model_store": model_store,
        "load_models": "all",
        "max_request_size": config.max_request_size,
        "max_response_size": config.max_request_size,
        # The handler parses the JSON itself so that invalid JSON gets a 400 naming the problem.
        "decode_input_request": "false",
        # KServe's ingress does authentication; TorchServe 0.11+ would otherwise demand tokens.
        "disable_token_authorization": "true",
        # The snapshot's model loads at start; nothing may be registered or deleted later.
        "enable_model_api": "false",
        "allowed_urls": allowed_urls(model_store),
        "install_py_dep_per_model": "false",
        # KServe always sets TS_SERVICE_ENVELOPE (kserve/kservev2) on a TorchServe predictor;
        # honoured, it would hand the handler `instances` instead of the body. This file is the
        # whole configuration: no TS_* variable may override it.
        "enable_envvars_config": "false",
        "model_snapshot": json.dumps(snapshot),
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def direct_properties(config: ServingConfig, model_store: str = f"{MOUNT}/model-store") -> str:
    """TorchServe's inference API answers clients itself on 8080 (no wrapper in front)."""
    return torchserve_properties(config, model_store, inference_address="http://0.0.0.0:8080")


def write_properties(out_dir: Path, config: ServingConfig) -> None:
    (out_dir / "config").mkdir(parents=True, exist_ok=True)
    (out_dir / "config" / STOCK_PROPERTIES).write_text(torchserve_properties(config))
    (out_dir / "config" / DIRECT_PROPERTIES).write_text(direct_properties(config))
    shutil.copy2(POD_ENTRYPOINT, out_dir / "config" / ENTRYPOINT)
    for module in POD_MODULES:  # the entrypoint's front and the protocol module it imports
        shutil.copy2(POD_ENTRYPOINT.with_name(module), out_dir / "config" / module)


def archive(staging: Path, export_dir: Path, config: ServingConfig, version: str) -> Path:
    export_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        config.model_name,
        "--version",
        version,
        "--handler",
        str(staging / "entry" / "imagelingo_handler.py"),
        "--extra-files",
        str(staging / "files"),  # a directory: its contents land at the MAR's root
        "--export-path",
        str(export_dir),
        "--force",
    ]
    # torch-model-archiver stages files in $TMPDIR/<model name> and deletes whatever is there
    # first: two packagings at once on one machine would corrupt each other. Give it our own.
    (staging / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(staging / "tmp")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ImageLingoError(f"torch-model-archiver failed: {result.stderr.strip()[-2000:]}")
    return export_dir / f"{config.model_name}.mar"


def package_model(
    model_dir: Path,
    out_dir: Path,
    config: ServingConfig | None = None,
    encoder_weights: Path | None = None,
    version: str = "1.0",
) -> dict:
    """Stage 6, package: model directory -> model-store/<name>.mar + config/*.properties."""
    config = config or ServingConfig()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="imagelingo-mar-") as tmp:
        staging = Path(tmp)
        export_bundle(Path(model_dir), staging / "files", encoder_weights, config.speed)
        copy_runtime_sources(staging / "files")
        (staging / "entry").mkdir()
        shutil.copy2(HANDLER_ENTRY, staging / "entry" / "imagelingo_handler.py")
        mar = archive(staging, out_dir / "model-store", config, version)
    write_properties(out_dir, config)
    return write_metadata(
        out_dir,
        "package",
        inputs={"model": str(model_dir)},
        params={**asdict(config), "version": version},
        counts={"mar_bytes": mar.stat().st_size},
    )
