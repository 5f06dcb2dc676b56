"""`imagelingo package`: a trained model directory -> a KServe model store for TorchServe.

    <out>/model-store/imagelingo.mar     torch-model-archiver archive (see below)
    <out>/config/config.properties       the layout KServe's TorchServe runtime reads
    <out>/metadata.json

The MAR must run in KServe's stock TorchServe image (torch, torchvision, Pillow; no timm, nltk or
this package). So it carries a serving bundle (TorchScript encoder, decoder state dict, config,
vocab; see runtime.py) and a copy of the torch-only modules of this package under the name
`imagelingo_runtime`, so that it can never shadow (or be shadowed by) an installed `imagelingo`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from imagelingo.artifacts import write_metadata
from imagelingo.captioner import CONFIG_FILE, VOCAB_FILE, Captioner
from imagelingo.encoders import build_encoder
from imagelingo.errors import ImageLingoError
from imagelingo.serving import runtime

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGE = "imagelingo_runtime"
# The modules the handler imports; all use relative imports and need only torch/torchvision/PIL.
RUNTIME_MODULES = (
    "__init__.py",
    "errors.py",
    "model.py",
    "data/__init__.py",
    "data/vocab.py",
    "serving/__init__.py",
    "serving/protocol.py",
    "serving/images.py",
    "serving/runtime.py",
    "serving/handler.py",
)
HANDLER_ENTRY = Path(__file__).with_name("mar_entry.py")


@dataclass(frozen=True)
class ServingConfig:
    """TorchServe's per-model settings, written into config.properties' model_snapshot."""

    model_name: str = "imagelingo"
    batch_size: int = 8
    max_batch_delay_ms: int = 20
    min_workers: int = 1
    max_workers: int = 1
    response_timeout_s: int = 120
    max_request_size: int = 10 * 1024 * 1024  # bytes; larger bodies get 413 from TorchServe
    # TorchServe starts workers with OMP_NUM_THREADS=1; the handler sets this many torch threads
    # per worker instead (CPU limit / workers). 0 leaves torch's default.
    torch_threads: int = 2


def export_bundle(
    model_dir: Path,
    bundle_dir: Path,
    encoder_weights: Path | None = None,
    torch_threads: int = 0,
) -> None:
    """Write the serving bundle: the encoder traced to TorchScript, the decoder as a state dict."""
    captioner = Captioner.load(model_dir)
    spec = captioner.encoder
    encoder, _ = build_encoder(spec.name, encoder_weights)
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
    traced.save(str(bundle_dir / runtime.ENCODER_FILE))
    torch.save(captioner.decoder.state_dict(), bundle_dir / runtime.DECODER_FILE)
    shutil.copy2(Path(model_dir) / CONFIG_FILE, bundle_dir / runtime.CONFIG_FILE)
    shutil.copy2(Path(model_dir) / VOCAB_FILE, bundle_dir / runtime.VOCAB_FILE)
    (bundle_dir / runtime.SERVING_FILE).write_text(json.dumps({"torch_threads": torch_threads}))


def copy_runtime_sources(target: Path) -> None:
    for relative in RUNTIME_MODULES:
        destination = target / RUNTIME_PACKAGE / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_ROOT / relative, destination)


def torchserve_properties(
    config: ServingConfig,
    model_store: str = "/mnt/models/model-store",
    inference_address: str = "http://0.0.0.0:8085",
    management_address: str = "http://0.0.0.0:8085",
    metrics_address: str = "http://0.0.0.0:8082",
    grpc_ports: tuple[int, int] = (7070, 7071),
) -> str:
    """config.properties as KServe's TorchServe runtime expects it (the defaults are its ports
    and its mount point; `imagelingo serve` passes 127.0.0.1 addresses instead)."""
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
        "grpc_inference_port": grpc_ports[0],
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
        "enable_model_api": "true",
        "install_py_dep_per_model": "false",
        # TS_* environment variables may override these (the standalone image moves the ports).
        # Do not label the InferenceService with a service-envelope: the handler speaks KServe.
        "enable_envvars_config": "true",
        "model_snapshot": json.dumps(snapshot),
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


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
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageLingoError(f"torch-model-archiver failed: {result.stderr.strip()[-2000:]}")
    return export_dir / f"{config.model_name}.mar"


def package_model(
    model_dir: Path,
    out_dir: Path,
    config: ServingConfig = ServingConfig(),
    encoder_weights: Path | None = None,
    version: str = "1.0",
) -> dict:
    """Stage 6, package: model directory -> model-store/<name>.mar + config/config.properties."""
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="imagelingo-mar-") as tmp:
        staging = Path(tmp)
        export_bundle(Path(model_dir), staging / "files", encoder_weights, config.torch_threads)
        copy_runtime_sources(staging / "files")
        (staging / "entry").mkdir()
        shutil.copy2(HANDLER_ENTRY, staging / "entry" / "imagelingo_handler.py")
        mar = archive(staging, out_dir / "model-store", config, version)
    (out_dir / "config").mkdir(parents=True, exist_ok=True)
    (out_dir / "config" / "config.properties").write_text(torchserve_properties(config))
    return write_metadata(
        out_dir,
        "package",
        inputs={"model": str(model_dir)},
        params={**asdict(config), "version": version},
        counts={"mar_bytes": mar.stat().st_size},
    )
