"""torch.distributed for training: set up from torchrun's environment, gather embeddings.

``torchrun --nproc-per-node K -m xrdflow train --config CFG.yaml`` sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init`
then starts a process group (NCCL on CUDA, gloo on CPU).  Without those
variables (or with WORLD_SIZE=1) training runs in one process.

The contrastive loss uses the *global* batch: :func:`gather` concatenates
the embeddings of every rank with
:func:`torch.distributed.nn.functional.all_gather`, whose backward sends each
rank the gradient of its own slice (summed over the ranks).  Every rank
computes the same global loss L, so a rank's local gradient is
``world_size`` times its share of dL/dtheta; DistributedDataParallel's mean
over ranks then gives exactly dL/dtheta (as in open_clip's
``gather_with_grad``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init", "barrier", "gather", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False   # this module created the process group (and destroys it in shutdown)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init(device_type: str) -> DistInfo:
    """Join the process group described by the environment (torchrun), or run alone."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():  # pragma: no cover
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local, True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` (B, D) of every rank along dim 0, differentiably (rank order)."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def shutdown(info: DistInfo) -> None:
    if info.started_here and dist.is_initialized():
        dist.destroy_process_group()
