"""Read the schedule state out of saved checkpoints, without running any pickled code.

Behind `noam-plugin inspect`: users want to know where a run will resume (k, next lr),
with which parameters, and how many processes saved it, before they spend compute.
Knows DeepSpeed `save_checkpoint` folders (plain and universal), Accelerate `save_state`
folders (with or without DeepSpeed) and `torch.save` files (launch/train.py's, or a bare
`NoamLR.state_dict()`). Files are read with `torch.load(weights_only=True)`; Accelerate's
`random_states_*.pkl` are only counted, never unpickled.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noam_plugin.schedule import DEFAULT_UNIT, SCHEDULE_KEYS, NoamConfig, resume_changes, saved_params

DS_MODEL_STATES = "mp_rank_00_model_states.pt"
ACCELERATE_MARKERS = ("random_states_0.pkl", "scheduler.bin", "optimizer.bin", "model.safetensors", "pytorch_model.bin")


class CheckpointError(Exception):
    """What is wrong with the checkpoint, where, and what to do; printed as is."""


@dataclass
class CheckpointInfo:
    """The schedule-related facts of one checkpoint."""

    path: Path
    kind: str
    state: Any  # the scheduler state as saved; None when none was saved
    processes: int | None = None
    processes_from: str = ""
    global_steps: int | None = None
    skipped_steps: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_noam(self) -> bool:
        return isinstance(self.state, dict) and self.state.get("type") == "NoamLR"

    @property
    def params(self) -> dict[str, Any] | None:
        return saved_params(self.state) if self.is_noam else None

    def updates(self) -> tuple[int | None, str]:
        """k, and how it was found: NoamLR's count, or what NoamLR adopts from a foreign state."""
        s = self.state
        if self.is_noam:
            return int(s["updates"]), "NoamLR state"
        if isinstance(s, dict):
            from noam_plugin.scheduler import foreign_updates

            adopted = foreign_updates(s)
            if adopted is not None:
                return adopted
        if s is None and self.global_steps is not None:
            return self.global_steps - (self.skipped_steps or 0), "global_steps - skipped_steps"
        return None, ""


# ----------------------------------------------------------------------------- reading


def _load(file: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{file}: holds Python objects other than tensors and plain values; inspect reads with "
            f"torch.load(weights_only=True) and does not run pickled code ({first})"
        ) from None
    except Exception as error:  # truncated zip, not a torch file, permission...
        raise CheckpointError(f"{file}: cannot be read as a torch checkpoint (truncated, or not one): {error}") from None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _rank(name: str) -> int:
    match = re.search(r"(\d+)", name)
    return int(match.group(1)) if match else -1


def _newest_first(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (int(m.group(1)) if (m := re.search(r"(\d+)\D*$", p.name)) else -1, p.name), reverse=True)


def _looks_like_checkpoint(p: Path) -> bool:
    if p.is_file():
        return p.suffix in (".pt", ".pth", ".bin", ".ckpt")
    if not p.is_dir():
        return False
    names = {c.name for c in p.iterdir()}
    return bool(
        names & {"latest", "latest_universal", DS_MODEL_STATES, *ACCELERATE_MARKERS}
        or any(n.endswith("model_states.pt") for n in names)
    )


def _read_deepspeed(tag_dir: Path, how: str) -> CheckpointInfo:
    model_files = sorted(tag_dir.glob("*model_states.pt"))
    present = ", ".join(sorted(p.name for p in tag_dir.iterdir())) or "nothing"
    if not model_files:
        raise CheckpointError(
            f"{tag_dir}: partial DeepSpeed checkpoint: no {DS_MODEL_STATES} (found: {present}). "
            "The save was probably interrupted; inspect or resume from an earlier tag."
        )
    main = tag_dir / DS_MODEL_STATES
    if not main.exists():  # ZeRO-3 writes one zero_pp_rank_*_mp_rank_00_model_states.pt per rank
        main = min(model_files, key=lambda p: _rank(p.name))
    data = _load(main)
    if not isinstance(data, dict):
        raise CheckpointError(f"{main}: not a DeepSpeed model-states file (found a {type(data).__name__})")
    config = data.get("ds_config") if isinstance(data.get("ds_config"), dict) else {}
    stage = (config.get("zero_optimization") or {}).get("stage", 0) if isinstance(config.get("zero_optimization"), dict) else 0
    universal = (tag_dir / "zero").is_dir()
    kind = "DeepSpeed universal checkpoint" if universal else f"DeepSpeed ZeRO-{stage}" if stage else "DeepSpeed"
    info = CheckpointInfo(
        tag_dir, f"{kind}; {how}" if how else kind, data.get("lr_scheduler"),
        global_steps=data.get("global_steps"), skipped_steps=data.get("skipped_steps"),
    )
    dp = data.get("dp_world_size")
    optim_files = sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"))
    if optim_files and not universal:
        info.processes, info.processes_from = len(optim_files), _count(len(optim_files), "ZeRO optimizer file")
        if isinstance(dp, int) and len(optim_files) < dp:
            raise CheckpointError(
                f"{tag_dir}: partial DeepSpeed checkpoint: {len(optim_files)} of {dp} ZeRO optimizer files "
                "(*_optim_states.pt); the save did not finish. Use an earlier tag."
            )
    elif isinstance(dp, int):
        info.processes, info.processes_from = dp, "dp_world_size"
    if universal:
        info.notes.append("converted to universal: resumes on any number of processes with \"checkpoint\": {\"load_universal\": true}")
    if "lr_scheduler" not in data:
        info.notes.append(f"{main.name} has no 'lr_scheduler' entry")
    return info


def _read_accelerate(folder: Path) -> CheckpointInfo:
    randoms = sorted(folder.glob("random_states_*.pkl"))  # counted, never unpickled
    schedulers = sorted(folder.glob("scheduler*.bin"))
    count = (len(randoms), _count(len(randoms), "random_states_*.pkl file")) if randoms else (None, "")
    if (folder / "latest").is_file():  # Accelerate + DeepSpeed: the engine saved the scheduler in its own subfolder
        tag = (folder / "latest").read_text().strip()
        if not (folder / tag).is_dir():
            raise CheckpointError(f"{folder}: 'latest' names '{tag}', but {folder / tag} does not exist: partial checkpoint")
        info = _read_deepspeed(folder / tag, f"DeepSpeed engine folder '{tag}'")
        info.path, info.kind = folder, "Accelerate + " + info.kind
        if count[0] is not None:
            info.processes, info.processes_from = count[0], count[1] + (f", {info.processes_from}" if info.processes_from else "")
        return info
    if not schedulers:
        found = ", ".join(sorted(p.name for p in folder.iterdir()))
        raise CheckpointError(
            f"{folder}: Accelerate checkpoint without scheduler state (found: {found}). It was saved without a "
            "scheduler passed to accelerator.prepare(); NoamLR cannot tell from it how many updates were applied."
        )
    info = CheckpointInfo(folder, "Accelerate save_state", _load(schedulers[0]), *count)
    if len(schedulers) > 1:
        info.notes.append(f"{len(schedulers)} scheduler files; showing {schedulers[0].name}")
    return info


def _read_torch_file(file: Path) -> CheckpointInfo:
    data = _load(file)
    if isinstance(data, dict) and data.get("type") == "NoamLR":
        info = CheckpointInfo(file, "torch.save of NoamLR.state_dict()", data)
    elif isinstance(data, dict) and any(k in data for k in ("scheduler", "lr_scheduler")):
        key = "scheduler" if "scheduler" in data else "lr_scheduler"
        info = CheckpointInfo(file, f"torch.save file (scheduler state under '{key}')", data[key])
        if isinstance(data.get("world_size"), int):
            info.processes, info.processes_from = data["world_size"], "world_size in the file"
    elif isinstance(data, dict) and ("last_epoch" in data or "last_batch_iteration" in data):
        info = CheckpointInfo(file, "torch.save of a scheduler state", data)
    else:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{file}: no scheduler state in this file (found: {keys})")
    return info


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Find the checkpoint at `path` (a file, a checkpoint folder, or a folder of checkpoints) and read it."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"{p}: no such file or folder. Give the folder passed to engine.save_checkpoint() or "
            "accelerator.save_state(), one checkpoint inside it, or a torch.save file."
        )
    if p.is_file():
        return _read_torch_file(p)
    names = {c.name for c in p.iterdir()}
    if names & set(ACCELERATE_MARKERS) or any(n.startswith("random_states_") for n in names):
        return _read_accelerate(p)
    if "latest" in names or ("latest_universal" in names and not any(n.endswith("model_states.pt") for n in names)):
        pointer = "latest" if "latest" in names else "latest_universal"
        tag = (p / pointer).read_text().strip()
        if not (p / tag).is_dir():
            others = [c.name for c in _newest_first([c for c in p.iterdir() if c.is_dir()])]
            hint = f" Checkpoints here: {', '.join(others)}." if others else ""
            raise CheckpointError(f"{p}: '{pointer}' names '{tag}', but {p / tag} does not exist: partial or moved checkpoint.{hint}")
        return _read_deepspeed(p / tag, f"tag '{tag}' from '{pointer}'")
    if any(n.endswith("model_states.pt") or n.endswith("optim_states.pt") for n in names):
        return _read_deepspeed(p, "")
    if (p / "checkpoints").is_dir():  # a launch/train.py output folder
        return read_checkpoint(p / "checkpoints")
    candidates = _newest_first([c for c in p.iterdir() if not c.name.endswith(".tmp") and _looks_like_checkpoint(c)])
    if candidates:
        info = read_checkpoint(candidates[0])
        if len(candidates) > 1:
            info.notes.append(f"newest of {len(candidates)} checkpoints in {p}")
        return info
    found = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "") if names else "an empty folder"
    raise CheckpointError(
        f"{p}: not a DeepSpeed, Accelerate or torch checkpoint (found: {found}). Expected a 'latest' file and "
        f"tag folders (DeepSpeed), {DS_MODEL_STATES}, or scheduler.bin and random_states_*.pkl (Accelerate)."
    )


# ----------------------------------------------------------------------------- reporting


def _params_text(params: dict[str, Any]) -> str:
    shown = [k for k in SCHEDULE_KEYS if params.get(k) is not None and not (k == "warmup_unit" and params[k] == DEFAULT_UNIT)]
    return " ".join(f"{k}={params[k]}" for k in shown)


def _counter_lines(state: dict[str, Any], unit: str) -> list[str]:
    """The data seen and the global batch at save; older states (or uncounted runs) lack them."""
    lines = []
    for key in ("samples", "tokens"):
        seen = state.get(key)
        mark = "  (the warmup_unit: the lr follows this count)" if key == unit else ""
        lines.append(f"{key:<12} {'not counted' if seen is None else f'{seen} seen'}{mark}")
    batch = state.get("samples_per_update")
    lines.append(f"batch        {'not recorded' if batch is None else f'{batch} samples per update at save'} (samples_per_update)")
    return lines


def _next_lr(config: NoamConfig, state: dict[str, Any]) -> tuple[float | None, str]:
    """The lr of the update after the save under `config` (None until the update's tokens are known), and how it follows."""
    unit = config.warmup_unit
    if unit == "updates":
        k = int(state["updates"])
        return config.lr(k + 1), f"lr({k + 1})"
    seen = state.get(unit)
    if seen is None:
        raise CheckpointError(f"this state has no count of the {unit} seen (NoamLR with warmup_unit {unit} refuses to resume from it)")
    last = f"the last update's lr was lr({seen}) = {config.lr(seen):.6g}" if seen >= 1 else "no update applied yet"
    batch = state.get("samples_per_update")
    if unit == "samples" and batch is not None:
        return config.lr(seen + batch), f"lr({seen} + {batch}) = lr({seen + batch}), if the global batch stays {batch}"
    if unit == "samples":
        return None, f"lr({seen} + N) for a global batch of N (not recorded at save); {last}"
    return None, f"depends on the next update's tokens: lr({seen} + its tokens); {last}"


def _foreign_text(state: Any) -> str:
    if state is None:
        return "none saved"
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a scheduler state"
    if "last_batch_iteration" in state:
        return f"not NoamLR: a DeepSpeed scheduler state (WarmupLR and the like; last_batch_iteration={state['last_batch_iteration']})"
    if "last_epoch" in state:
        return f"not NoamLR: a torch scheduler state (LambdaLR and the like; last_epoch={state['last_epoch']})"
    return f"not NoamLR and not one NoamLR can adopt (keys: {', '.join(sorted(map(str, state)))})"


def report(info: CheckpointInfo, config: NoamConfig | None = None, config_path: str | None = None) -> tuple[list[str], int]:
    """Lines to print and the exit status: 0 for a NoamLR state that agrees with the config (if any)."""
    lines = [f"checkpoint   {info.path}  ({info.kind})"]
    k, how = info.updates()
    steps = ""
    if info.global_steps is not None:
        steps = f"; DeepSpeed global_steps {info.global_steps}, skipped {info.skipped_steps or 0}"
    status = 0
    if info.is_noam:
        params = info.params
        lines.append(f"schedule     NoamLR  {_params_text(params)}")
        lines.append(f"k            {k} optimizer updates applied{steps}")
        lines += _counter_lines(info.state, params["warmup_unit"])
        try:
            saved_config = NoamConfig(**params)
            lines.append(f"cooldown     {saved_config.describe_cooldown()}")
            lr, why = _next_lr(saved_config, info.state)
        except (ValueError, TypeError) as error:
            lines.append(f"next lr      unknown: the saved parameters are not valid ({error})")
            status = 1
        except CheckpointError as error:
            lines.append(f"next lr      unknown: {error}")
            status = 1
        else:
            where = ", the formula with these parameters" if params["warmup_unit"] == "updates" else ""
            lines.append(f"next lr      {why}" if lr is None else f"next lr      {lr:.6g}  ({why}{where})")
    else:
        lines.append(f"schedule     {_foreign_text(info.state)}")
        if k is None:
            lines.append("k            unknown: NoamLR cannot tell how many updates were applied")
        else:
            lines.append(f"k            NoamLR adopts {k} when it loads this checkpoint ({how}){steps}")
            if config is not None and config.warmup_unit == "samples":
                lines.append(f"next lr      lr({k + 1} * N) under {config_path} for a global batch of N ({k} * N samples seen)")
            elif config is not None and config.warmup_unit == "tokens":
                lines.append(f"next lr      none: {config_path} counts warmup in tokens and this checkpoint has no token count")
            elif config is not None:
                lines.append(f"next lr      {config.lr(k + 1):.6g}  (lr({k + 1}) under {config_path})")
            else:
                lines.append("next lr      depends on the NoamLR parameters: add --config PATH to see it")
        status = 1
    saved_world = info.state.get("world_size") if info.is_noam else None
    if info.processes is not None:
        extra = ""
        if isinstance(saved_world, int) and saved_world != info.processes:
            extra = f"; the NoamLR state says {saved_world}"
        lines.append(f"processes    {info.processes} at save ({info.processes_from}{extra})")
    elif isinstance(saved_world, int):
        lines.append(f"processes    {saved_world} at save (world_size in the NoamLR state)")
    else:
        lines.append("processes    not recorded")
    lines += [f"note         {note}" for note in info.notes]

    if config is not None and info.is_noam:
        now = config.schedule_params
        # the decision NoamLR.load_state_dict takes: a cooldown decided at resume is no difference
        differing, notes = resume_changes(info.params, config, info.state.get(config.warmup_unit))
        if notes:
            lines.append(f"config       {config_path}: {config.describe_cooldown()}")
            lines.append(f"  {notes[0].removeprefix('NoamLR: ')}")
            try:
                lr, why = _next_lr(config, info.state)
                lines.append(f"  resuming with this config: next lr {why if lr is None else f'{lr:.6g} ({why})'}")
            except CheckpointError as error:
                lines.append(f"  next lr unknown: {error}")
        elif not differing:
            how = f"lr({k + 1})" if config.warmup_unit == "updates" else "the next lr above"
            lines.append(f"config       {config_path}: same schedule parameters; resuming continues with {how}")
        else:
            lines.append(f"config       {config_path}: {len(differing)} difference(s):")
            lines += [f"  {key}: checkpoint {info.params[key]!r}, config {now.get(key)!r}" for key in differing]
            if config.allow_param_change:
                try:
                    lr, why = _next_lr(config, info.state)
                    after = why if lr is None else f"{lr:.6g}" + ("" if config.warmup_unit == "updates" else f" ({why})")
                except CheckpointError as error:
                    after = f"unknown: {error}"
                lines.append(f"  the config sets allow_param_change: true, so a resume continues the new schedule from k={k}: next lr {after}")
            else:
                lines.append("  resuming with this config stops with an error naming these keys, unless the config sets scheduler.params.allow_param_change: true")
            status = 1
    elif not info.is_noam:
        lines.append("verdict      not a NoamLR checkpoint; NoamLR takes over its step count on load (see README: migrating)"
                     if k is not None else "verdict      not a NoamLR checkpoint")
    return lines, status


def inspect_command(checkpoint_dir: str, config_path: str | None) -> int:
    """`noam-plugin inspect`: print the schedule state; 1 on a problem or a difference from --config."""
    config = None
    if config_path is not None:
        from noam_plugin.errors import ConfigError

        try:
            from noam_plugin.config import load_config

            config = load_config(config_path)
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 1
    try:
        info = read_checkpoint(checkpoint_dir)
    except CheckpointError as error:
        print(f"noam-plugin inspect: {error}", file=sys.stderr)
        return 1
    lines, status = report(info, config, config_path)
    print("\n".join(lines))
    return status
