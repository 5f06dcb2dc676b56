"""Device and precision settings: auto is the CPU here, a GPU asked for and absent is a clear
error, fp16 is CUDA only, fp32 is no autocast at all (the CPU path as before devices existed)."""

import contextlib

import pytest
import torch

from imagelingo import devices, train
from imagelingo.devices import (
    autocast,
    check_precision,
    grad_scaler,
    resolve_device,
    resolve_precision,
)
from imagelingo.distributed import World, rows_of, world_from_env
from imagelingo.errors import ImageLingoError

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@needs_no_gpu
def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_an_error_naming_the_fix():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(ImageLingoError, match="sees no CUDA GPU.*--device cpu or auto"):
        resolve_device("cuda")


def test_unknown_devices_and_precisions_are_refused():
    with pytest.raises(ImageLingoError, match="device 'tpu': expected one of auto, cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(ImageLingoError, match="precision 'fp8'"):
        check_precision("fp8", torch.device("cpu"))
    with pytest.raises(ImageLingoError, match="fp16 needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))
    check_precision("bf16", torch.device("cpu"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    monkeypatch.setattr(devices, "native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"  # an explicit one stays as asked
    assert resolve_precision("bf16", cpu) == "bf16"


def test_a_run_asked_for_auto_resumes_in_the_precision_it_started_in(monkeypatch):
    # a retried pod on a node without native bf16 continues the bf16 run it resumes
    monkeypatch.setattr(devices, "native_bf16", lambda: False)
    cpu = torch.device("cpu")
    config = train.TrainConfig(precision="fp32")  # auto, resolved on this node
    resumed = train._resumed_precision(config, "auto", {"config": {"precision": "bf16"}}, cpu)
    assert resumed.precision == "bf16"
    # written before train.precision existed: fp32
    assert train._resumed_precision(config, "auto", {"config": {}}, cpu).precision == "fp32"
    # asked for explicitly: kept, and train's settings check refuses a mismatch
    assert (
        train._resumed_precision(config, "fp32", {"config": {"precision": "bf16"}}, cpu) == config
    )


def test_fp32_is_no_autocast_and_no_loss_scaling():
    assert isinstance(autocast(torch.device("cpu"), "fp32"), contextlib.nullcontext)
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.bfloat16
    assert not grad_scaler(torch.device("cpu"), "fp32").is_enabled()


def test_torchrun_environment_and_the_split_of_a_batch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() == World(0, 1, 0) and not world_from_env().distributed
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_env()
    assert world.distributed and not world.main
    rows = list(range(7))
    # every 2nd row: both ranks keep decreasing caption lengths, and all rows are taken once
    assert rows[rows_of(World(0, 2), 7)] + rows[rows_of(world, 7)] == [0, 2, 4, 6, 1, 3, 5]
