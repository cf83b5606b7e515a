"""The process group of a cell's ranks (torchrun's environment) and the collectives training uses.

Every function here also works in a world of one without a process group (DDP strategies on one
process create none)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(need_process_group: bool) -> Distributed:
    """Reads the torchrun environment. A single process outside torchrun gets a world of one
    (DeepSpeed still needs a process group: it is created on a free local port)."""
    if "RANK" not in os.environ and need_process_group:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if (world > 1 or need_process_group) and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, device)


def all_gather(obj) -> list:
    """Every rank's ``obj`` in rank order; ``[obj]`` in a world of one without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """``values`` summed (or their maximum, ``op="max"``) element-wise over the ranks, in float64."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
