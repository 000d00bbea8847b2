"""`noam-plugin amend`: steer a run at a checkpoint without rewriting its past (docs/CONTRACT.md section 4).

Reads the schedule and the count of a checkpoint (and its history of amendments), adds the asked-for
amendment(s) at the count, checks the result the way a resume will, and prints the params to resume with,
the curve from the checkpoint on and, with --plot, the whole history with each amendment marked.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from noam_plugin.amendments import flow, history_lines
from noam_plugin.checkpoint import CheckpointError, CheckpointInfo, read_checkpoint
from noam_plugin.config import PARAMS_PREFIX, read_scheduler_block
from noam_plugin.errors import ConfigError, shorten, visible
from noam_plugin.names import DEFAULT_COOLDOWN, SCHEDULER_NAME, UPDATES
from noam_plugin.render import Axis, ascii_curve, params_text, plot_curve, png_path
from noam_plugin.resume import plan_resume, validate_state
from noam_plugin.safe_io import MAX_GROUPS, MAX_LISTED
from noam_plugin.schedule import COOLDOWN_TYPES, HISTORY_KEY, MAX_INT, NoamConfig


def checkpoint_schedule(checkpoint: str, config_path: str | None) -> tuple[CheckpointInfo, NoamConfig, int]:
    """(what the checkpoint holds, the schedule a resume starts from, the count in its warmup_unit).

    The schedule is --config's when given (the config the run resumes with), else the checkpoint's own.
    """
    try:
        info = read_checkpoint(checkpoint)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    if info.is_noam:  # the one check inspect and load_state_dict make: no traceback on a bad state
        validate_state(info.state, info.source or str(info.path))
    if config_path:
        block = read_scheduler_block(config_path)
        base = NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)
    elif info.is_noam:
        base = NoamConfig(**info.params)
    else:
        raise ValueError(
            f"{checkpoint}: holds no NoamLR state, so its schedule is unknown: add --config PATH "
            "(the config the run resumes with)"
        )
    unit = base.warmup_unit
    count = info.state.get(unit) if info.is_noam else info.updates()[0] if unit == UPDATES else None
    if count is None:
        raise ValueError(
            f"{checkpoint}: no count of the {unit} seen in this checkpoint (warmup_unit {unit}); give --config "
            f"with the warmup_unit the run counted in (noam-plugin inspect {checkpoint} shows the counts saved)"
        )
    return info, base, count


def resume_problems(info: CheckpointInfo, config: NoamConfig, count: int) -> list[str]:
    """What a resume from `info` with `config` would refuse (one line each); [] when it loads: the plan
    NoamLR.load_state_dict applies (noam_plugin/resume.py)."""
    if not info.is_noam:
        return []
    return plan_resume(info.state, config, source=info.source or str(info.path)).problem_lines()


def resume_params(config: NoamConfig) -> dict[str, Any]:
    """The params block to resume with: every value that differs from its default, amendments last."""
    params = {k: v for k, v in config.schedule_params.items() if v is not None}
    if params.get("warmup_unit") == UPDATES:
        del params["warmup_unit"]
    if params.get("factor") == 1.0:
        del params["factor"]
    if config.allow_param_change:
        params["allow_param_change"] = True
    if HISTORY_KEY in params:
        params[HISTORY_KEY] = params.pop(HISTORY_KEY)
    return params


def known_selectors(config: NoamConfig) -> set[str | int]:
    """The group names and indices a schedule names (its overrides and amendments): all `amend` can know of the
    param groups, whose names a checkpoint does not keep."""
    return {o.value for o in config.groups} | {s for a in config.amendments for s in a.groups or ()}


def parse_groups(text: str | None, known: set[str | int], names: list[Any] | None = None) -> list[str | int] | None:
    """`--groups`, read strictly: names and indices separated by commas; `name:X` and `index:N` say which.

    A bare entry of ASCII digits is an index, unless a group is named so (then it is ambiguous); any other
    bare entry is a name. With the param groups' names saved in the checkpoint (`names`: Accelerate's
    optimizer.bin), every name and index must be one of them. An empty entry, a control character, or an index past
    2**63 - 1 is refused; nothing becomes another selection. Where neither can tell, a name is kept and the output
    says so (NoamLR checks it against the optimizer when the run resumes)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) > MAX_GROUPS:
        raise ValueError(f"--groups: at most {MAX_GROUPS} names or indices, found {len(parts):,}")
    out: list[str | int] = []
    unchecked: list[str] = []
    for raw in parts:
        part = raw.strip(" ")
        shown = shorten(ascii(part), 120)
        if not part:
            raise ValueError(
                f"--groups {shorten(ascii(text), 120)}: an empty entry; give names or indices separated by commas, "
                "e.g. --groups emb,2 (leave --groups out to amend every group)"
            )
        if visible(part) != part:
            raise ValueError(f"--groups: {shown} holds a control or invisible character; not a group name")
        if part.startswith("index:"):
            digits = part[len("index:") :]
            if not re.fullmatch(r"[0-9]{1,19}", digits) or int(digits) > MAX_INT:
                raise ValueError(f"--groups: {shown}: expected index:N with N an int >= 0 (ASCII digits)")
            selector: str | int = int(digits)
        elif part.startswith("name:"):
            selector = part[len("name:") :]
            if not selector:
                raise ValueError(f"--groups: {shown}: expected name:X with a non-empty name X")
        elif re.fullmatch(r"[0-9]+", part):
            if part in known or part in (names or ()):
                raise ValueError(
                    f"--groups {part}: ambiguous: the schedule names a group {part!r}, and {part} is also an index; "
                    f"write name:{part} or index:{part}"
                )
            if len(part) > 19 or int(part) > MAX_INT:
                raise ValueError(f"--groups: {shorten(part, 60)}: an index of at most 2**63 - 1")
            selector = int(part)
        else:
            selector = part
            if selector not in known and names is None:
                unchecked.append(selector)
        if selector in out:
            raise ValueError(f"--groups: {shown} twice")
        if names is not None and selector not in names and not (isinstance(selector, int) and selector < len(names)):
            listed = ", ".join(f"{i} {ascii(n)}" for i, n in enumerate(names[:MAX_LISTED]))
            what = "at index" if isinstance(selector, int) else "named"
            raise ValueError(
                f"--groups {shown}: the optimizer saved in this checkpoint has {len(names)} param groups "
                f"({listed}{', ...' if len(names) > MAX_LISTED else ''}); none is {what} "
                f"{selector if isinstance(selector, int) else shown}"
            )
        out.append(selector)
    if unchecked:  # said in the output: NoamLR checks them against the optimizer when the run resumes
        shown = ", ".join(shorten(ascii(n), 60) for n in unchecked[:MAX_LISTED])
        print(
            f"# note: this checkpoint keeps no param group names and the schedule names no group {shown}: "
            "NoamLR refuses the amendment at resume if the optimizer has no group named so"
        )
    return out


def new_amendments(
    args: argparse.Namespace, at: int, known: set[str | int] = frozenset(), names: list[Any] | None = None
) -> list[dict[str, Any]]:
    """The amendments asked for on the command line, as config entries (checked when the config is built)."""
    groups = parse_groups(args.groups, set(known), names)
    extra = {"groups": groups} if groups else {}
    out: list[dict[str, Any]] = []
    if args.scale is not None:
        out.append({"at": at, "scale": args.scale, **extra})
    if args.rewarm is not None:
        out.append({"at": at, "rewarm_num_steps": args.rewarm, **extra})
    if args.cooldown is not None or args.total is not None:
        tail: dict[str, Any] = {"at": at}
        if args.total is not None:
            tail["total_num_steps"] = args.total
        if args.cooldown is not None:
            tail.setdefault("total_num_steps", at + args.cooldown)
            tail.update(cooldown_num_steps=args.cooldown, cooldown_type=args.type)
        if args.min_lr is not None:
            tail["cooldown_min_lr"] = args.min_lr
        out.append({**tail, **extra})
    if not out:
        raise ValueError("amend: nothing to add: give --scale F, --rewarm R, --cooldown N or --total T")
    if args.cooldown is None and (args.type != DEFAULT_COOLDOWN or args.min_lr is not None):
        raise ValueError("amend: --type and --min-lr shape a cooldown: add --cooldown N")
    return out


def _positions(config: NoamConfig, count: int, at: int, end: int) -> list[int]:
    """The table's rows: the checkpoint, where each new amendment starts and ends, and the end drawn."""
    marks = {count, at, at + 1, end}
    for a in config.amendments:
        if a.at >= at:
            marks.add(a.at + 1)
            if a.rewarm_num_steps is not None:
                marks.update({a.at + (a.rewarm_num_steps + 1) // 2, a.at + a.rewarm_num_steps})
    tail = config.config_at(end)
    if tail.cooldown_num_steps is not None:
        s, t = tail.cooldown_start, tail.total_num_steps
        marks.update({s + 1, (s + t) // 2, t, t + 1})
    return sorted(k for k in marks if 1 <= k <= min(end, MAX_INT))


def _end(config: NoamConfig, count: int, at: int) -> int:
    """Where the picture stops: past the cooldown in force at the end, or well past the last change."""
    last = config.config_at(MAX_INT)
    if last.cooldown_num_steps is not None:
        return min(MAX_INT, max(at + 1, last.total_num_steps + max(1, last.cooldown_num_steps // 10)))
    reach = max([a.at + (a.rewarm_num_steps or 0) for a in config.amendments] + [at])
    return min(MAX_INT, max(2 * count, reach + (reach - count) + 1, count + config.warmup_num_steps))


def cmd_amend(args: argparse.Namespace) -> int:
    info, base, count = checkpoint_schedule(args.checkpoint_dir, args.config)
    u, unit = base.unit_name, base.warmup_unit
    at = count if args.at is None else args.at
    if at < count:
        raise ValueError(
            f"{args.checkpoint_dir}: --at {at} is below the checkpoint's count {count}: {u}s {at + 1}-{count} "
            f"already ran; an amendment starts at or after the count (--at {count}, the default)"
        )
    history = [a.as_dict() for a in base.amendments]
    added = new_amendments(args, at, known_selectors(base), info.group_names)
    # The history stays in order of at: a new amendment goes after those at or before its count, before later ones
    # (a future amendment already planned stays where it is).
    entries = sorted(
        [(a["at"], 0, i, a) for i, a in enumerate(history)] + [(a["at"], 1, i, a) for i, a in enumerate(added)]
    )
    source = f"amend {args.checkpoint_dir}"
    merged = [a for _, _, _, a in entries]
    params = {**base.schedule_params, "allow_param_change": base.allow_param_change, HISTORY_KEY: merged}
    try:
        config = NoamConfig.from_params(params, source=source, prefix="")
    except ConfigError as err:
        raise ConfigError(source, err.problems) from None
    problems = resume_problems(info, config, count)
    if problems:
        instead = (
            f"the config given differs from the checkpoint's: noam-plugin inspect {args.checkpoint_dir} --config "
            f"{args.config} names the differences; without --config, amend starts from the checkpoint's own"
            if args.config
            else f"noam-plugin inspect {args.checkpoint_dir} shows the schedule and history saved"
        )
        raise ValueError(
            f"{args.checkpoint_dir}: resuming with these amendments would change updates already applied "
            f"({'; '.join(problems)}); {instead}"
        )
    new = [config.amendments[j] for j, (_, is_new, _, _) in enumerate(entries) if is_new]
    where = f"{u} {count}" + (" (updates applied)" if unit == UPDATES else f" ({unit} seen)")
    print(f"# {args.checkpoint_dir}: saved at {where}, next lr {base.lr(count + 1):.6g} before this amendment")
    for line in history_lines(base.amendments, u, "# history: ", pad="#          "):
        print(line)
    for a in new:
        print(f"# new:  {flow(a)}  {a.text(u)}")
    print(
        "# resume with these params (a DeepSpeed JSON takes the same keys in scheduler.params: "
        f'"amendments": {json.dumps([a.as_dict() for a in config.amendments])})'
    )
    block = {"scheduler": {"type": SCHEDULER_NAME, "params": resume_params(config)}}
    print(yaml.safe_dump(block, sort_keys=False, default_flow_style=None, width=120), end="")
    end = min(MAX_INT, args.steps or _end(config, count, at))
    axis = Axis(config, unit)
    print()
    positions = _positions(config, count, at, end)
    if per_group(config) or per_group(base):
        print("\n".join(group_before_after(config, base, positions, count)))
    else:
        print(f"{u:>10}  {'lr':>11}  {'before':>11}")
        for k in positions:
            note = "  (the checkpoint: last update applied)" if k == count else ""
            print(f"{k:>10}  {axis.lr(k):>11.4e}  {base.lr(k):>11.4e}{note}")
    print()
    print("\n".join(ascii_curve(axis, end, first=max(1, count))))
    if args.plot:
        marks = amendment_marks(config, u, count)
        title = f"{Path(args.checkpoint_dir).name}: NoamLR with its amendments\n{params_text(config)}"
        plot_curve(axis, end, title, args.plot, marks=marks, before=Axis(base, unit))
        print(f"\nplot written to {args.plot}")
    return 0


def per_group(config: NoamConfig) -> bool:
    """Do some param groups follow another curve than the main one (overrides, amendments for some groups)?"""
    return bool(config.groups) or any(a.groups is not None for a in config.amendments)


def group_before_after(config: NoamConfig, base: NoamConfig, positions: list[int], count: int) -> list[str]:
    """The amend table per kind of param group (groups.group_kinds of both schedules): its lr with the new
    amendments and before them, each read from the curve NoamLR writes for such a group; at most MAX_LISTED."""
    from noam_plugin.groups import group_kinds, kind_curve

    kinds = list(dict.fromkeys(group_kinds(config) + group_kinds(base)))
    lines = [f"param groups: {len(kinds)} kinds"] + [
        f"  {chr(65 + i)}: {k.label}" for i, k in enumerate(kinds[:MAX_LISTED])
    ]
    if len(kinds) > MAX_LISTED:
        lines.append(f"  ... and {len(kinds) - MAX_LISTED} more kinds not shown (at most {MAX_LISTED} are)")
    shown = kinds[:MAX_LISTED]
    curves = [(kind_curve(config, k), kind_curve(base, k)) for k in shown]
    unit = config.unit_name
    head = f"{unit:>10}  " + "  ".join(
        f"{chr(65 + i) + ' lr':>11}  {chr(65 + i) + ' before':>11}" for i in range(len(shown))
    )
    lines += ["", head]
    for k in positions:
        row = "  ".join(f"{c.lr(k) * s:>11.4e}  {b.lr(k) * bs:>11.4e}" for (c, s), (b, bs) in curves)
        lines.append(f"{k:>10}  {row}" + ("  (the checkpoint: last update applied)" if k == count else ""))
    return lines


def amendment_marks(config: NoamConfig, unit_name: str, count: int | None = None) -> list[tuple[int, str]]:
    """Where each amendment starts (and the checkpoint), labelled (one label per count), for a plot."""
    labels: dict[int, list[str]] = {}
    for a in config.amendments:
        labels.setdefault(a.at, []).append(a.text(unit_name))
    if count is not None:
        labels.setdefault(count, []).insert(0, f"checkpoint ({unit_name} {count})")
    return [(x, ";\n".join(texts)) for x, texts in sorted(labels.items())]


def _count(text: str) -> int:
    """The argparse type of --at: a count, an int from 0 to 2**63 - 1 in ASCII digits."""
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()) or int(text) > MAX_INT:
        raise argparse.ArgumentTypeError(
            f"expected a count: an int >= 0 and at most 2**63 - 1, found {shorten(ascii(text), 60)}"
        )
    return int(text)


def add_amend_parser(sub: Any, positive_int: Any, nonnegative_float: Any, positive_float: Any, what: str) -> None:
    p = sub.add_parser(
        "amend",
        help="params that amend the schedule from a checkpoint on (scale, re-warm, cooldown), and the curve",
    )
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help=what)
    p.add_argument("--scale", type=positive_float, metavar="F", help="run every later update at F times its lr")
    p.add_argument(
        "--rewarm", type=positive_int, metavar="R", help="climb back to the curve linearly over the next R steps"
    )
    p.add_argument("--cooldown", type=positive_int, metavar="N", help="a cooldown over the next N steps")
    p.add_argument(
        "--type", choices=COOLDOWN_TYPES, default=DEFAULT_COOLDOWN, help="the cooldown's shape (default: linear)"
    )
    p.add_argument("--min-lr", type=nonnegative_float, metavar="LR", help="cooldown_min_lr (default 0)")
    p.add_argument(
        "--total",
        type=positive_int,
        metavar="T",
        help="move total_num_steps (the planned end) to T; with a cooldown in force, it moves with it",
    )
    p.add_argument(
        "--at",
        type=_count,
        metavar="N",
        help="the count it starts after, in the warmup's unit (default: the checkpoint's; never below it)",
    )
    p.add_argument(
        "--groups",
        metavar="NAME,INDEX,...",
        help="only these param groups: names or indices, or name:X / index:N to say which (a name the schedule "
        "does not name yet needs name:X)",
    )
    p.add_argument(
        "--config", metavar="PATH", help="the config the run resumes with (default: the checkpoint's parameters)"
    )
    p.add_argument("--steps", type=positive_int, metavar="N", help="last position drawn")
    p.add_argument(
        "--plot", type=png_path, metavar="FILE.png", help="draw the whole history, each amendment marked (matplotlib)"
    )
    p.set_defaults(handler=cmd_amend)
