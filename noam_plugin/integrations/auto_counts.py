"""`"auto"` counts in data units (docs/CONTRACT.md section 3).

The HF Trainer (`warmup_steps` / `warmup_ratio`, `max_steps`) and Accelerate's `DummyScheduler`
fill `"auto"` in `warmup_num_steps` / `total_num_steps` with counts of optimizer updates. NoamLR
reads those keys in its `warmup_unit`, so under `samples` or `tokens` an update count would be read
as a data count (a warmup 8x too short with a global batch of 8). Here:

- `samples`: the filled update count times the global batch (`train_batch_size`, the samples of
  one update over all processes), said once in a log line;
- `tokens`: refused, naming the key and what to write, unless `auto_tokens_per_update: N` in the
  params says how many tokens one update holds; then the update count times N.

Explicit counts are in the warmup's unit already: the Trainer does not compare them with its update
counts (it would report a mismatch for every correct value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from noam_plugin.errors import ConfigError, Problem
from noam_plugin.names import DATA_UNITS, DEFAULT_UNIT, SCHEDULER_NAME, TOKENS

COUNT_KEYS = ("warmup_num_steps", "total_num_steps")  # the keys the fillers write update counts into
TOKENS_KEY = "auto_tokens_per_update"
PREFIX = "scheduler.params."


def noam_params(config: Any) -> dict | None:
    """The `params` of a DeepSpeed config's NoamLR scheduler block, or None."""
    scheduler = config.get("scheduler") if isinstance(config, dict) else None
    if isinstance(scheduler, dict) and scheduler.get("type") == SCHEDULER_NAME:
        params = scheduler.get("params")
        return params if isinstance(params, dict) else None
    return None


def data_unit(params: dict) -> str | None:
    """'samples' or 'tokens' when the counts are in data units, else None."""
    unit = params.get("warmup_unit", DEFAULT_UNIT)
    return unit if unit in DATA_UNITS else None


def auto_keys(params: dict, source: str, filled_by: str) -> list[str]:
    """The count keys still "auto" that `filled_by` will fill with update counts; refuses tokens without a figure."""
    unit = data_unit(params)
    keys = [key for key in COUNT_KEYS if params.get(key) == "auto"]
    if unit != TOKENS or not keys or TOKENS_KEY in params:
        return keys if unit else []
    raise ConfigError(
        source,
        [
            Problem(
                PREFIX + key,
                f'a count of tokens (warmup_unit tokens), e.g. {key}: {_example(key)}; or keep "auto" and add '
                f"{PREFIX}{TOKENS_KEY}: N (the tokens of one update over all processes) to have it filled with "
                f"{filled_by}'s update count x N",
                f'"auto", which {filled_by} fills with a number of optimizer updates, not tokens',
            )
            for key in keys
        ],
    )


def _example(key: str) -> str:
    return "4000000" if key == "warmup_num_steps" else "2000000000"


def global_batch(config: dict, processes: int) -> int | None:
    """train_batch_size as DeepSpeed will use it: given, or micro-batch x accumulation x processes."""

    def number(key: str, default: Any = None) -> Any:
        value = config.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    given, micro, accumulation = (
        number("train_batch_size"),
        number("train_micro_batch_size_per_gpu"),
        number("gradient_accumulation_steps", 1),
    )
    if given is not None:
        return given
    return micro * accumulation * processes if micro is not None and accumulation is not None else None


def per_update(params: dict, global_batch: Any, source: str, batch_from: str) -> tuple[int, str]:
    """(data of one update, where that figure comes from) in the params' data unit."""
    if data_unit(params) == TOKENS:
        return params[TOKENS_KEY], PREFIX + TOKENS_KEY  # validated with the other params when NoamLR is built
    if not isinstance(global_batch, int) or isinstance(global_batch, bool) or global_batch < 1:
        raise ConfigError(
            source,
            Problem(
                "train_batch_size",
                'an int >= 1 (the samples of one update over all processes): "auto" counts of warmup_unit samples '
                "are update counts x the global batch",
                f"{global_batch!r}",
            ),
        )
    return global_batch, batch_from


def to_data_units(params: dict, keys: list[str], figure: tuple[int, str], filled_by: str) -> None:
    """Turn the update counts `filled_by` wrote into `keys` into counts in the warmup's unit; one log line."""
    from noam_plugin._dist import log_rank0  # torch: not for `noam-plugin validate`, which reads auto_keys

    keys = [key for key in keys if isinstance(params.get(key), int) and not isinstance(params[key], bool)]
    if not keys:
        return
    n, source = figure
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return  # a bad auto_tokens_per_update: NoamLR's validation names it
    unit = data_unit(params)
    said = []
    for key in keys:
        said.append(f"{key} {params[key]} updates x {n} = {params[key] * n}")
        params[key] *= n
    log_rank0(f'NoamLR: "auto" filled by {filled_by} in {unit}: {"; ".join(said)} {unit} ({n} from {source})')


@contextlib.contextmanager
def explicit_counts_hidden(params: dict | None) -> Iterator[None]:
    """Counts written in samples/tokens, out of sight of a filler that would compare them with update counts."""
    hidden = {}
    if params is not None and data_unit(params):
        hidden = {k: params.pop(k) for k in COUNT_KEYS if k in params and params[k] != "auto"}
    try:
        yield
    finally:
        if params is not None:
            params.update(hidden)
