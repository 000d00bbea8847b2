"""torch.distributed.checkpoint (DCP): a load planner that reads a scheduler state whole, whatever the template.

`dcp.load` fills the state dict it is given (the template) and reads nothing else. NoamLR's `state_dict()` has
the same keys whatever the parameters, so a template from a fresh NoamLR matches any state saved by this
version, and the default planner loads it whole. A state the template does not match is a state NoamLR
must still see whole to decide the resume as the torch route does (docs/CONTRACT.md section 4):

- a NoamLR state saved by noam-plugin before that layout (keys present only when set, amendments and groups as
  lists, which DCP splits into one value per entry);
- a torch `LambdaLR` or DeepSpeed `WarmupLR` state, whose count NoamLR adopts when a run switches to it.

`NoamLoadPlanner` swaps, for each NoamLR state in the template, the template's keys for exactly the keys the
checkpoint holds under the same name, so `NoamLR.load_state_dict` gets what was saved (and refuses or adopts
as it would from a `torch.save` file). Nothing saved under that name gives it an empty state: no scheduler state,
whose count the optimizer's loaded state proves, or one error (noam_plugin/rebuild.py). Usage (docs/fsdp.md):

    dcp.load({"app": app}, checkpoint_id=path, planner=NoamLoadPlanner())

Imported only when used: it imports torch.distributed.checkpoint.
"""

from __future__ import annotations

from typing import Any

from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import BytesStorageMetadata

from noam_plugin.errors import CheckpointError
from noam_plugin.names import SCHEDULER_NAME

__all__ = ["NoamLoadPlanner"]


def _container(root: dict, path: tuple) -> Any:
    for part in path:
        root = root[part]
    return root


class NoamLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, except that every NoamLR state in the template is read as it was saved (nothing
    saved: an empty dict)."""

    def set_up_planner(self, state_dict: Any, metadata: Any = None, is_coordinator: bool = False) -> None:
        super().set_up_planner(state_dict, metadata, is_coordinator)
        if metadata is None or not self.flatten_state_dict:
            return
        saved = metadata.state_dict_metadata
        saved_paths = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
        for fqn, path in list(self.mappings.items()):
            if path[-1] != "type" or self.state_dict.get(fqn) != SCHEDULER_NAME:
                continue
            prefix = fqn[: -len("type")]  # "app.scheduler."
            mine = [key for key in self.state_dict if key.startswith(prefix)]
            theirs = [key for key in saved if key.startswith(prefix)]
            if set(mine) == set(theirs):
                continue  # the same layout: DCP's own plan reads it whole
            name = prefix[:-1]
            where = getattr(getattr(metadata, "storage_meta", None), "checkpoint_id", None) or "the DCP checkpoint"
            tensors = [key for key in theirs if not isinstance(saved[key], BytesStorageMetadata)]
            if tensors:
                raise CheckpointError(
                    f"{where}: '{tensors[0]}' is a tensor; a scheduler state under '{name}' holds plain values only"
                )
            _container(self.original_state_dict, path[:-1]).clear()  # filled with what was saved, nothing else
            for key in mine:
                del self.state_dict[key], self.mappings[key]
            for key in theirs:
                saved_path = saved_paths.get(key)
                if not isinstance(saved_path, (tuple, list)) or tuple(map(str, saved_path[: len(path) - 1])) != tuple(
                    map(str, path[:-1])
                ):
                    saved_path = (*path[:-1], *key[len(prefix) :].split("."))
                self.state_dict[key] = None
                self.mappings[key] = tuple(saved_path)
