"""Fine-tuning under ``torchrun``: this process's rank in the process group (DDP; gloo on CPU, NCCL on GPU),
or a single process of rank 0 when not launched by torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Distributed:
    """This process's rank and the number of processes; rank 0 writes the run."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())
