"""A safety net: NoamLR's count of applied updates against the framework's own (docs/CONTRACT.md section 2).

Where a framework keeps its own count of applied updates, the two must agree; a mismatch
means every lr since is suspect (a NoamLR state loaded from another run, a wrapper that counts
twice), so it is an error naming both counts and where they were compared, not a log line.

- DeepSpeed: `global_steps - skipped_steps`, after the first updates of an engine (built or
  loaded) and at every `save_checkpoint` / `load_checkpoint` (integrations/deepspeed.py). A run
  that switched to NoamLR mid-way keeps the difference as an offset in the checkpoint's client
  state (`noam_plugin_count_offset`).
- HF Trainer without DeepSpeed: `state.global_step`, at train begin (after a resume) and at every
  save (a callback that integrations/transformers.py adds when the scheduler is a NoamLR).
- Lightning: `trainer.global_step`, with the opt-in callback
  `noam_plugin.integrations.lightning.NoamCountCheck`.

Frameworks that also count updates skipped by a GradScaler (fp16 AMP) count more than NoamLR
there; those routes only check that NoamLR does not count more.
"""

from __future__ import annotations

from typing import Any

from noam_plugin.errors import CountMismatchError

OFFSET_KEY = "noam_plugin_count_offset"  # in a DeepSpeed checkpoint's client state


def check_counts(
    noam: Any, theirs: int, *, framework: str, counter: str, route: str, offset: int = 0, at_most: bool = False
) -> None:
    """Raise CountMismatchError unless NoamLR's count + offset equals (at_most: is at most) the framework's."""
    ours = noam.updates + offset
    if ours == theirs or (at_most and ours <= theirs):
        return
    shown = f"{noam.updates}" + (f" (+ offset {offset} from before NoamLR took over = {ours})" if offset else "")
    raise CountMismatchError(
        f"NoamLR counted {shown} applied optimizer updates, {framework} counted {theirs} ({counter}), "
        f"compared at {route}. The lr of the updates since they parted is not the schedule's. Usual causes: a "
        "NoamLR state loaded from another run (load the checkpoint this run's framework state came from), or a "
        "framework version that steps the optimizer in a way noam-plugin does not know (see the supported "
        "versions in the README)."
    )
