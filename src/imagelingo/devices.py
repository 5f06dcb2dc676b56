"""Where the stages compute: `device` (auto | cpu | cuda | cuda:N) and `precision` (auto | fp32 |
bf16 | fp16) as params.yaml names them, resolved once per stage.

auto is cuda when torch sees a GPU, else cpu: the CPU path is the one every test and benchmark
runs, and a CPU run with fp32 does exactly what it did before devices existed.
Mixed precision is autocast around the forward pass (the weights and the optimizer stay fp32):
bf16 needs no loss scaling; fp16 needs a GradScaler and is CUDA only. Precision auto is bf16
where the hardware computes it natively (a CPU with AVX-512 BF16 or AMX, a GPU from Ampere on),
else fp32: emulated bf16 on an older CPU is slower than fp32, not faster.
"""

from __future__ import annotations

import contextlib

import torch

from imagelingo.errors import ImageLingoError
from imagelingo.inference.captioner import native_bf16

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """params.yaml's `device` as a torch.device; under torchrun each process takes the GPU of its
    LOCAL_RANK. A GPU asked for and not there is an error, not a silent CPU run."""
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise ImageLingoError(f"device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")
    if base == "auto":
        base = "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ImageLingoError(
            f"device {name!r}: torch {torch.__version__} sees no CUDA GPU "
            "(a CPU-only torch build, or no GPU in this container); use --device cpu or auto"
        )
    if ":" in name:
        return torch.device(name)
    return torch.device("cuda", local_rank or 0)


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ImageLingoError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ImageLingoError(
            f"precision fp16 needs a CUDA device (it is {device}); use bf16 or fp32 on CPU"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """params.yaml's `precision`, checked, with auto made concrete for `device`."""
    check_precision(precision, device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast context; fp32 is no autocast at all (the CPU default)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its gradients underflow without it); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def scaled_step(
    loss: torch.Tensor,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> None:
    """One optimizer step from `loss`: backward (scaled for fp16), the gradient norm clipped on
    the true gradients, then the step (skipped by the scaler when fp16 gradients overflowed)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def check_accelerator_request(count: str, kind: str) -> None:
    """The pipeline asked Kubernetes for `count` `kind` (accelerator_count / accelerator_type):
    the task must see them, or it would run on CPU without saying so. "" or "0" asks for none."""
    requested = int(count or 0)
    if requested and torch.cuda.device_count() < requested:
        raise ImageLingoError(
            f"accelerator_count={count} ({kind}) was requested but torch {torch.__version__} "
            f"sees {torch.cuda.device_count()} GPU(s): is the node a GPU node with its device "
            "plugin, and the image's torch a CUDA build (imagelingo compile/submit --cuda)?"
        )
