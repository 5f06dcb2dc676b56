"""Data-parallel training under torchrun: the process group and who does what.

`torchrun --nproc_per_node N -m imagelingo.cli train ...` (or the Kubeflow Trainer, whose
torch-distributed runtime starts torchrun from PET_* variables) gives every process WORLD_SIZE,
RANK and LOCAL_RANK. With WORLD_SIZE > 1, `imagelingo train` joins the process group (gloo on
CPU, nccl on CUDA) and wraps the decoder in DistributedDataParallel. Every rank draws the same
global batch (same seed) and computes its own rows of it; rank 0 alone validates, checkpoints,
logs to MLflow and writes the model directory, and tells the others what it found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from imagelingo.errors import ImageLingoError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes (checkpoint, model, metadata, MLflow)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """torchrun's WORLD_SIZE/RANK/LOCAL_RANK; one process without them."""
    try:
        return World(
            rank=int(os.environ.get("RANK", 0)),
            size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise ImageLingoError(f"torchrun environment: {exc}") from exc


def init(world: World, device: torch.device) -> None:
    """Join the process group (a no-op for one process)."""
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":  # nccl's collectives (broadcast_object_list, all_reduce) run
            torch.cuda.set_device(device)  # on the current device: this rank's, not cuda:0
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def finish(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(world: World, value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(world: World, values: list[float]) -> list[float]:
    """Elementwise sum over ranks (float64 on the CPU side of the group)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def rows_of(world: World, batch_size: int) -> slice:
    """This rank's rows of a global batch: every world.size-th, so every rank keeps rows sorted
    by decreasing caption length (the decoder needs that) and gets a similar share of words."""
    return slice(world.rank, batch_size, world.size)


def check_batch_size(world: World, batch_size: int) -> None:
    if batch_size % world.size:
        raise ImageLingoError(
            f"train.batch_size {batch_size} is not divisible by WORLD_SIZE {world.size}: the "
            "global batch is split evenly over the processes (per-process batch = "
            "batch_size / WORLD_SIZE)"
        )


class NoTracking:
    """What ranks other than 0 get instead of the mlflow module: nothing is logged twice."""

    class _Run:
        class info:  # noqa: N801 (mirrors mlflow's ActiveRun.info.run_id)
            run_id = None

    def active_run(self):
        return self._Run()

    def __getattr__(self, name):
        if name.startswith("log_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)
