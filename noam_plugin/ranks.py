"""One count on every rank (docs/CONTRACT.md section 2): the ranks compare their count and data seen.

The comparison is a collective, and a collective that the ranks enter a different number of times hangs
the job, which is worse than the drift it detects. So it runs only where every rank is known to arrive the
same number of times, never on NoamLR's own count (ranks whose counts drifted would reach count N at
different iterations and then compare equal): at DeepSpeed's `save_checkpoint` / `load_checkpoint`
(collective there), where the script calls `check_ranks()`, and, opted in, every N `step()` calls
(`NoamLR(..., check_ranks_every=N)`: the script calls `scheduler.step()` once per iteration on every
rank). A rank that waits longer than the timeout raises instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

from noam_plugin._error_base import NoamPluginError

TIMEOUT_S = float(os.environ.get("NOAM_PLUGIN_RANK_CHECK_TIMEOUT", "300"))  # slow saves stay under it
UNKNOWN = -1  # a count that is None (samples once a global batch was unknown, tokens when not counted)


class RankCountsError(NoamPluginError, RuntimeError):
    """The ranks' NoamLR counts or data seen differ, or a rank did not reach the comparison in time."""


def _counts(noam: Any) -> list[int]:
    return [noam.updates, *(UNKNOWN if v is None else v for v in (noam.samples, noam.tokens))]


def _show(row: list[int]) -> str:
    names = ("updates", "samples", "tokens")
    return ", ".join(f"{n} {v}" for n, v in zip(names, row) if v != UNKNOWN)


def check_ranks(noam: Any, where: str, timeout_s: float | None = None) -> None:
    """Compare [updates, samples, tokens] over the default process group: one all_gather of 3 ints.

    Collective: every rank must call it. Raises RankCountsError on every rank if any differ (naming each
    rank's counts), or on a rank whose peers did not arrive within `timeout_s`."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1:
        return
    backend = str(torch.distributed.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    mine = torch.tensor(_counts(noam), dtype=torch.int64, device=device)
    rows = [torch.empty_like(mine) for _ in range(world)]
    timeout = TIMEOUT_S if timeout_s is None else timeout_s
    work = torch.distributed.all_gather(rows, mine, async_op=True)
    try:
        work.wait(timeout=datetime.timedelta(seconds=timeout))
    except RuntimeError as error:
        raise RankCountsError(
            f"NoamLR: rank {torch.distributed.get_rank()} waited {timeout:g} s at {where} for the other ranks to "
            f"compare their counts ({_show(_counts(noam))} here) and they did not come ({error}). Every rank must "
            "reach this point the same number of times: with check_ranks_every, call scheduler.step() once per "
            "iteration on every rank; call check_ranks() on every rank. "
            "(NOAM_PLUGIN_RANK_CHECK_TIMEOUT sets the wait in seconds.)"
        ) from None
    table = [row.tolist() for row in rows]
    if all(row == table[0] for row in table):
        return
    groups: dict[tuple[int, ...], list[int]] = {}
    for rank, row in enumerate(table):
        groups.setdefault(tuple(row), []).append(rank)
    parts = [f"rank{'s' if len(r) > 1 else ''} {_ranks(r)}: {_show(list(row))}" for row, r in groups.items()]
    raise RankCountsError(
        f"NoamLR: the ranks' counts differ at {where}: " + "; ".join(parts) + ". Each rank has run its updates at "
        "its own lr since they parted. Usual cause: an update skipped on some ranks only (a GradScaler that found "
        "inf/NaN on one rank, a loop without a synchronised overflow check, gradients not all-reduced); skip or "
        "apply each update on every rank alike (DDP all-reduces the gradients, so every rank skips together), "
        "then resume from a checkpoint saved before the ranks parted."
    )


def _ranks(ranks: list[int]) -> str:
    shown = ", ".join(map(str, ranks[:16]))
    return shown + (f" and {len(ranks) - 16} more" if len(ranks) > 16 else "")
