"""`noam-plugin` command line: check config files and look at the curve before training.

Errors are printed as one clear message (no traceback) with exit status 1;
argparse usage errors keep their usual status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from noam_plugin.config import AUTO_KEYS, PARAMS_PREFIX, check_with_auto, read_scheduler_block
from noam_plugin.errors import ConfigError, Problem, shorten
from noam_plugin.examples import add_init_parser
from noam_plugin.schedule import COOLDOWN_TYPES, MAX_INT, WARMUP_UNITS, NoamConfig


def _params_text(config: NoamConfig) -> str:
    if config.d_model is not None:
        form = f"d_model={config.d_model}" + (f", factor={config.factor:g}" if config.factor != 1.0 else "")
    else:
        form = f"warmup_max_lr={config.warmup_max_lr:g}"
    return f"{form}, warmup {config.warmup_num_steps} {config.unit_name}{'s' if config.warmup_num_steps != 1 else ''}"


def _describe(config: NoamConfig) -> str:
    return f"{_params_text(config)}, peak lr {config.peak_lr:.2e} at {config.unit_name} {config.peak_step}"


def _auto_error(err: ConfigError, hint: str) -> ConfigError:
    """Say what "auto" is, where a value left "auto" is why the file failed."""
    problems = [
        Problem(p.key, p.expected, f"str 'auto' ({hint})") if p.found.startswith("str 'auto'") else p for p in err.problems
    ]
    return ConfigError(err.source, problems)


_AUTO_SOURCE = {
    "warmup_num_steps": "DummyScheduler(warmup_num_steps=...)",
    "warmup_max_lr": "the optimizer's lr",
    "total_num_steps": "DummyScheduler(total_num_steps=...) (the HF Trainer: max_steps)",
}


def _validate_one(path: str, allow_auto: bool) -> str:
    block = read_scheduler_block(path)
    via = f" from {block.file}" if block.via_accelerate else ""
    if allow_auto or block.via_accelerate:
        auto = check_with_auto(block)
        if auto:
            filled_from = "; ".join(_AUTO_SOURCE[k] for k in auto)
            return f'NoamLR{via}; "auto" {", ".join(auto)}: Accelerate fills them at prepare() from {filled_from}'
    try:
        config = NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)
    except ConfigError as err:
        hint = f"Accelerate fills \"auto\" in {' and '.join(AUTO_KEYS)}; check a config meant for Accelerate with --allow-auto"
        raise _auto_error(err, hint) from None
    return f"NoamLR{via}: {_describe(config)}"


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


_VARIABLE = {"updates": "k", "samples": "s", "tokens": "t"}


@dataclass(frozen=True)
class _Axis:
    """The x axis of `show`: a unit, and which point of the config's curve each position in it uses."""

    config: NoamConfig
    unit: str
    per_update: int | None = None  # samples or tokens per optimizer update, when unit is not the config's

    @property
    def name(self) -> str:
        return self.unit[:-1]

    @property
    def label(self) -> str:
        return "optimizer update" if self.unit == "updates" else f"{self.unit} seen"

    def position(self, count: int) -> int:
        """A position in the config's unit, in this unit; data -> updates rounds up to the update it falls in."""
        n = self.per_update
        if self.unit == self.config.warmup_unit:
            return count
        return -(-count // n) if self.unit == "updates" else count * n

    @property
    def peak(self) -> int:
        """Where the peak is marked: the update in which warmup ends, when it ends inside one."""
        return self.position(self.config.warmup_num_steps)

    @property
    def peak_inside(self) -> bool:
        """Data shown per update, and warmup ends inside an update (W not a multiple of the batch)."""
        converted = self.unit == "updates" and self.config.warmup_unit != "updates"
        return converted and self.config.warmup_num_steps % self.per_update != 0

    @property
    def warmup(self) -> float:
        """warmup_num_steps in this unit (not whole when it ends inside an update)."""
        w = self.config.warmup_num_steps
        return w / self.per_update if self.peak_inside else self.position(w)

    @property
    def stride(self) -> int:
        """Distance between plotted points: an updates config shown in data changes lr once per update."""
        return self.per_update if self.config.warmup_unit == "updates" and self.unit != "updates" else 1

    def lr(self, x: int) -> float:
        config, n = self.config, self.per_update
        if self.unit == config.warmup_unit:
            return config.lr(x)
        if self.unit == "updates":  # update x has seen x * n samples or tokens, its own included
            return config.lr(x * n)
        return config.lr(-(-x // n))  # data position x falls in update ceil(x / n)


def _axis(config: NoamConfig, unit: str | None, per_update: int | None) -> _Axis:
    """Check that the asked-for unit can be reached from the config's; errors say what to add."""
    have = config.warmup_unit
    unit = unit or have
    if unit == have:
        if per_update is not None:
            others = "updates" if have != "updates" else "samples or --unit tokens"
            raise ValueError(f"--per-update converts between units: add --unit {others} (this config counts {have})")
        return _Axis(config, unit)
    if "updates" not in (unit, have):
        raise ValueError(f"--unit {unit}: cannot convert {have} to {unit} (tokens per sample vary); "
                         "show it per update instead: --unit updates --per-update N")
    if per_update is None:
        data = unit if unit != "updates" else have
        what = "the global batch, over all processes" if data == "samples" else "summed over all processes"
        raise ValueError(f"--unit {unit} needs --per-update N: the {data} per optimizer update ({what})")
    return _Axis(config, unit, per_update)


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _default_positions(peak: int, steps: int, extra: tuple[int, ...] = ()) -> list[int]:
    marks = [1, peak // 4, peak // 2, peak, 2 * peak, 4 * peak, 10 * peak, steps, *extra]
    return sorted({k for k in marks if 1 <= k <= steps})


def _tail_positions(config: NoamConfig, axis: _Axis) -> tuple[int, ...]:
    """Where the cooldown starts, its middle, its end and the first position after it, in the axis unit."""
    if config.cooldown_num_steps is None or axis.unit != config.warmup_unit:
        return ()
    s, t = config.cooldown_start, config.total_num_steps
    return (s, s + 1, (s + t) // 2, t, t + 1)


def _ascii_curve(axis: _Axis, steps: int, width: int = 60, height: int = 8, first: int = 1) -> list[str]:
    """A terminal picture of the curve from `first` to `steps`: users look before they read."""
    width = max(1, min(width, steps - first + 1))
    cols = [first + round(c * (steps - first) / max(1, width - 1)) for c in range(width)]
    peak_col = None
    if first <= axis.peak <= steps:  # put the peak itself on the nearest column
        peak_col = min(range(width), key=lambda c: abs(cols[c] - axis.peak))
        cols[peak_col] = axis.peak
    top = max(axis.lr(k) for k in cols)
    grid = [[" "] * width for _ in range(height)]
    for c, k in enumerate(cols):
        grid[height - 1 - round(axis.lr(k) / top * (height - 1))][c] = "*"
    label = f"{top:.2e}"
    pad = " " * len(label)
    lines = [f"{label if r == 0 else pad} |{''.join(row)}".rstrip() for r, row in enumerate(grid)]
    lines.append(f"{'0'.ljust(len(label))} +{'-' * width}")
    start, last = str(first), str(steps)
    ends = start if steps == first else start + last.rjust(max(width - len(start), len(last) + 1))
    lines.append(f"{pad}  {ends}   ({axis.label})")
    if peak_col is not None:
        mark = f"^ peak at {axis.name} {axis.peak}"
        left = f"peak at {axis.name} {axis.peak} ^"
        lines.append(f"{pad}  " + (" " * peak_col + mark if peak_col + len(mark) <= width else (left.rjust(peak_col + 1))))
    return lines


def _plot(axis: _Axis, steps: int, title: str, out: str, mark: tuple[int, str] | None = None) -> None:
    """Draw the curve to a PNG; matplotlib is optional and imported only here."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'noam-plugin[plot]'") from None
    config, stride = axis.config, axis.stride
    last = max(1, steps // stride)
    n = min(last, 2000)
    ks = {stride * (1 + round(i * (last - 1) / max(1, n - 1))) for i in range(n)}
    if axis.peak <= steps:
        ks.add(axis.peak)
    ks = sorted(ks)
    lrs = [axis.lr(k) for k in ks]
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, lrs, color="tab:blue", lw=2, label="lr of update k" if axis.unit == "updates" else f"lr at {axis.name} x")
    w = config.warmup_num_steps
    if axis.unit == config.warmup_unit:
        band = f"warmup ({axis.unit} 1-{w})"
    else:
        band = f"warmup: {w} {config.warmup_unit} = {_number(axis.warmup)} {axis.unit}"
    ax.axvspan(1, min(axis.warmup, steps), color="tab:orange", alpha=0.15, label=band)
    if config.cooldown_num_steps is not None and axis.unit == config.warmup_unit:
        start, end = config.cooldown_start, config.total_num_steps
        ax.axvspan(start, end, color="tab:green", alpha=0.15,
                   label=f"{config.cooldown_type} cooldown ({axis.unit} {start + 1}-{end})")
    if mark is not None:
        ax.axvline(mark[0], color="tab:gray", ls="--", lw=1, label=mark[1])
    right_half = axis.peak > 0.45 * steps  # then the label goes left of the peak, the legend below it
    if axis.peak <= steps:
        peak_lr = axis.lr(axis.peak)
        ax.plot([axis.peak], [peak_lr], "o", color="tab:red", zorder=3)
        ax.annotate(
            f"peak lr {peak_lr:.3e}\nat {axis.name} {axis.peak}",
            xy=(axis.peak, peak_lr),
            xytext=(axis.peak / steps - 0.04 if right_half else 0.35, 0.9), textcoords="axes fraction", va="top",
            ha="right" if right_half else "left", arrowprops=dict(arrowstyle="->", color="tab:red"),
        )
    ax.set_xlim(0, steps)
    ax.set_ylim(0, max(lrs) * 1.15 if axis.peak <= steps else None)
    ax.set_xlabel(axis.label)
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    tail = config.cooldown_num_steps is not None  # then the curve comes down at the right: legend above it
    ax.legend(loc="lower right" if right_half and not tail else "upper right" if tail else "center right")
    write_atomically(out, lambda fd: fig.savefig(fd, format=Path(out).suffix[1:] or "png"))  # no suffix: this file


def write_atomically(path: str | os.PathLike, write) -> None:
    """`write(file object)` into a new file next to `path`, then rename it to `path`: an interrupted run leaves
    the old file or the new one, never half of one, and its leftover temporary never blocks the next."""
    path = Path(os.path.realpath(path))  # through a symlink, as a plain write would
    if path.exists() and not path.is_file():  # a rename would replace a device, a FIFO or a folder
        raise ValueError(f"{shorten(str(path), 300)}: exists and is not a regular file; not replaced")
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a plot is as readable as any new file
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _formula_lines(config: NoamConfig, axis: _Axis) -> list[str]:
    """The formula in the config's unit, and how the x axis reaches it when it is another unit."""
    v, w, unit = _VARIABLE[config.warmup_unit], config.warmup_num_steps, config.warmup_unit
    if config.d_model is not None:
        lines = [f"  lr({v}) = {config.factor:g} * {config.d_model}**-0.5 * min({v}**-0.5, {v} * {w}**-1.5)"]
    else:
        lines = [f"  lr({v}) = {config.warmup_max_lr:g} * min({v} / {w}, ({w} / {v})**0.5)"]
    if unit != "updates":
        lines[0] += f"   ({v}: {unit} seen, the update's own included)"
    n = axis.per_update
    if axis.unit == "updates" and unit != "updates":
        same = " (if every update has as many)" if unit == "tokens" else ""
        lines.append(f"  shown per update, {n} {unit} each{same}: update k uses lr({n} * k)")
    elif axis.unit != unit:
        lines.append(f"  shown in {axis.unit}, {n} per update: {axis.name} x falls in update ceil(x / {n}), lr(ceil(x / {n}))")
    if config.cooldown_num_steps is not None:
        f = {"linear": "1 - x", "1-sqrt": "1 - sqrt(x)", "cosine": "(1 + cos(pi * x)) / 2"}[config.cooldown_type]
        s, m, c = config.cooldown_start, config.cooldown_min_lr, config.cooldown_num_steps
        lines.append(f"  {v} > {s}: lr({v}) = {m:g} + (lr({s}) - {m:g}) * f(min(1, ({v} - {s}) / {c + 1})),"
                     f"  f(x) = {f}")
    if config.d_model is not None and unit != "updates":
        lines.append(f"  note: the d_model form's peak lr depends on the unit: {config.factor:g} * {config.d_model}**-0.5 * W**-0.5 "
                     f"with W in {unit}; warmup_max_lr sets the peak directly")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    block = read_scheduler_block(args.path)
    try:
        config = NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)
    except ConfigError as err:
        raise _auto_error(err, "Accelerate fills it at run time; show needs a number here") from None
    axis = _axis(config, args.unit, args.per_update)
    end = config.cooldown_end
    default_end = 10 * config.warmup_num_steps if end is None else end + max(1, config.cooldown_num_steps // 10)
    steps = args.steps or axis.position(default_end)
    positions = args.at or _default_positions(axis.peak, steps, _tail_positions(config, axis))
    print(f"{args.path}: NoamLR, {_describe(config)}")
    print("\n".join(_formula_lines(config, axis)))
    inside = f" (warmup ends inside it, at {_number(axis.warmup)} updates)" if axis.peak_inside else ""
    print(f"peak: {axis.name} {axis.peak}{inside}, lr {axis.lr(axis.peak):.4e}")
    if config.cooldown_num_steps is not None or config.total_num_steps is not None:
        print(f"cooldown: {config.describe_cooldown()}")
    print()
    print(f"{axis.name:>10}  {'lr':>11}  {'of peak':>8}")
    for k in positions:
        lr = axis.lr(k)
        print(f"{k:>10}  {lr:>11.4e}  {100 * lr / config.peak_lr:>7.1f}%")
    print()
    print("\n".join(_ascii_curve(axis, steps)))
    if args.plot:
        _plot(axis, steps, f"{Path(block.file).name}: NoamLR\n{_params_text(config)}", args.plot)
        print(f"\nplot written to {args.plot}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        from noam_plugin.checkpoint import inspect_command  # torch is only needed here
    except ModuleNotFoundError as err:
        if err.name != "noam_plugin.checkpoint":
            raise
        raise ValueError("inspect is not available in this version of noam-plugin") from None

    return inspect_command(args.checkpoint_dir, args.config)


def cmd_cooldown(args: argparse.Namespace) -> int:
    """Params that start a cooldown of N right after a checkpoint's count, and the curve from there."""
    import yaml

    try:
        from noam_plugin.checkpoint import CheckpointError, read_checkpoint  # torch is only needed here
    except ModuleNotFoundError as err:
        raise ValueError(f"cooldown needs torch to read checkpoints ({err.name} is missing)") from None
    from noam_plugin.schedule import CURVE_KEYS, resume_changes

    try:
        info = read_checkpoint(args.checkpoint_dir)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    if args.config:
        block = read_scheduler_block(args.config)
        base = NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)
    elif info.is_noam:
        base = NoamConfig(**info.params)
    else:
        raise ValueError(f"{args.checkpoint_dir}: holds no NoamLR state, so its schedule is unknown: add --config PATH "
                         "(the config the run resumes with)")
    unit = base.warmup_unit
    if info.is_noam:
        count = info.state.get(unit)
    else:
        count = info.updates()[0] if unit == "updates" else None
    if count is None:
        raise ValueError(f"{args.checkpoint_dir}: no count of the {unit} seen in this checkpoint (warmup_unit {unit})")
    u = base.unit_name
    if count < base.warmup_num_steps:
        raise ValueError(f"{args.checkpoint_dir}: saved at {u} {count}, inside the warmup (warmup_num_steps "
                         f"{base.warmup_num_steps}); a cooldown starts after the warmup: resume past {u} "
                         f"{base.warmup_num_steps} first")
    params = {k: v for k, v in base.schedule_params.items() if k in CURVE_KEYS and v is not None}
    if params.get("warmup_unit") == "updates":
        del params["warmup_unit"]
    if params.get("factor") == 1.0:
        del params["factor"]
    params.update(total_num_steps=count + args.over, cooldown_num_steps=args.over, cooldown_type=args.type)
    if args.min_lr is not None:
        params["cooldown_min_lr"] = args.min_lr
    config = NoamConfig.from_params(params, source=f"cooldown of {args.over} after {u} {count}", prefix="")
    if info.is_noam:
        differing, _ = resume_changes(info.params, config, count)
        if differing:
            now = config.schedule_params
            shown = "; ".join(f"{k}: checkpoint {info.params.get(k)!r}, now {now.get(k)!r}" for k in differing)
            raise ValueError(f"{args.checkpoint_dir}: this cooldown would change the lr of updates already applied "
                             f"({shown})")
    where = f"{u} {count}" + (" (updates applied)" if unit == "updates" else f" ({unit} seen)")
    print(f"# {args.checkpoint_dir}: saved at {where}, next lr {base.lr(count + 1):.6g}")
    print(f"# a {args.type} cooldown over the next {args.over} {unit} ({u}s {count + 1}-{count + args.over}): "
          "resume with these params (in a DeepSpeed JSON, the same keys in scheduler.params)")
    print(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": params}}, sort_keys=False), end="")
    axis = _Axis(config, unit)
    end = count + args.over
    after = end + max(1, args.over // 10)
    print()
    print(f"{u:>10}  {'lr':>11}")
    for k in sorted({count, count + 1, count + (args.over + 1) // 2, end, end + 1}):
        print(f"{k:>10}  {axis.lr(k):>11.4e}" + ("  (last before the cooldown)" if k == count else
                                                  "  (cooldown_min_lr from here on)" if k == end + 1 else ""))
    print()
    print("\n".join(_ascii_curve(axis, after, first=count)))
    if args.plot:
        title = f"{Path(args.checkpoint_dir).name}: NoamLR + {args.type} cooldown\n{_params_text(config)}"
        _plot(axis, after, title, args.plot, mark=(count, f"checkpoint ({u} {count})"))
        print(f"\nplot written to {args.plot}")
    return 0


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, found {text}")
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
    return sorted({_positive_int(part.strip()) for part in text.split(",") if part.strip()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noam-plugin", description="Check Noam schedule configs and look at the curve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check config files (exit 0 if all are valid)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="project YAML, DeepSpeed JSON, or Accelerate config YAML")
    p.add_argument(
        "--allow-auto", action="store_true",
        help='accept "auto" in warmup_num_steps/warmup_max_lr (a DeepSpeed config meant for Accelerate, '
        "which fills them); always on for a file named by an Accelerate config",
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("show", help="peak, a table of lr values and a picture of the curve")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--unit", choices=WARMUP_UNITS, help="x-axis unit (default: the config's warmup_unit)")
    p.add_argument(
        "--per-update", type=_positive_int, metavar="N",
        help="samples or tokens per optimizer update (the global batch, over all processes); needed by --unit "
        "when it is not the config's unit",
    )
    p.add_argument("--steps", type=_positive_int, help="last position drawn, in the x-axis unit (default: 10 x warmup)")
    p.add_argument(
        "--at", type=_update_list, metavar="K,K,...",
        help="positions for the table, in the x-axis unit (default: 1, W/4, W/2, W, 2W, 4W, 10W)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the curve to a PNG (needs matplotlib)")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("inspect", help="the schedule state saved in a DeepSpeed or Accelerate checkpoint")
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    p.add_argument("--config", metavar="PATH", help="compare with this config; exit 1 on differences")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("cooldown", help="params that start a cooldown right after a checkpoint, and its curve")
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    p.add_argument("--over", type=_positive_int, required=True, metavar="N",
                   help="length of the cooldown, in the schedule's warmup_unit (updates, samples or tokens)")
    p.add_argument("--type", choices=COOLDOWN_TYPES, default="linear", help="shape of the cooldown (default: linear)")
    p.add_argument("--min-lr", type=_nonnegative_float, metavar="LR", help="cooldown_min_lr (default 0)")
    p.add_argument("--config", metavar="PATH",
                   help="the config the run resumes with (default: the checkpoint's parameters)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the whole curve with the cooldown to a PNG (needs matplotlib)")
    p.set_defaults(handler=cmd_cooldown)

    add_init_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # buffered output meets a closed pipe here
        return status
    except BrokenPipeError:  # `noam-plugin show ... | head -1`: the reader has what it wanted
        return _output_closed()


def _output_closed() -> int:
    """Exit quietly: point stdout and stderr at /dev/null so the interpreter's final flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)
    return 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
    except BrokenPipeError:
        raise
    except OSError as err:
        where = f"{shorten(str(err.filename), 300)}: " if err.filename else ""
        print(f"noam-plugin: {where}{shorten(str(err.strerror or err), 300)}", file=sys.stderr)
    except ValueError as err:
        print(f"noam-plugin: {shorten(str(err), 1000)}", file=sys.stderr)
    return 1
