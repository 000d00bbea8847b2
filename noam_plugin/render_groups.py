"""What the command line shows for a schedule with `groups` (docs/groups.md): one curve per override next to
the main one (tables, one terminal picture, one PNG), the next lr per group of a checkpoint, and the per-group
differences a resume would meet. Without a training script the param groups are unknown, so a curve is shown
per override (the groups it selects) and one for the main curve (every group no override selects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noam_plugin.groups import group_changes, group_kinds, kind_curve
from noam_plugin.render import Axis, _round_div, check_plot_range, framed, lr_after_save, params_text, plot_format
from noam_plugin.safe_io import MAX_LISTED, write_atomically
from noam_plugin.schedule import COOLDOWN_KEYS, NoamConfig

MARKS = "*abcdefghijklmnopqrstuvwxyz"  # the main curve, then each override, in the terminal picture


@dataclass(frozen=True)
class GroupAxis(Axis):
    """An Axis on one group's curve, times its lr_scale."""

    scale: float = 1.0
    title: str = "main"

    def lr(self, x: int) -> float:
        return super().lr(x) * self.scale


def group_axes(config: NoamConfig, axis: Axis) -> list[GroupAxis]:
    """The main curve first ('other groups'), then one per kind of param group the config tells apart
    (groups.group_kinds: each override, each group an amendment names), all on `axis`'s x axis: each read
    from the curve NoamLR writes for such a group (groups.kind_curve). At most MAX_LISTED curves."""
    axes = []
    for kind in group_kinds(config)[:MAX_LISTED]:
        curve, scale = kind_curve(config, kind)
        axes.append(GroupAxis(curve, axis.unit, axis.per_update, scale, kind.label))
    return axes


def left_out(config: NoamConfig) -> str | None:
    """A line saying how many kinds of param group are not drawn (past MAX_LISTED), or None."""
    n = len(group_kinds(config))
    return f"  ... and {n - MAX_LISTED} more curves not shown (at most {MAX_LISTED} are)" if n > MAX_LISTED else None


def group_summary(axes: list[GroupAxis]) -> list[str]:
    """One line per curve: what it is and where its peak is."""
    lines = []
    for mark, a in zip(MARKS, axes):
        scale = f" x lr_scale {a.scale:g}" if a.scale != 1.0 else ""
        lines.append(
            f"  {mark} {a.title:<16} {params_text(a.config)}{scale}: peak lr {a.lr(a.peak):.4e} at {a.name} {a.peak}"
        )
    return lines


def group_table(axes: list[GroupAxis], positions: list[int]) -> list[str]:
    """lr of every curve at each position, one column per curve."""
    width = max(11, *(len(a.title) for a in axes))
    head = f"{axes[0].name:>10}  " + "  ".join(f"{a.title:>{width}}" for a in axes)
    return [head] + [f"{k:>10}  " + "  ".join(f"{a.lr(k):>{width}.4e}" for a in axes) for k in positions]


def ascii_curves(axes: list[GroupAxis], steps: int, width: int = 60, height: int = 10, first: int = 1) -> list[str]:
    """All curves in one terminal picture on one lr scale, each drawn with its own letter (the main one '*')."""
    width = max(1, min(width, steps - first + 1))
    cols = [first + _round_div(c * (steps - first), max(1, width - 1)) for c in range(width)]
    values = [[a.lr(k) for k in cols] for a in axes]
    top = max(max(v) for v in values)
    grid = [[" "] * width for _ in range(height)]
    for mark, row in reversed(list(zip(MARKS, values))):  # the main curve drawn last: on top where they meet
        for c, lr in enumerate(row):
            grid[height - 1 - round(lr / top * (height - 1))][c] = mark
    lines = framed(grid, top, first, steps, axes[0].label)
    pad = " " * len(f"{top:.2e}")
    lines.append(f"{pad}  " + "   ".join(f"{mark} {a.title}" for mark, a in zip(MARKS, axes)))
    return lines


def plot_groups(axes: list[GroupAxis], steps: int, title: str, out: str, mark: tuple[int, str] | None = None) -> None:
    """Every curve in one PNG; matplotlib is optional and imported only here."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'noam-plugin[plot]'") from None
    check_plot_range(axes[0].name, steps)
    stride = axes[0].stride
    last = max(1, steps // stride)
    n = min(last, 2000)
    ks = sorted({stride * (1 + round(i * (last - 1) / max(1, n - 1))) for i in range(n)} | {a.peak for a in axes})
    ks = [k for k in ks if k <= steps]
    fig = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for a in axes:
        scale = f" x {a.scale:g}" if a.scale != 1.0 else ""
        ax.plot(ks, [a.lr(k) for k in ks], lw=2, label=f"{a.title}: {params_text(a.config)}{scale}")
    if mark is not None:
        ax.axvline(mark[0], color="tab:gray", ls="--", lw=1, label=mark[1])
    ax.set_xlim(0, steps)
    ax.set_ylim(0, None)
    ax.set_xlabel(axes[0].label)
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    write_atomically(out, lambda fd: fig.savefig(fd, format=plot_format(out)))


def show_groups(
    config: NoamConfig, axis: Axis, positions: list[int], steps: int, plot: tuple[str, str] | None, first: int = 1
) -> None:
    """`show` and `cooldown` for a schedule with groups: every curve's summary, a table, a picture, a PNG."""
    axes = group_axes(config, axis)
    print(f"groups: {len(config.groups)} override(s); the main curve drives every other param group")
    print("\n".join(group_summary(axes)))
    more = left_out(config)
    if more:
        print(more)
    print()
    print("\n".join(group_table(axes, positions)))
    print()
    print("\n".join(ascii_curves(axes, steps, first=first)))
    if plot is not None:
        plot_groups(
            axes, steps, plot[1], plot[0], mark=(first, f"checkpoint ({axis.name} {first})") if first > 1 else None
        )
        print(f"\nplot written to {plot[0]}")


def cooled_groups(config: NoamConfig) -> list[dict[str, Any]]:
    """`cooldown`: the overrides as written back, less their own tail keys, so each group takes the new cooldown."""
    tail = set(COOLDOWN_KEYS)
    return [{k: v for k, v in o.as_dict().items() if k not in tail} for o in config.groups]


def next_lr_lines(params: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """`inspect`: the next lr of each kind of param group other than the main one under the saved parameters,
    read from the curve NoamLR writes for it (groups.kind_curve)."""
    config = NoamConfig(**params)
    lines = []
    for kind in group_kinds(config)[1:MAX_LISTED]:
        curve, scale = kind_curve(config, kind)
        lr, why = lr_after_save(curve, state)
        times = f" x lr_scale {scale:g}" if scale != 1.0 else ""
        shown = why if lr is None else f"{lr * scale:.6g}  ({why} of its curve{times})"
        lines.append(f"  {kind.label:<18} {shown}")
    more = left_out(config)
    return lines + ([more] if more else [])


def difference_lines(params: dict[str, Any], config: NoamConfig, count: int | None) -> tuple[list[str], list[str]]:
    """`inspect --config`: (one line per group key a resume would refuse, notes on per-group cooldowns)."""
    changes, notes = group_changes(params, config, count)
    return [f"  {key}: checkpoint {old!r}, config {new!r}" for key, old, new in changes], notes
