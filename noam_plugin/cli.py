"""`noam-plugin` command line: check config files and look at the curve before training.

Errors are printed as one clear message (no traceback) with exit status 1 (bad input);
argparse usage errors keep their usual status 2; Ctrl-C ends with one line and status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from noam_plugin.amend import add_amend_parser, amendment_marks, checkpoint_schedule, resume_params, resume_problems
from noam_plugin.amendments import history_lines
from noam_plugin.checkpoint import CheckpointError, read_checkpoint
from noam_plugin.config import AUTO_KEYS, PARAMS_PREFIX, check_with_auto, load_config, read_scheduler_block
from noam_plugin.errors import CheckpointError as _CheckpointError
from noam_plugin.errors import ConfigError, Problem, StateError, shorten, visible
from noam_plugin.examples import add_init_parser
from noam_plugin.names import DEFAULT_COOLDOWN, SCHEDULER_NAME, UPDATES
from noam_plugin.render import (
    Axis,
    ascii_curve,
    axis_for,
    checkpoint_report,
    default_positions,
    describe,
    formula_lines,
    number,
    params_text,
    plot_curve,
    png_path,
    tail_positions,
)
from noam_plugin.render_groups import cooled_groups, show_groups
from noam_plugin.resume import validate_state
from noam_plugin.safe_io import MAX_LISTED
from noam_plugin.schedule import COOLDOWN_KEYS, COOLDOWN_TYPES, HISTORY_KEY, MAX_INT, WARMUP_UNITS, NoamConfig


def _auto_error(err: ConfigError, hint: str) -> ConfigError:
    """Say what "auto" is, where a value left "auto" is why the file failed."""
    problems = [
        Problem(p.key, p.expected, f"str 'auto' ({hint.format(key=p.key.rsplit('.', 1)[-1])})")
        if p.found.startswith("str 'auto'")
        else p
        for p in err.problems
    ]
    return ConfigError(err.source, problems)


# who fills NoamLR's "auto" keys, from what: Accelerate (DummyScheduler) and the HF Trainer (TrainingArguments)
_AUTO_SOURCE = {
    "warmup_num_steps": ("DummyScheduler(warmup_num_steps=...)", "warmup_steps (required)"),
    "warmup_max_lr": ("the optimizer's lr", "learning_rate"),
    "total_num_steps": ("DummyScheduler(total_num_steps=...)", "max_steps"),
}


def _auto_summary(block, auto: tuple[str, ...]) -> str:
    """Who fills the "auto" keys of this file, worded for the route it is for."""
    accelerate = "; ".join(_AUTO_SOURCE[k][0] for k in auto)
    if block.via_accelerate:
        return f"Accelerate fills them at prepare() from {accelerate}"
    trainer = ", ".join(_AUTO_SOURCE[k][1] for k in auto)
    return (
        f"TrainingArguments(deepspeed=this file) fills them from {trainer}; "
        f"accelerate launch with this file, at prepare() from {accelerate}"
    )


_ROUTE_NAMES = {"lightning-cli": " (LightningCLI lr_scheduler)", "hydra": " (Hydra _target_, _partial_)"}


def _validate_one(path: str, allow_auto: bool) -> str:
    """A file passes if NoamLR would accept it on the route it is for; "auto" is for the HF Trainer and Accelerate,
    which fill it: allowed with --allow-auto, in a file an Accelerate config names, and in a DeepSpeed config that
    has "auto" elsewhere too (only the Trainer or Accelerate read such a file)."""
    block = read_scheduler_block(path)
    via = f" from {block.file}" if block.via_accelerate else _ROUTE_NAMES.get(block.route, "")
    if block.route == "deepspeed" and (allow_auto or block.via_accelerate or block.auto_elsewhere):
        auto = check_with_auto(block)
        if auto:
            return f'NoamLR{via}; "auto" {", ".join(auto)}: {_auto_summary(block, auto)}'
    try:
        config = NoamConfig.from_params(block.params, source=block.source, prefix=block.prefix)
    except ConfigError as err:
        if block.route != "deepspeed":
            raise
        filled = " and ".join(AUTO_KEYS)
        hint = f'the HF Trainer and Accelerate fill "auto" in {filled}; check a config meant for them with --allow-auto'
        raise _auto_error(err, hint) from None
    return f"NoamLR{via}: {describe(config)}"


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        try:
            summary = _validate_one(path, args.allow_auto)
        except ConfigError as err:
            print(err, file=sys.stderr)
            failed += 1
        else:
            print(f"ok  {path}  ({summary})")
    if len(args.paths) > 1:
        print(f"{len(args.paths) - failed} of {len(args.paths)} valid", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def _filled(block, settings: list[tuple[str, int | float]]) -> dict:
    """The params with the "auto" values --set gives (a preview of what the Trainer or Accelerate will fill in).

    Only an "auto" value is filled: a --set of a key the file gives would preview another schedule than the file's."""
    params = dict(block.params)
    for key, value in settings:
        if key not in AUTO_KEYS:
            raise ValueError(f'show --set {key}=...: --set fills only the "auto" keys, {", ".join(AUTO_KEYS)}')
        if params.get(key) != "auto":
            found = "nothing" if key not in params else repr(params[key])
            raise ValueError(
                f'{block.source}: --set {key}=...: {PARAMS_PREFIX}{key} is not "auto" in this file '
                f'(found {found}); --set fills only "auto" values, edit the file to change it'
            )
        params[key] = value
    return params


def cmd_show(args: argparse.Namespace) -> int:
    block = read_scheduler_block(args.path)
    params = _filled(block, args.set or [])
    try:
        config = NoamConfig.from_params(params, source=block.source, prefix=PARAMS_PREFIX)
    except ConfigError as err:
        hint = "the HF Trainer or Accelerate fills it at run time; preview with show --set {key}=VALUE"
        raise _auto_error(err, hint) from None
    axis = axis_for(config, args.unit, args.per_update)
    last = config.config_at(MAX_INT)  # the tail in force at the end (amendments may move it)
    end, after = last.cooldown_end, max([a.at for a in config.amendments], default=0)
    if end is None:
        default_end = max(10 * config.warmup_num_steps, 2 * after)
    else:
        default_end = end + max(1, last.cooldown_num_steps // 10)
    steps = args.steps or axis.position(default_end)
    marked = config.amendments[:MAX_LISTED]  # rows where the first amendments start (a long history: not each)
    extra = tail_positions(last, axis) + tuple(axis.position(a.at) + d for a in marked for d in (0, 1))
    positions = args.at or default_positions(axis.peak, steps, extra)
    print(f"{args.path}: NoamLR, {describe(config)}")
    if args.set:
        print("preview with " + ", ".join(f"{k}={v}" for k, v in args.set) + ' for "auto" (filled at run time)')
    print("\n".join(formula_lines(config, axis)))
    inside = f" (warmup ends inside it, at {number(axis.warmup)} updates)" if axis.peak_inside else ""
    print(f"peak: {axis.name} {axis.peak}{inside}, lr {axis.lr(axis.peak):.4e}")
    if config.cooldown_num_steps is not None or config.total_num_steps is not None:
        print(f"cooldown: {config.describe_cooldown()}")
    if last is not config:
        at = max(a.at for a in config.amendments if a.tail)
        print(f"cooldown from {config.unit_name} {at + 1} on (an amendment): {last.describe_cooldown()}")
    scale = config.scale_at(MAX_INT)
    if scale != 1.0:
        print(f"scale: the amendments' scales multiply to {scale:g} at the end (the lr values below include it)")
    if config.amendments:
        print("\n".join(history_lines(config.amendments, config.unit_name, "amendments: ")))
    print()
    print(f"{axis.name:>10}  {'lr':>11}  {'of peak':>8}")
    for k in positions:
        lr = axis.lr(k)
        print(f"{k:>10}  {lr:>11.4e}  {100 * lr / config.peak_lr:>7.1f}%")
    print()
    title = f"{Path(block.file).name}: NoamLR\n{params_text(config)}"
    if config.groups or any(a.groups is not None for a in config.amendments):  # a curve per kind of group
        show_groups(config, axis, positions, steps, (args.plot, title) if args.plot else None)
        return 0
    print("\n".join(ascii_curve(axis, steps)))
    if args.plot:
        marks = [(axis.position(x), text) for x, text in amendment_marks(config, config.unit_name)]
        plot_curve(axis, steps, title, args.plot, marks=marks)
        print(f"\nplot written to {args.plot}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """`noam-plugin inspect`: print the schedule state; 1 on a problem or a difference from --config."""
    config = load_config(args.config) if args.config is not None else None
    try:
        info = read_checkpoint(args.checkpoint_dir)
        if info.is_noam:  # a malformed state read from disk: every bad key named, no traceback
            validate_state(info.state, info.source or str(info.path))
        lines, status = checkpoint_report(info, config, args.config)
    except CheckpointError as error:
        _say(f"noam-plugin inspect: {error}")
        return 1
    except StateError as error:
        _say(f"noam-plugin inspect: the scheduler state is malformed\n{error}")
        return 1
    print("\n".join(lines))
    return status


def cmd_cooldown(args: argparse.Namespace) -> int:
    """Params that start a cooldown of N right after a checkpoint's count, and the curve from there."""
    import yaml

    info, base, count = checkpoint_schedule(args.checkpoint_dir, args.config)
    unit = base.warmup_unit
    u = base.unit_name
    if count < base.warmup_num_steps:
        raise ValueError(
            f"{args.checkpoint_dir}: saved at {u} {count}, inside the warmup (warmup_num_steps "
            f"{base.warmup_num_steps}); a cooldown starts after the warmup: resume past {u} "
            f"{base.warmup_num_steps} first"
        )
    if any(a.tail for a in base.amendments):
        raise ValueError(
            f"{args.checkpoint_dir}: an amendment sets this run's tail; move it with another one: "
            f"noam-plugin amend {args.checkpoint_dir} --cooldown {args.over}"
        )
    params = {k: v for k, v in resume_params(base).items() if k not in COOLDOWN_KEYS}
    params.update(total_num_steps=count + args.over, cooldown_num_steps=args.over, cooldown_type=args.type)
    if args.min_lr is not None:
        params["cooldown_min_lr"] = args.min_lr
    if base.groups:  # every group cools down together: an override keeps its curve, not its own tail
        params["groups"] = cooled_groups(base)
    if HISTORY_KEY in params:
        params[HISTORY_KEY] = params.pop(HISTORY_KEY)
    config = NoamConfig.from_params(params, source=f"cooldown of {args.over} after {u} {count}", prefix="")
    problems = resume_problems(info, config, count)
    if problems:
        raise ValueError(
            f"{args.checkpoint_dir}: this cooldown would change the lr of updates already applied "
            f"({'; '.join(problems)}); {_cooldown_instead(args, base, count)}"
        )
    where = f"{u} {count}" + (" (updates applied)" if unit == UPDATES else f" ({unit} seen)")
    before = f" (without it: {base.lr(count + 1):.6g})" if base.lr(count + 1) != config.lr(count + 1) else ""
    print(f"# {args.checkpoint_dir}: saved at {where}, next lr {config.lr(count + 1):.6g} with this cooldown{before}")
    print(
        f"# a {args.type} cooldown over the next {args.over} {unit} ({u}s {count + 1}-{count + args.over}): "
        "resume with these params (in a DeepSpeed JSON, the same keys in scheduler.params)"
    )
    print(yaml.safe_dump({"scheduler": {"type": SCHEDULER_NAME, "params": params}}, sort_keys=False), end="")
    axis = Axis(config, unit)
    end = count + args.over
    after = end + max(1, args.over // 10)
    if config.groups or any(a.groups is not None for a in config.amendments):  # a column, letter, PNG line each
        title = f"{Path(args.checkpoint_dir).name}: NoamLR + {args.type} cooldown, per group"
        print()
        positions = sorted({count, count + 1, count + (args.over + 1) // 2, end, end + 1})
        show_groups(config, axis, positions, after, (args.plot, title) if args.plot else None, first=count)
        return 0
    print()
    print(f"{u:>10}  {'lr':>11}")
    for k in sorted({count, count + 1, count + (args.over + 1) // 2, end, end + 1}):
        print(
            f"{k:>10}  {axis.lr(k):>11.4e}"
            + (
                "  (last before the cooldown)"
                if k == count
                else "  (cooldown_min_lr from here on)"
                if k == end + 1
                else ""
            )
        )
    print()
    print("\n".join(ascii_curve(axis, after, first=count)))
    if args.plot:
        title = f"{Path(args.checkpoint_dir).name}: NoamLR + {args.type} cooldown\n{params_text(config)}"
        plot_curve(axis, after, title, args.plot, marks=[(count, f"checkpoint ({u} {count})")])
        print(f"\nplot written to {args.plot}")
    return 0


def _cooldown_instead(args: argparse.Namespace, base: NoamConfig, count: int) -> str:
    """What to run instead when the checkpoint's own tail already shaped updates it applied."""
    u, start, end = base.unit_name, base.cooldown_start, base.total_num_steps
    amend = f"noam-plugin amend {args.checkpoint_dir}"
    if end is not None and count >= end:
        return (
            f"its run already reached total_num_steps {end}; to go on, move the end with an amendment: "
            f"{amend} --total {count + args.over} (or --cooldown {args.over} for a new tail)"
        )
    if base.cooldown_num_steps is not None and count > start:
        return (
            f"its cooldown already runs ({u}s {start + 1}-{end}); change the rest of it with an amendment: "
            f"{amend} --cooldown {args.over} --type {args.type} (or --total T to move its end)"
        )
    return f"resume with the config the run saved (noam-plugin inspect {args.checkpoint_dir} --config PATH shows it)"


def cmd_convert_universal(args: argparse.Namespace) -> int:
    """DeepSpeed save_checkpoint folders -> universal checkpoints next to them (noam_plugin/universal.py)."""
    from noam_plugin.universal import RESUME_HINT, convert_universal, universal_summary

    for checkpoint_dir in args.checkpoint_dirs:
        target = convert_universal(checkpoint_dir, args.tag, workers=args.workers)
        print(f"{checkpoint_dir}: universal checkpoint {target} ({universal_summary(target)})")
    print(f"{RESUME_HINT[0].upper()}{RESUME_HINT[1:]} and engine.load_checkpoint(CKPT_DIR).")
    return 0


def cmd_to_universal(args: argparse.Namespace) -> int:
    """An accelerator.save_state folder of a DeepSpeed run -> a copy whose checkpoint is universal."""
    from noam_plugin.universal import RESUME_HINT, to_universal

    out = to_universal(args.saved, args.out)
    print(f"{out}: universal; {RESUME_HINT} and accelerator.load_state({out!r})")
    return 0


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, found {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        # int() of a huge text is slow and then refused anyway: a long run of digits is too large unread
        value = int(text) if len(text) <= 30 or not text.strip().lstrip("+").isdigit() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, found {shorten(repr(text), 60)}") from None
    if value is not None and value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, found {value}")
    if value is None or value > MAX_INT:
        raise argparse.ArgumentTypeError(f"expected an int of at most 2**63 - 1, found {shorten(repr(text), 60)}")
    return value


def _update_list(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) > 100_000:
        raise argparse.ArgumentTypeError(f"expected at most 100000 positions, found {len(parts)}")
    values = sorted({_positive_int(part.strip()) for part in parts if part.strip()})
    if not values:
        raise argparse.ArgumentTypeError(f"expected positions such as 1,100,4000, found {shorten(repr(text), 60)}")
    return values


CHECKPOINT_HELP = (
    "a DeepSpeed, Accelerate, DCP or HF Trainer checkpoint-N folder, a folder holding such checkpoints "
    "(the newest is read), or a torch.save file of a scheduler state"
)
CONFIG_PATH_HELP = "a config file: project YAML, DeepSpeed JSON, Accelerate config YAML, LightningCLI or Hydra YAML"


def _setting(text: str) -> tuple[str, int | float]:
    """KEY=VALUE of show --set: a number for an "auto" key (the value the Trainer or Accelerate would fill)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE such as warmup_num_steps=4000, found {shorten(repr(text), 60)}"
        )
    try:
        number: int | float = int(value) if value.lstrip("+-").isdigit() and len(value) <= 30 else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: expected a number, found {shorten(repr(value), 60)}") from None
    if isinstance(number, float) and number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{key}: expected a finite number, found {value}")
    return key, number


def build_parser(prog: str = "noam-plugin") -> argparse.ArgumentParser:
    from noam_plugin import __version__

    parser = argparse.ArgumentParser(prog=prog, description="Check Noam schedule configs and look at the curve.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check config files (exit 0 if all are valid)")
    p.add_argument("paths", nargs="+", metavar="PATH", help=CONFIG_PATH_HELP)
    p.add_argument(
        "--allow-auto",
        action="store_true",
        help='accept "auto" in warmup_num_steps/warmup_max_lr (a DeepSpeed config meant for Accelerate, '
        "which fills them); always on for a file named by an Accelerate config",
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("show", help="peak, a table of lr values and a picture of the curve")
    p.add_argument("path", metavar="PATH", help=CONFIG_PATH_HELP)
    p.add_argument(
        "--set",
        type=_setting,
        action="append",
        metavar="KEY=VALUE",
        help='fill an "auto" value for the preview (warmup_num_steps, warmup_max_lr, total_num_steps: what the '
        "HF Trainer fills from warmup_steps, learning_rate, max_steps); repeat for each",
    )
    p.add_argument("--unit", choices=WARMUP_UNITS, help="x-axis unit (default: the config's warmup_unit)")
    p.add_argument(
        "--per-update",
        type=_positive_int,
        metavar="N",
        help="samples or tokens per optimizer update (the global batch, over all processes); needed by --unit "
        "when it is not the config's unit",
    )
    p.add_argument("--steps", type=_positive_int, help="last position drawn, in the x-axis unit (default: 10 x warmup)")
    p.add_argument(
        "--at",
        type=_update_list,
        metavar="K,K,...",
        help="positions for the table, in the x-axis unit (default: 1, W/4, W/2, W, 2W, 4W, 10W)",
    )
    p.add_argument("--plot", type=png_path, metavar="FILE.png", help="draw the curve to a PNG (needs matplotlib)")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "inspect", help="the schedule state saved in a DeepSpeed, Accelerate, DCP or HF Trainer checkpoint"
    )
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help=CHECKPOINT_HELP)
    p.add_argument("--config", metavar="PATH", help="compare with this config; exit 1 on differences")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("cooldown", help="params that start a cooldown right after a checkpoint, and its curve")
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", help=CHECKPOINT_HELP)
    p.add_argument(
        "--over",
        type=_positive_int,
        required=True,
        metavar="N",
        help="length of the cooldown, in the schedule's warmup_unit (updates, samples or tokens)",
    )
    p.add_argument(
        "--type", choices=COOLDOWN_TYPES, default=DEFAULT_COOLDOWN, help="shape of the cooldown (default: linear)"
    )
    p.add_argument("--min-lr", type=_nonnegative_float, metavar="LR", help="cooldown_min_lr (default 0)")
    p.add_argument(
        "--config", metavar="PATH", help="the config the run resumes with (default: the checkpoint's parameters)"
    )
    p.add_argument(
        "--plot",
        type=png_path,
        metavar="FILE.png",
        help="draw the whole curve with the cooldown to a PNG (needs matplotlib)",
    )
    p.set_defaults(handler=cmd_cooldown)

    add_amend_parser(sub, _positive_int, _nonnegative_float, _positive_float, CHECKPOINT_HELP)
    add_init_parser(sub)

    p = sub.add_parser(
        "convert-universal",
        help="convert DeepSpeed checkpoints to universal ones (resume on another number of processes)",
        description="Runs DeepSpeed's ds_to_universal on CKPT_DIR/TAG (TAG from CKPT_DIR/latest) into "
        "CKPT_DIR/TAG_universal and points CKPT_DIR/latest_universal at it, once every file it reads has loaded "
        "with torch.load(weights_only=True) (no pickled code runs, nothing outside CKPT_DIR is followed). Then "
        'resume with "checkpoint": {"load_universal": true} in the DeepSpeed config.',
    )
    p.add_argument("checkpoint_dirs", nargs="+", metavar="CKPT_DIR", help="folder given to engine.save_checkpoint")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: the one in CKPT_DIR/latest)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes for the conversion (default 1)")
    p.set_defaults(handler=cmd_convert_universal)

    p = sub.add_parser(
        "to-universal",
        help="make an accelerator.save_state folder of a DeepSpeed ZeRO run loadable on another number of processes",
        description="Writes OUT = a copy of SAVED with its DeepSpeed checkpoint converted to a universal one (same "
        'safety as convert-universal). Resume with "checkpoint": {"load_universal": true} in the DeepSpeed config '
        "and accelerator.load_state(OUT).",
    )
    p.add_argument("saved", metavar="SAVED", help="folder given to accelerator.save_state")
    p.add_argument("out", metavar="OUT", help="new folder to write (outside SAVED)")
    p.set_defaults(handler=cmd_to_universal)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    if sys.stderr is None:  # started with 2>&-: messages go nowhere rather than fail
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:  # started with >&-: say so instead of failing on the first print
        print("noam-plugin: standard output is closed (>&-); nothing can be written", file=sys.stderr)
        return 1
    for stream in (sys.stdout, sys.stderr):  # a path the terminal's encoding cannot show is escaped, not fatal
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    try:
        status = _main(argv, prog)
        sys.stdout.flush()  # buffered output meets a closed pipe here
        return status
    except BrokenPipeError:  # `noam-plugin show ... | head -1`: the reader has what it wanted
        return _output_closed()
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's convention 128 + SIGINT
        try:
            print("noam-plugin: interrupted", file=sys.stderr)
        except Exception:  # noqa: BLE001, S110 - the terminal may be gone too
            pass
        _output_closed()  # pending output might block on a full pipe at exit: dropped
        return 130


def _output_closed() -> int:
    """Exit quietly: point stdout and stderr at /dev/null so the interpreter's final flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    os.close(devnull)
    return 0


def _main(argv: list[str] | None, prog: str | None = None) -> int:
    args = build_parser(prog or "noam-plugin").parse_args(argv)
    _GIVEN[:] = [v for value in vars(args).values() for v in (value if isinstance(value, list) else [value])]
    _GIVEN[:] = sorted((v for v in _GIVEN if isinstance(v, str)), key=len, reverse=True)
    try:
        return args.handler(args)
    except ConfigError as err:
        _say(str(err))
    except _CheckpointError as err:
        _say(f"noam-plugin {args.command}: {shorten(str(err), 2000)}")
    except BrokenPipeError:
        raise
    except OSError as err:
        from noam_plugin.safe_io import write_failure

        err = write_failure(err, err.filename or ".") or err
        where = f"{shorten(str(err.filename), 300)}: " if err.filename else ""
        _say(f"noam-plugin: {where}{shorten(str(err.strerror or err), 300)}")
    except (ValueError, RecursionError) as err:
        _say(f"noam-plugin: {shorten(str(err), 1000)}")
    return 1


_GIVEN: list[str] = []  # the paths and names on this command line (a newline in one is no line break)


def _say(message: str) -> None:
    """An error message on stderr, each line with what a terminal hides or turns over (an escape sequence, U+202E
    from a tag or a path) written as escapes, and a path given on the command line escaped whole (a newline in it
    would pass for the end of the message): what differs is shown, not acted on."""
    for given in _GIVEN:
        if visible(given) != given:
            message = message.replace(given, visible(given))
    print("\n".join(visible(line) for line in message.split("\n")), file=sys.stderr)
