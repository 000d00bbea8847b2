"""`noam-plugin` command line: check config files and look at the curve before training.

Errors are printed as one clear message (no traceback) with exit status 1;
argparse usage errors keep their usual status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from noam_plugin.config import AUTO_KEYS, PARAMS_PREFIX, check_with_auto, read_scheduler_block
from noam_plugin.errors import ConfigError, Problem
from noam_plugin.schedule import NoamConfig


def _params_text(config: NoamConfig) -> str:
    if config.d_model is not None:
        form = f"d_model={config.d_model}" + (f", factor={config.factor:g}" if config.factor != 1.0 else "")
    else:
        form = f"warmup_max_lr={config.warmup_max_lr:g}"
    return f"{form}, warmup {config.warmup_num_steps} update{'s' if config.warmup_num_steps != 1 else ''}"


def _describe(config: NoamConfig) -> str:
    return f"{_params_text(config)}, peak lr {config.peak_lr:.2e} at update {config.peak_step}"


def _auto_error(err: ConfigError, hint: str) -> ConfigError:
    """Say what "auto" is, where a value left "auto" is why the file failed."""
    problems = [
        Problem(p.key, p.expected, f"str 'auto' ({hint})") if p.found.startswith("str 'auto'") else p for p in err.problems
    ]
    return ConfigError(err.source, problems)


_AUTO_SOURCE = {"warmup_num_steps": "DummyScheduler(warmup_num_steps=...)", "warmup_max_lr": "the optimizer's lr"}


def _validate_one(path: str, allow_auto: bool) -> str:
    block = read_scheduler_block(path)
    via = f" from {block.file}" if block.via_accelerate else ""
    if allow_auto or block.via_accelerate:
        auto = check_with_auto(block)
        if auto:
            filled_from = " and ".join(_AUTO_SOURCE[k] for k in auto)
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


def _default_updates(warmup: int, steps: int) -> list[int]:
    marks = [1, warmup // 4, warmup // 2, warmup, 2 * warmup, 4 * warmup, 10 * warmup, steps]
    return sorted({k for k in marks if 1 <= k <= steps})


def _ascii_curve(config: NoamConfig, steps: int, width: int = 60, height: int = 8) -> list[str]:
    """A terminal picture of the curve: users look before they read."""
    width = max(1, min(width, steps))
    cols = [1 + round(c * (steps - 1) / max(1, width - 1)) for c in range(width)]
    peak_col = None
    if config.peak_step <= steps:  # put the peak itself on the nearest column
        peak_col = min(range(width), key=lambda c: abs(cols[c] - config.peak_step))
        cols[peak_col] = config.peak_step
    top = max(config.lr(k) for k in cols)
    grid = [[" "] * width for _ in range(height)]
    for c, k in enumerate(cols):
        grid[height - 1 - round(config.lr(k) / top * (height - 1))][c] = "*"
    label = f"{top:.2e}"
    pad = " " * len(label)
    lines = [f"{label if r == 0 else pad} |{''.join(row)}".rstrip() for r, row in enumerate(grid)]
    lines.append(f"{'0'.ljust(len(label))} +{'-' * width}")
    first, last = "1", str(steps)
    ends = first if steps == 1 else first + last.rjust(max(width - len(first), len(last) + 1))
    lines.append(f"{pad}  {ends}   (optimizer update)")
    if peak_col is not None:
        mark = f"^ peak at update {config.peak_step}"
        left = f"peak at update {config.peak_step} ^"
        lines.append(f"{pad}  " + (" " * peak_col + mark if peak_col + len(mark) <= width else (left.rjust(peak_col + 1))))
    return lines


def _plot(config: NoamConfig, steps: int, title: str, out: str) -> None:
    """Draw the curve to a PNG; matplotlib is optional and imported only here."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'noam-plugin[plot]'") from None
    n = min(steps, 2000)
    ks = {1 + round(i * (steps - 1) / max(1, n - 1)) for i in range(n)}
    if config.peak_step <= steps:
        ks.add(config.peak_step)
    ks = sorted(ks)
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, [config.lr(k) for k in ks], color="tab:blue", lw=2, label="lr of update k")
    warm_end = min(config.warmup_num_steps, steps)
    ax.axvspan(1, warm_end, color="tab:orange", alpha=0.15, label=f"warmup (updates 1-{config.warmup_num_steps})")
    if config.peak_step <= steps:
        ax.plot([config.peak_step], [config.peak_lr], "o", color="tab:red", zorder=3)
        ax.annotate(
            f"peak lr {config.peak_lr:.3e}\nat update {config.peak_step}",
            xy=(config.peak_step, config.peak_lr),
            xytext=(0.35, 0.9), textcoords="axes fraction", va="top",
            arrowprops=dict(arrowstyle="->", color="tab:red"),
        )
    ax.set_xlim(0, steps)
    ax.set_ylim(0, config.peak_lr * 1.15 if config.peak_step <= steps else None)
    ax.set_xlabel("optimizer update")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right" if config.peak_step <= steps else "lower right")
    fig.savefig(out, format=Path(out).suffix[1:] or "png")  # no suffix: still exactly this file


def cmd_show(args: argparse.Namespace) -> int:
    block = read_scheduler_block(args.path)
    try:
        config = NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)
    except ConfigError as err:
        raise _auto_error(err, "Accelerate fills it at run time; show needs a number here") from None
    steps = args.steps or 10 * config.warmup_num_steps
    updates = args.at or _default_updates(config.warmup_num_steps, steps)
    print(f"{args.path}: NoamLR, {_describe(config)}")
    if config.d_model is not None:
        print(f"  lr(k) = {config.factor:g} * {config.d_model}**-0.5 * min(k**-0.5, k * {config.warmup_num_steps}**-1.5)")
    else:
        print(f"  lr(k) = {config.warmup_max_lr:g} * min(k / {config.warmup_num_steps}, ({config.warmup_num_steps} / k)**0.5)")
    print(f"peak: update {config.peak_step}, lr {config.peak_lr:.4e}")
    print()
    print(f"{'update':>10}  {'lr':>11}  {'of peak':>8}")
    for k in updates:
        lr = config.lr(k)
        print(f"{k:>10}  {lr:>11.4e}  {100 * lr / config.peak_lr:>7.1f}%")
    print()
    print("\n".join(_ascii_curve(config, steps)))
    if args.plot:
        _plot(config, steps, f"{Path(block.file).name}: NoamLR, {_params_text(config)}", args.plot)
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, found {value}")
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
    p.add_argument("--steps", type=_positive_int, help="last update drawn (default: 10 x warmup_num_steps)")
    p.add_argument("--at", type=_update_list, metavar="K,K,...", help="updates for the table (default: 1, W/4, W/2, W, 2W, 4W, 10W)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the curve to a PNG (needs matplotlib)")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("inspect", help="the schedule state saved in a DeepSpeed or Accelerate checkpoint")
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    p.add_argument("--config", metavar="PATH", help="compare with this config; exit 1 on differences")
    p.set_defaults(handler=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"noam-plugin: {where}{err.strerror or err}", file=sys.stderr)
    except ValueError as err:
        print(f"noam-plugin: {err}", file=sys.stderr)
    return 1
