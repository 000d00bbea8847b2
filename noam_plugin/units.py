"""The data a schedule counted in samples or tokens has seen, and what the coming update adds to it."""

from __future__ import annotations

from typing import Any

import torch

from noam_plugin._dist import sum_over_ranks


def as_count(n: Any, what: str) -> int | torch.Tensor:
    """An int >= 0, or a one-element integer tensor (kept on its device: no sync per micro-batch)."""
    if isinstance(n, torch.Tensor):
        if n.numel() != 1 or n.dtype.is_floating_point or n.dtype.is_complex or n.dtype == torch.bool:
            raise TypeError(
                f"{what}: expected an int or a one-element integer tensor, "
                f"found a {n.dtype} tensor of shape {tuple(n.shape)}"
            )
        return n
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TypeError(f"{what}: expected an int >= 0, found {type(n).__name__} {n!r}")
    return n


class DataSeen:
    """Samples and tokens seen over all ranks, the global batch, and this rank's tokens of the coming update.

    A count of None is unknown: samples once an update's global batch was unknown, tokens
    until the first `add_tokens()`. Tokens are summed over ranks once per update, not per
    micro-batch; tensors stay where they are until then (no sync per micro-batch).
    """

    def __init__(self, count_tokens: bool) -> None:
        self.samples: int | None = 0
        self.tokens: int | None = 0 if count_tokens else None
        self.samples_per_update: int | None = None
        self.samples_per_update_from = ""
        self._pending = 0
        self._pending_tensors: list[torch.Tensor] = []

    def set_samples_per_update(self, value: int, source: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                "NoamLR samples_per_update: expected an int >= 1 (the global batch), "
                f"found {type(value).__name__} {value!r}"
            )
        self.samples_per_update = int.__index__(value)  # an IntEnum as the int it is: the state stays plain
        self.samples_per_update_from = source

    def add_tokens(self, n: Any) -> bool:
        """Add this rank's tokens of one micro-batch; True on the first report (tokens are counted from then on)."""
        n = as_count(n, "NoamLR.add_tokens")
        if isinstance(n, int):
            self._pending += n
        else:
            self._pending_tensors.append(n)
        first = self.tokens is None
        if first:
            self.tokens = 0
        return first

    @property
    def tokens_pending(self) -> bool:
        return bool(self._pending or self._pending_tensors)

    def take_tokens(self) -> int | None:
        """The coming update's tokens over all ranks (collective: every rank calls it); None if not counted."""
        if self.tokens is None:
            return None
        pending, tensors = self._pending, self._pending_tensors
        if tensors:
            pending += int(torch.cat([t.detach().reshape(1).to(torch.int64) for t in tensors]).sum().item())
        self._pending, self._pending_tensors = 0, []
        total = sum_over_ranks(pending)
        if total < 0:
            raise ValueError(f"NoamLR.add_tokens: the tokens reported for this update sum to {total} over all ranks")
        return total

    def add_update(self, samples: int | None, tokens: int | None) -> None:
        """Count an applied update's data."""
        self.samples = None if self.samples is None or samples is None else self.samples + samples
        if tokens is not None:
            self.tokens += tokens

    def restart(self, samples: int | None, tokens: int | None) -> None:
        """Continue from a checkpoint's counts; tokens reported before the load belong to no update."""
        self.samples, self.tokens = samples, tokens
        self._pending, self._pending_tensors = 0, []
