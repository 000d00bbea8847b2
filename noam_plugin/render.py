"""What the command line shows: the curve (tables, a terminal picture, a PNG) and the inspect report.

Reading configs and checkpoints lives in config.py and checkpoint.py; the commands in
cli.py put the two together. matplotlib is imported only to draw a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noam_plugin.amendments import history_changes, history_lines
from noam_plugin.checkpoint import CheckpointError, CheckpointInfo
from noam_plugin.errors import short_repr, shorten
from noam_plugin.names import COSINE, DATA_UNITS, LINEAR, ONE_MINUS_SQRT, SAMPLES, TOKENS, UPDATES
from noam_plugin.resume import plan_resume
from noam_plugin.safe_io import MAX_LISTED, write_atomically
from noam_plugin.schedule import DEFAULT_UNIT, HISTORY_KEY, MAX_INT, SCHEDULE_KEYS, NoamConfig


def params_text(config: NoamConfig) -> str:
    if config.d_model is not None:
        form = f"d_model={config.d_model}" + (f", factor={config.factor:g}" if config.factor != 1.0 else "")
    else:
        form = f"warmup_max_lr={config.warmup_max_lr:g}"
    return f"{form}, warmup {config.warmup_num_steps} {config.unit_name}{'s' if config.warmup_num_steps != 1 else ''}"


def describe(config: NoamConfig) -> str:
    labels = [o.label for o in config.groups[:MAX_LISTED]] + (["..."] if len(config.groups) > MAX_LISTED else [])
    groups = f"; {len(config.groups)} group override(s): {', '.join(labels)}" if config.groups else ""
    return f"{params_text(config)}, peak lr {config.peak_lr:.2e} at {config.unit_name} {config.peak_step}{groups}"


_VARIABLE = {UPDATES: "k", SAMPLES: "s", TOKENS: "t"}


@dataclass(frozen=True)
class Axis:
    """The x axis of `show`: a unit, and which point of the config's curve each position in it uses."""

    config: NoamConfig
    unit: str
    per_update: int | None = None  # samples or tokens per optimizer update, when unit is not the config's

    @property
    def name(self) -> str:
        return self.unit[:-1]

    @property
    def label(self) -> str:
        return "optimizer update" if self.unit == UPDATES else f"{self.unit} seen"

    def position(self, count: int) -> int:
        """A position in the config's unit, in this unit; data -> updates rounds up to the update it falls in."""
        n = self.per_update
        if self.unit == self.config.warmup_unit:
            return count
        return -(-count // n) if self.unit == UPDATES else count * n

    @property
    def peak(self) -> int:
        """Where the peak is marked: the update in which warmup ends, when it ends inside one."""
        return self.position(self.config.warmup_num_steps)

    @property
    def peak_inside(self) -> bool:
        """Data shown per update, and warmup ends inside an update (W not a multiple of the batch)."""
        converted = self.unit == UPDATES and self.config.warmup_unit != UPDATES
        return converted and self.config.warmup_num_steps % self.per_update != 0

    @property
    def warmup(self) -> float:
        """warmup_num_steps in this unit (not whole when it ends inside an update)."""
        w = self.config.warmup_num_steps
        return w / self.per_update if self.peak_inside else self.position(w)

    @property
    def stride(self) -> int:
        """Distance between plotted points: an updates config shown in data changes lr once per update."""
        return self.per_update if self.config.warmup_unit == UPDATES and self.unit != UPDATES else 1

    def lr(self, x: int) -> float:
        config, n = self.config, self.per_update
        if self.unit == config.warmup_unit:
            return config.lr(x)
        if self.unit == UPDATES:  # update x has seen x * n samples or tokens, its own included
            return config.lr(x * n)
        return config.lr(-(-x // n))  # data position x falls in update ceil(x / n)


def axis_for(config: NoamConfig, unit: str | None, per_update: int | None) -> Axis:
    """Check that the asked-for unit can be reached from the config's; errors say what to add."""
    have = config.warmup_unit
    unit = unit or have
    if unit == have:
        if per_update is not None:
            others = UPDATES if have != UPDATES else "samples or --unit tokens"
            raise ValueError(f"--per-update converts between units: add --unit {others} (this config counts {have})")
        return Axis(config, unit)
    if UPDATES not in (unit, have):
        raise ValueError(
            f"--unit {unit}: cannot convert {have} to {unit} (tokens per sample vary); "
            "show it per update instead: --unit updates --per-update N"
        )
    if per_update is None:
        data = unit if unit != UPDATES else have
        what = "the global batch, over all processes" if data == SAMPLES else "summed over all processes"
        raise ValueError(f"--unit {unit} needs --per-update N: the {data} per optimizer update ({what})")
    return Axis(config, unit, per_update)


def number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def default_positions(peak: int, steps: int, extra: tuple[int, ...] = ()) -> list[int]:
    marks = [1, peak // 4, peak // 2, peak, 2 * peak, 4 * peak, 10 * peak, steps, *extra]
    return sorted({k for k in marks if 1 <= k <= steps})


def tail_positions(config: NoamConfig, axis: Axis) -> tuple[int, ...]:
    """Where the cooldown starts, its middle, its end and the first position after it, in the axis unit."""
    if config.cooldown_num_steps is None or axis.unit != config.warmup_unit:
        return ()
    s, t = config.cooldown_start, config.total_num_steps
    return (s, s + 1, (s + t) // 2, t, t + 1)


def framed(grid: list[list[str]], top: float, first: int, steps: int, x_label: str) -> list[str]:
    """A terminal picture's rows with the lr axis (its top value) and the x axis from `first` to `steps`."""
    width = len(grid[0])
    label = f"{top:.2e}"
    pad = " " * len(label)
    lines = [f"{label if r == 0 else pad} |{''.join(row)}".rstrip() for r, row in enumerate(grid)]
    lines.append(f"{'0'.ljust(len(label))} +{'-' * width}")
    start, last = str(first), str(steps)
    ends = start if steps == first else start + last.rjust(max(width - len(start), len(last) + 1))
    lines.append(f"{pad}  {ends}   ({x_label})")
    return lines


def _round_div(n: int, d: int) -> int:
    """round(n / d) in ints (as round() does, half to even): exact past 2**53, where n / d is not."""
    q, r = divmod(n, d)
    return q + (2 * r > d or (2 * r == d and q % 2 == 1))


def ascii_curve(axis: Axis, steps: int, width: int = 60, height: int = 8, first: int = 1) -> list[str]:
    """A terminal picture of the curve from `first` to `steps`: users look before they read."""
    width = max(1, min(width, steps - first + 1))
    cols = [first + _round_div(c * (steps - first), max(1, width - 1)) for c in range(width)]
    peak_col = None
    if first <= axis.peak <= steps:  # put the peak itself on the nearest column
        peak_col = min(range(width), key=lambda c: abs(cols[c] - axis.peak))
        cols[peak_col] = axis.peak
    top = max(axis.lr(k) for k in cols)
    grid = [[" "] * width for _ in range(height)]
    for c, k in enumerate(cols):
        grid[height - 1 - round(axis.lr(k) / top * (height - 1))][c] = "*"
    lines = framed(grid, top, first, steps, axis.label)
    pad = " " * len(f"{top:.2e}")
    if peak_col is not None:
        mark = f"^ peak at {axis.name} {axis.peak}"
        left = f"peak at {axis.name} {axis.peak} ^"
        lines.append(
            f"{pad}  " + (" " * peak_col + mark if peak_col + len(mark) <= width else (left.rjust(peak_col + 1)))
        )
    return lines


# What matplotlib's savefig writes, by suffix (a file without one is a PNG)
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp", "pgf", "raw", "rgba")


def png_path(text: str) -> str:
    """The argparse type of --plot: a file name, not an empty one, whose suffix names a picture format."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("expected the name of a PNG file to write, found an empty name")
    suffix = Path(text).suffix[1:]
    if suffix and suffix.lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{shorten(ascii(text)[1:-1], 200)}: expected a picture file name ending in .png (or "
            f"{', '.join('.' + f for f in PLOT_FORMATS[1:])}), found the suffix {shorten(ascii('.' + suffix), 40)}"
        )
    return text


def plot_format(out: str) -> str:
    return (Path(out).suffix[1:] or "png").lower()


def check_plot_range(name: str, steps: int) -> None:
    """matplotlib keeps axis limits in int64 / float64: past 2**63 - 1 it fails with a TypeError."""
    if steps > MAX_INT:
        raise ValueError(
            f"--plot: the curve would run to {name} {short_repr(steps)}, past 2**63 - 1, which matplotlib "
            "cannot draw; pass --steps N (at most 2**63 - 1)"
        )


def plot_curve(
    axis: Axis,
    steps: int,
    title: str,
    out: str,
    marks: Sequence[tuple[int, str]] = (),
    before: Axis | None = None,
    others: Sequence[tuple[str, Sequence[int], Sequence[float]]] = (),
) -> None:
    """Draw the curve to a PNG, with vertical lines at `marks` (count, label), dashed, the curve `before`
    an amendment, and `others` (label, counts, lrs: another schedule, measured) to compare it with;
    matplotlib is optional and imported only here."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'noam-plugin[plot]'") from None
    check_plot_range(axis.name, steps)
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
    ax.plot(ks, lrs, color="tab:blue", lw=2, label="lr of update k" if axis.unit == UPDATES else f"lr at {axis.name} x")
    w = config.warmup_num_steps
    if axis.unit == config.warmup_unit:
        band = f"warmup ({axis.unit} 1-{w})"
    else:
        band = f"warmup: {w} {config.warmup_unit} = {number(axis.warmup)} {axis.unit}"
    ax.axvspan(1, min(axis.warmup, steps), color="tab:orange", alpha=0.15, label=band)
    tail = config.config_at(steps)  # the tail in force at the end drawn (an amendment may have moved it)
    if tail.cooldown_num_steps is not None and axis.unit == config.warmup_unit:
        start, end = tail.cooldown_start, tail.total_num_steps
        ax.axvspan(
            start,
            end,
            color="tab:green",
            alpha=0.15,
            label=f"{tail.cooldown_type} cooldown ({axis.unit} {start + 1}-{end})",
        )
    if before is not None:
        ax.plot(ks, [before.lr(k) for k in ks], color="tab:gray", lw=1, ls=":", label="without the new amendments")
    for i, (label, xs, ys) in enumerate(others):
        ax.plot(xs, ys, color=f"C{(i + 4) % 10}", lw=1.5, ls="--", marker=".", label=label)
    for i, (x, label) in enumerate(marks):
        ax.axvline(x, color=f"C{(i + 3) % 10}", ls="--", lw=1, label=label)
    right_half = axis.peak > 0.45 * steps  # then the label goes left of the peak, the legend below it
    if axis.peak <= steps:
        peak_lr = axis.lr(axis.peak)
        ax.plot([axis.peak], [peak_lr], "o", color="tab:red", zorder=3)
        ax.annotate(
            f"peak lr {peak_lr:.3e}\nat {axis.name} {axis.peak}",
            xy=(axis.peak, peak_lr),
            xytext=(axis.peak / steps - 0.04 if right_half else 0.35, 0.9),
            textcoords="axes fraction",
            va="top",
            ha="right" if right_half else "left",
            arrowprops=dict(arrowstyle="->", color="tab:red"),
        )
    ax.set_xlim(0, steps)
    ax.set_ylim(0, max(lrs) * 1.15 if axis.peak <= steps else None)
    ax.set_xlabel(axis.label)
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    down = tail.cooldown_num_steps is not None  # then the curve comes down at the right: legend above it
    if marks:  # long labels: below the axes, where they cover nothing
        fig.set_figheight(4.5 + 0.22 * (len(ax.get_legend_handles_labels()[1]) + 1))
        fig.legend(loc="outside lower center", fontsize="small")
    else:
        ax.legend(loc="lower right" if right_half and not down else "upper right" if down else "center right")
    write_atomically(out, lambda fd: fig.savefig(fd, format=plot_format(out)))  # no suffix: a PNG


def plot_curves(
    curves: Sequence[tuple[str, Axis]],
    steps: int,
    title: str,
    out: str,
    marks: Sequence[tuple[int, str]] = (),
    first: int = 1,
) -> None:
    """Several curves on one x axis (label, axis), e.g. the cooldowns one checkpoint can start; `marks` are dashed
    vertical lines (count, label). Draws from `first` on; the first curve's warmup is shaded."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'noam-plugin[plot]'") from None
    check_plot_range(curves[0][1].name, steps)
    n = min(steps - first + 1, 2000)
    ks = sorted({first + round(i * (steps - first) / max(1, n - 1)) for i in range(n)})
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for i, (label, axis) in enumerate(curves):
        ax.plot(ks, [axis.lr(k) for k in ks], color=f"C{i}", lw=2 if i else 1.5, ls=":" if i == 0 else "-", label=label)
    warmup = curves[0][1].warmup
    if first < warmup:
        ax.axvspan(first, min(warmup, steps), color="tab:orange", alpha=0.15, label="warmup")
    for x, label in marks:
        ax.axvline(x, color="tab:gray", ls="--", lw=1, label=label)
    ax.set_xlim(first - 1 if first > 1 else 0, steps)
    ax.set_ylim(0, None)
    ax.set_xlabel(curves[0][1].label)
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    write_atomically(out, lambda fd: fig.savefig(fd, format=Path(out).suffix[1:] or "png"))


def formula_lines(config: NoamConfig, axis: Axis) -> list[str]:
    """The formula in the config's unit, and how the x axis reaches it when it is another unit."""
    v, w, unit = _VARIABLE[config.warmup_unit], config.warmup_num_steps, config.warmup_unit
    if config.d_model is not None:
        lines = [f"  lr({v}) = {config.factor:g} * {config.d_model}**-0.5 * min({v}**-0.5, {v} * {w}**-1.5)"]
    else:
        lines = [f"  lr({v}) = {config.warmup_max_lr:g} * min({v} / {w}, ({w} / {v})**0.5)"]
    if unit != UPDATES:
        lines[0] += f"   ({v}: {unit} seen, the update's own included)"
    n = axis.per_update
    if axis.unit == UPDATES and unit != UPDATES:
        same = " (if every update has as many)" if unit == TOKENS else ""
        lines.append(f"  shown per update, {n} {unit} each{same}: update k uses lr({n} * k)")
    elif axis.unit != unit:
        lines.append(
            f"  shown in {axis.unit}, {n} per update: {axis.name} x falls in update ceil(x / {n}), lr(ceil(x / {n}))"
        )
    if config.cooldown_num_steps is not None:
        f = {LINEAR: "1 - x", ONE_MINUS_SQRT: "1 - sqrt(x)", COSINE: "(1 + cos(pi * x)) / 2"}[config.cooldown_type]
        s, m, c = config.cooldown_start, config.cooldown_min_lr, config.cooldown_num_steps
        lines.append(
            f"  {v} > {s}: lr({v}) = {m:g} + (lr({s}) - {m:g}) * f(min(1, ({v} - {s}) / {c + 1})),  f(x) = {f}"
        )
    if config.d_model is not None and unit != UPDATES:
        lines.append(
            f"  note: the d_model form's peak lr depends on the unit: {config.factor:g} * {config.d_model}**-0.5 * "
            "W**-0.5 "
            f"with W in {unit}; warmup_max_lr sets the peak directly"
        )
    return lines


# ----------------------------------------------------------------------------- the inspect report


def saved_params_text(params: dict[str, Any]) -> str:
    shown = [
        k for k in SCHEDULE_KEYS if params.get(k) is not None and not (k == "warmup_unit" and params[k] == DEFAULT_UNIT)
    ]
    groups = f" groups={short_repr(params['groups'], 300)}" if params.get("groups") else ""
    return " ".join(f"{k}={params[k]}" for k in shown) + groups


def _counter_lines(state: dict[str, Any], unit: str) -> list[str]:
    """The data seen and the global batch at save; older states (or uncounted runs) lack them."""
    lines = []
    for key in DATA_UNITS:
        seen = state.get(key)
        mark = "  (the warmup_unit: the lr follows this count)" if key == unit else ""
        lines.append(f"{key:<12} {'not counted' if seen is None else f'{seen} seen'}{mark}")
    batch = state.get("samples_per_update")
    lines.append(
        f"batch        {'not recorded' if batch is None else f'{batch} samples per update at save'} "
        "(samples_per_update)"
    )
    return lines


def lr_after_save(config: NoamConfig, state: dict[str, Any]) -> tuple[float | None, str]:
    """The lr of the update after the save under `config` (None until its tokens are known), and how it follows."""
    unit = config.warmup_unit
    if unit == UPDATES:
        k = int(state["updates"])
        return config.lr(k + 1), f"lr({k + 1})"
    seen = state.get(unit)
    if seen is None:
        raise CheckpointError(
            f"this state has no count of the {unit} seen (NoamLR with warmup_unit {unit} refuses to resume from it)"
        )
    last = f"the last update's lr was lr({seen}) = {config.lr(seen):.6g}" if seen >= 1 else "no update applied yet"
    batch = state.get("samples_per_update")
    if unit == SAMPLES and batch is not None:
        return config.lr(seen + batch), f"lr({seen} + {batch}) = lr({seen + batch}), if the global batch stays {batch}"
    if unit == SAMPLES:
        return None, f"lr({seen} + N) for a global batch of N (not recorded at save); {last}"
    return None, f"depends on the next update's tokens: lr({seen} + its tokens); {last}"


def _foreign_text(state: Any) -> str:
    if state is None:
        return "none saved"
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a scheduler state"
    if "last_batch_iteration" in state:
        it = state["last_batch_iteration"]
        return f"not NoamLR: a DeepSpeed scheduler state (WarmupLR and the like; last_batch_iteration={it})"
    if "last_epoch" in state:
        return f"not NoamLR: a torch scheduler state (LambdaLR and the like; last_epoch={state['last_epoch']})"
    return f"not NoamLR and not one NoamLR can adopt (keys: {shorten(', '.join(sorted(map(str, state))), 300)})"


def checkpoint_report(
    info: CheckpointInfo, config: NoamConfig | None = None, config_path: str | None = None
) -> tuple[list[str], int]:
    """Lines to print and the exit status: 0 for a NoamLR state that agrees with the config (if any)."""
    lines = [f"checkpoint   {info.path}  ({info.kind})"]
    k, how = info.updates()
    steps = ""
    if info.global_steps is not None:
        steps = f"; DeepSpeed global_steps {info.global_steps}, skipped {info.skipped_steps or 0}"
    status = 0
    if info.is_noam:
        params = info.params
        lines.append(f"schedule     NoamLR  {saved_params_text(params)}")
        lines.append(f"k            {k} optimizer updates applied{steps}")
        lines += _counter_lines(info.state, params["warmup_unit"])
        try:
            saved_config = NoamConfig(**params)
            lines.append(f"cooldown     {saved_config.describe_cooldown()}")
            if saved_config.amendments:
                lines += history_lines(saved_config.amendments, saved_config.unit_name, "amendments   ")
            lr, why = lr_after_save(saved_config, info.state)
        except (ValueError, TypeError) as error:
            lines.append(f"next lr      unknown: the saved parameters are not valid ({error})")
            status = 1
        except CheckpointError as error:
            lines.append(f"next lr      unknown: {error}")
            status = 1
        else:
            amended = " and amendments" if saved_config.amendments else ""
            where = f", the formula with these parameters{amended}" if params["warmup_unit"] == UPDATES else ""
            lines.append(f"next lr      {why}" if lr is None else f"next lr      {lr:.6g}  ({why}{where})")
            if params.get("groups") or any(a.groups is not None for a in saved_config.amendments):
                from noam_plugin.render_groups import next_lr_lines

                lines.append("next lr per group (the line above: every group no override or amendment names)")
                lines += next_lr_lines(params, info.state)
    else:
        lines.append(f"schedule     {_foreign_text(info.state)}")
        if k is None:
            lines.append(f"k            unknown: {how or 'NoamLR cannot tell how many updates were applied'}")
        else:
            lines.append(f"k            NoamLR adopts {k} when it loads this checkpoint ({how}){steps}")
            if config is not None and config.warmup_unit == SAMPLES:
                lines.append(
                    f"next lr      lr({k + 1} * N) under {config_path} for a global batch of N ({k} * N samples seen)"
                )
            elif config is not None and config.warmup_unit == TOKENS:
                lines.append(
                    f"next lr      none: {config_path} counts warmup in tokens and this checkpoint has no token count"
                )
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
        plan = plan_resume(info.state, config, source=info.source or str(info.path))
        count, differing, notes = plan.count, plan.differing, list(plan.notes)
        group_diff: list[str] = []
        if info.params.get("groups") or config.groups:
            from noam_plugin.render_groups import difference_lines

            group_diff, group_notes = difference_lines(info.params, config, count)
            notes += [] if group_diff else group_notes
        rewritten, history_notes = (
            ([], [])
            if count is None
            else history_changes(info.params.get(HISTORY_KEY), config.amendments, count, config.unit_name)
        )
        notes += [note.removeprefix("NoamLR: ") for note in history_notes]
        if rewritten:
            lines.append(f"config       {config_path}: its amendments rewrite the checkpoint's history:")
            lines += [f"  {line}" for line in rewritten]
            status = 1
        if notes and not differing and not group_diff:
            lines.append(f"config       {config_path}: {config.describe_cooldown()}")
            lines += [f"  {note.removeprefix('NoamLR: ')}" for note in notes]
            try:
                lr, why = lr_after_save(config, info.state)
                lines.append(f"  resuming with this config: next lr {why if lr is None else f'{lr:.6g} ({why})'}")
            except CheckpointError as error:
                lines.append(f"  next lr unknown: {error}")
        elif not differing and not group_diff and not rewritten:
            how = f"lr({k + 1})" if config.warmup_unit == UPDATES else "the next lr above"
            lines.append(f"config       {config_path}: same schedule parameters; resuming continues with {how}")
        elif differing or group_diff:
            lines.append(f"config       {config_path}: {len(differing) + len(group_diff)} difference(s):")
            lines += [f"  {key}: checkpoint {info.params[key]!r}, config {now.get(key)!r}" for key in differing]
            lines += group_diff[:MAX_LISTED] + (
                [f"  ... and {len(group_diff) - MAX_LISTED} more"] if len(group_diff) > MAX_LISTED else []
            )
            if config.allow_param_change:
                try:
                    lr, why = lr_after_save(config, info.state)
                    after = why if lr is None else f"{lr:.6g}" + ("" if config.warmup_unit == UPDATES else f" ({why})")
                except CheckpointError as error:
                    after = f"unknown: {error}"
                lines.append(
                    f"  the config sets allow_param_change: true, so a resume continues the new schedule from k={k}: "
                    f"next lr {after}"
                )
            else:
                lines.append(
                    "  resuming with this config stops with an error naming these keys, unless the config sets "
                    "scheduler.params.allow_param_change: true"
                )
            status = 1
    elif not info.is_noam:
        lines.append(
            "verdict      not a NoamLR checkpoint; NoamLR takes over its step count on load (docs/resume.md: migrating)"
            if k is not None
            else "verdict      not a NoamLR checkpoint"
        )
    return lines, status
