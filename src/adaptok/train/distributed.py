"""torch.distributed set-up for `torchrun` (DDP; gloo on CPU, NCCL on GPU) and the samplers.

Launch with `torchrun --nproc_per_node N -m adaptok.cli train ...` (or across machines with
`--nnodes`, `--rdzv_endpoint`); a plain `adaptok train` runs as a single process.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from ..errors import AdaptokError

__all__ = [
    "DistInfo",
    "ResumableSampler",
    "ShardSampler",
    "all_reduce_sum",
    "check_device",
    "cleanup_distributed",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    Attributes:
        rank: global rank (0 is the main process).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        device: the device this process computes on.
        backend: "gloo", "nccl" or None (single process).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(device: str) -> torch.device:
    """The device that `--device` names here: "auto" (CUDA when available), "cpu", "cuda" or
    "cuda:N".

    Raises:
        AdaptokError: another name (never a silent CPU fallback), or CUDA where there is none.
    """
    if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", str(device)):
        raise AdaptokError(f"unknown --device {device!r}; choose auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AdaptokError(
            f"--device {device}: no CUDA device is available here; use --device cpu (or auto)"
        )
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a single process without those variables.

    Args:
        device: "auto" (CUDA when available), "cpu" or "cuda".
    """
    use_cuda = check_device(device).type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank, target, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity in a single process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class ResumableSampler(Sampler[int]):
    """A `DistributedSampler` that can start part-way through an epoch (to resume a run).

    Args:
        sampler: the DistributedSampler (shuffled with its seed and epoch).
    """

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start epoch `epoch`, dropping its first `skip` samples (already trained on)."""
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


class ShardSampler(Sampler[int]):
    """Evaluation sharding: rank r takes samples r, r + W, r + 2W, ... (no padding, no repeats,
    so summed metrics count every sample exactly once)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
