"""The few torch.distributed facts NoamLR needs, safe to call with or without a process group."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("noam_plugin")


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def is_rank0() -> bool:
    """Rank 0 of the process group; before one exists, of the launcher (torchrun, accelerate and deepspeed
    set RANK in every process they start)."""
    if _initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def log_rank0(message: str) -> None:
    """The one rank-0 logger: one line per job, not one per rank (every rank runs the same schedule)."""
    if is_rank0():
        log.warning(message)


def sum_over_ranks(value: int) -> int:
    """Sum an int over all ranks of the default process group (every rank gets the same total)."""
    if not _initialized():
        return value
    backend = str(torch.distributed.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())
