#!/usr/bin/env python
"""Compare a killed-and-resumed run with an uninterrupted reference: picture, table, verdict.

    python launch/compare_runs.py --reference runs/demo/reference --resumed runs/demo/resumed \
        --config configs/demo.yaml --plot runs/demo/lr_resume.png

Reads each run's metrics.csv (written by launch/train.py). Exit 0 when every update of
the resumed run, including those redone after the kill, used exactly the reference's lr;
1 otherwise. The expected curve is recomputed here from the config's parameters with
the paper's formula, as an independent check of both runs: only the config file is read
with the package's reader (read_config_file), the schedule itself is not taken from it.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from noam_plugin.config import read_config_file
from noam_plugin.errors import ConfigError


def read_metrics(path: Path) -> list[dict]:
    path = path / "metrics.csv" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"compare_runs.py: {path}: no metrics file (did the run start?)")
    with path.open() as f:
        return [
            {
                "update": int(r["update"]),
                "lr": float(r["lr"]),
                "loss": float(r["loss"]),
                "world_size": int(r["world_size"]),
                "attempt": int(r["attempt"]),
                "backend": r.get("backend", ""),
            }
            for r in csv.DictReader(f)
        ]


def formula(params: dict):
    """docs/CONTRACT.md section 1, written out again (with the cooldown tail when the params have one).

    On purpose not noam_plugin.schedule: this is the independent reference the demo's verdict checks
    both runs against, so a mistake in the package's formula cannot pass unseen.
    """
    w = params["warmup_num_steps"]
    if params.get("d_model") is not None:
        d, f = params["d_model"], params.get("factor", 1.0)
        noam = lambda k: f * d**-0.5 * min(k**-0.5, k * w**-1.5)  # noqa: E731
    else:
        peak = params["warmup_max_lr"]
        noam = lambda k: peak * min(k / w, (w / k) ** 0.5)  # noqa: E731
    c = params.get("cooldown_num_steps")
    if c is None:
        return noam
    s, m = params["total_num_steps"] - c, params.get("cooldown_min_lr", 0.0)
    shape = {
        "linear": lambda x: 1 - x,
        "1-sqrt": lambda x: 1 - math.sqrt(x),
        "cosine": lambda x: (1 + math.cos(math.pi * x)) / 2,
    }[params.get("cooldown_type", "linear")]
    return lambda k: noam(k) if k <= s else m + (noam(s) - m) * shape(min(1, (k - s) / (c + 1)))


def scheduler_params(config: Path) -> dict:
    """The raw `scheduler.params` of the run's config (YAML 1.2 numbers: `1e-3` is a float)."""
    try:
        return read_config_file(config)["scheduler"]["params"]
    except (ConfigError, OSError, KeyError, TypeError) as error:
        raise SystemExit(f"compare_runs.py: {config}: no scheduler.params to check against ({error})") from None


def plural(world: int) -> str:
    return f"{world} process{'es' if world > 1 else ''}"


def draw(path: Path, ref: list[dict], res: list[dict], kill: int | None, resume_from: int | None, verdict: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    who = f"{ref[0]['backend']}, {plural(ref[0]['world_size'])}"
    ax_lr.plot(
        [r["update"] for r in ref],
        [r["lr"] for r in ref],
        color="0.75",
        lw=6,
        label=f"reference, never stopped ({who})",
        zorder=1,
    )
    ax_loss.plot([r["update"] for r in ref], [r["loss"] for r in ref], color="0.6", lw=2, label="reference")
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    attempts = sorted({r["attempt"] for r in res})
    for attempt in attempts:
        rows = [r for r in res if r["attempt"] == attempt]
        how = "killed" if attempt != attempts[-1] else "resumed" if attempt > 1 else "run"
        label = f"{how}: {rows[0]['backend']}, {plural(rows[0]['world_size'])}"
        color = colors[(attempt - 1) % len(colors)]
        ax_lr.plot([r["update"] for r in rows], [r["lr"] for r in rows], ".", ms=4, color=color, label=label, zorder=2)
        ax_loss.plot([r["update"] for r in rows], [r["loss"] for r in rows], "-", lw=1, color=color, label=label)
    for ax in (ax_lr, ax_loss):
        if kill is not None and resume_from is not None and kill > resume_from:
            ax.axvspan(resume_from, kill, color="tab:red", alpha=0.08, lw=0)  # updates done twice
        if kill is not None:
            ax.axvline(kill, color="tab:red", ls="--", lw=1.2)
        if resume_from is not None:
            ax.axvline(resume_from, color="tab:green", ls=":", lw=1.5)
    top = max(r["lr"] for r in ref)
    if kill is not None:
        ax_lr.annotate(
            f"SIGKILL after update {kill}",
            (kill, top * 0.25),
            xytext=(6, 0),
            textcoords="offset points",
            color="tab:red",
        )
    if resume_from is not None:
        ax_lr.annotate(
            f"resumed from checkpoint {resume_from}",
            (resume_from, top * 0.12),
            xytext=(6, 0),
            textcoords="offset points",
            color="tab:green",
        )
    ax_lr.set_ylabel("learning rate used by the update")
    ax_lr.set_title(verdict, fontsize=10)
    ax_lr.legend(loc="upper right")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_xlabel("optimizer update k")
    ax_loss.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="run folder or metrics.csv of the uninterrupted run")
    p.add_argument(
        "--resumed", type=Path, required=True, help="run folder or metrics.csv of the killed-and-resumed run"
    )
    p.add_argument("--config", type=Path, help="YAML with the scheduler block, to check both runs against the formula")
    p.add_argument("--plot", type=Path, help="write the picture here (PNG)")
    args = p.parse_args(argv)

    ref, res = read_metrics(args.reference), read_metrics(args.resumed)
    ref_lr = {r["update"]: r["lr"] for r in ref}
    ref_loss = {r["update"]: r["loss"] for r in ref}
    attempts = sorted({r["attempt"] for r in res})
    first = [r for r in res if r["attempt"] == attempts[0]]
    later = [r for r in res if r["attempt"] != attempts[0]]
    kill = first[-1]["update"] if later else None
    resume_from = later[0]["update"] - 1 if later else None
    redone = [r for r in later if r["update"] <= (kill or 0)]
    params = scheduler_params(args.config) if args.config else {}
    # A cooldown decided at resume (noam-plugin cooldown) starts after the checkpoint: the killed attempt's
    # updates past it were thrown away and redone inside the cooldown, so those old rows ran without it.
    cool_start = params["total_num_steps"] - params["cooldown_num_steps"] if params.get("cooldown_num_steps") else None
    last_of = {r["update"]: r for r in res}  # after a resume the redone row is the one that counted
    before_cooldown = [
        r for r in res if last_of[r["update"]] is not r and cool_start is not None and r["update"] > cool_start
    ]

    mismatched = [r for r in res if ref_lr.get(r["update"]) != r["lr"] and r not in before_cooldown]
    diffs = [abs(r["lr"] - ref_lr[r["update"]]) for r in res if r["update"] in ref_lr and r not in before_cooldown]
    covered = {r["update"] for r in res} & set(ref_lr)
    identical = not mismatched and covered == set(ref_lr) and len(ref_lr) == len(ref)
    n_same = len(covered) - len({r["update"] for r in mismatched})
    verdict = (
        f"lr sequences {'identical' if identical else 'DIFFERENT'}: "
        f"{n_same}/{len(ref_lr)} updates (max abs diff {max(diffs, default=float('nan'))})"
    )
    if redone and identical:
        verdict += f"; the {len(redone)} updates redone after the kill too"

    # the table: the moments that matter
    marks = {1: "first update", max(ref_lr): "last update"}
    if args.config:
        marks.setdefault(params["warmup_num_steps"], "peak (warmup_num_steps)")
        cooldown = params.get("cooldown_num_steps")
        if cooldown is not None:
            start = params["total_num_steps"] - cooldown
            marks.setdefault(start + 1, "first update of the cooldown")
            marks.setdefault(start + (cooldown + 1) // 2, "middle of the cooldown")
            marks.setdefault(params["total_num_steps"], "last update of the cooldown")
    if resume_from is not None:
        marks[resume_from] = "checkpoint resumed from"
        marks[kill] = "last update before SIGKILL"
        marks[resume_from + 1] = "first update after resume"
    print(
        f"{'update':>6}  {'reference lr':>13}  {'resumed lr':>13}  {'procs':>5}  {'ref loss':>8}  {'res loss':>8}"
        "  moment"
    )
    for k in sorted(marks):
        r = first[-1] if k == kill else last_of.get(k)
        if r is None or k not in ref_lr:
            continue
        same = "" if r["lr"] == ref_lr[k] else "  <-- differs"
        if r in before_cooldown:
            same = "  (no cooldown yet: redone in it)"
        print(
            f"{k:>6}  {ref_lr[k]:>13.6e}  {r['lr']:>13.6e}  {r['world_size']:>5}  {ref_loss[k]:>8.4f}  "
            f"{r['loss']:>8.4f}  {marks[k]}{same}"
        )
    n = max(1, len(ref) // 10)
    start_loss, end_loss = sum(r["loss"] for r in ref[:n]) / n, sum(r["loss"] for r in ref[-n:]) / n
    res_end = [last_of[k]["loss"] for k in sorted(last_of)][-n:]
    print(
        f"loss (mean of first/last {n} updates): reference {start_loss:.3f} -> {end_loss:.3f}, "
        f"resumed ends at {sum(res_end) / len(res_end):.3f}"
        "\n  (late digits drift apart: 2 processes sum the batch in another order than 1)"
    )
    if args.config and params.get("cooldown_num_steps") is not None:
        start, end = params["total_num_steps"] - params["cooldown_num_steps"], params["total_num_steps"]

        def mean_loss(rows, lo, hi):
            picked = [r["loss"] for r in rows if lo <= r["update"] <= hi]
            return sum(picked) / len(picked) if picked else float("nan")

        span = max(1, min(n, params["cooldown_num_steps"] // 4))
        resumed_rows = [last_of[k] for k in sorted(last_of)]

        def drop(rows):
            return f"{mean_loss(rows, start - span + 1, start):.3f} -> {mean_loss(rows, end - span + 1, end):.3f}"

        kind = params.get("cooldown_type", "linear")
        print(
            f"cooldown ({kind}, updates {start + 1}-{end}): loss (mean of {span} updates) "
            f"{drop(ref)} in the reference, {drop(resumed_rows)} resumed"
        )
    if redone:
        before = {r["update"]: r["loss"] for r in first}
        # a row's loss is computed before its own update: with a new lr from cool_start + 1 on, only the first compares
        same_past = [r for r in redone if cool_start is None or r["update"] <= cool_start + 1]
        gap = max((abs(r["loss"] - before[r["update"]]) for r in same_past), default=float("nan"))
        print(
            f"updates {redone[0]['update']}-{redone[-1]['update']} ran twice (before the kill, again after resume): "
            f"loss differs by at most {gap:.1e}"
            + (f" where the lr was the same (updates up to {same_past[-1]['update']})" if before_cooldown else "")
            + ", so model and optimizer state came back too"
        )
    if before_cooldown:
        print("  before the kill they ran without the cooldown decided at resume; after it, inside the cooldown")
    if args.config:
        lr = formula(params)
        old = formula({k: v for k, v in params.items() if k not in ("total_num_steps", "cooldown_num_steps")})
        worst = max(
            max(abs(r["lr"] - lr(r["update"])) for r in ref),
            max(abs(r["lr"] - (old if r in before_cooldown else lr)(r["update"])) for r in res),
        )
        print(f"formula check: both runs within {worst:.1e} of the paper's formula with {args.config}'s parameters")
        if worst > 1e-12:
            identical = False
            verdict += " (but they do not follow the formula)"
    if args.plot:
        draw(args.plot, ref, res, kill, resume_from, verdict)
        print(f"picture: {args.plot}")
    for r in mismatched[:5]:
        print(f"  update {r['update']} (attempt {r['attempt']}): lr {r['lr']!r}, reference {ref_lr.get(r['update'])!r}")
    print(verdict)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
