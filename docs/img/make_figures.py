"""The docs' pictures of the schedule, drawn by the package's own plotting code (noam_plugin/render.py,
render_groups.py: what `noam-plugin show / cooldown / amend --plot` draw) from the parameters below.

    python docs/img/make_figures.py          # redraw every picture and docs/img/figures.json (needs matplotlib)
    python docs/img/make_figures.py --check  # exit 1 if a picture is stale against FIGURES (no matplotlib needed)

figures.json records, per picture, the parameters it was drawn from and the sha256 of the PNG written;
tests/test_docs.py fails when FIGURES changed without a redraw, or a PNG was replaced by hand.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = HERE / "figures.json"

# name -> what is drawn; every number the pictures show comes from here
FIGURES: dict[str, dict] = {
    "schedule_d_model.png": {
        "kind": "schedule",
        "params": {"d_model": 512, "warmup_num_steps": 4000},
        "steps": 40000,
        "title": "d_model form: d_model**-0.5 * min(k**-0.5, k * W**-1.5)",
    },
    "schedule_peak.png": {
        "kind": "schedule",
        "params": {"warmup_max_lr": 1e-3, "warmup_num_steps": 4000},
        "steps": 40000,
        "title": "peak form: warmup_max_lr * min(k / W, (W / k)**0.5)",
    },
    "cooldown_tails.png": {  # what `noam-plugin cooldown CKPT --over 4000 --type T` prints, for a checkpoint at 16000
        "kind": "tails",
        "params": {"d_model": 512, "warmup_num_steps": 4000},
        "checkpoint": 16000,
        "over": 4000,
        "types": ["linear", "1-sqrt", "cosine"],
        "steps": 21000,
    },
    "amendments_history.png": {  # the history of docs/amendments.md: a rollback (scale + re-warm), then a late tail
        "kind": "history",
        "params": {
            "warmup_num_steps": 1000,
            "warmup_max_lr": 1e-3,
            "amendments": [
                {"at": 5000, "scale": 0.5},
                {"at": 5000, "rewarm_num_steps": 200},
                {"at": 7000, "total_num_steps": 10000, "cooldown_num_steps": 3000, "cooldown_type": "1-sqrt"},
            ],
        },
        "steps": 10500,
    },
    "groups_curves.png": {  # the README's per-group example: µP scale for the hidden matrices, longer warmup
        "kind": "groups",
        "params": {
            "warmup_num_steps": 2000,
            "warmup_max_lr": 3e-3,
            "groups": [{"name": "hidden", "lr_scale": 0.125}, {"name": "embeddings", "warmup_num_steps": 8000}],
        },
        "steps": 40000,
    },
    "hf_inverse_sqrt.png": {  # docs/trainer.md: HF's lr_scheduler_type="inverse_sqrt" against NoamLR, both measured
        "kind": "hf_inverse_sqrt",
        "params": {"warmup_num_steps": 8, "warmup_max_lr": 1e-3},
        "steps": 40,
    },
    "batch_ramp.png": {  # docs/batch-ramps.md: a global batch of 8 -> 16 -> 32, as in test_batch_ramps.py
        "kind": "ramp",
        "params": {
            "warmup_unit": "samples",
            "warmup_max_lr": 0.01,
            "warmup_num_steps": 128,
            "total_num_steps": 448,
            "cooldown_num_steps": 192,
            "cooldown_min_lr": 0.001,
        },
        "ramp": [[0, 8], [64, 16], [192, 32]],
        "updates": 26,
        "steps": 512,
    },
}


def ramp_lrs(params: dict, ramp: list, updates: int) -> tuple[list[int], list[float]]:
    """(samples seen after each update, the lr it ran at) of a real NoamLR whose global batch follows `ramp`
    ([from samples seen, global batch], ...), set before each update as docs/batch-ramps.md says."""
    import torch

    from noam_plugin import NoamLR

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = NoamLR(optimizer, **params)
    used: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    seen = []
    for _ in range(updates):
        scheduler.samples_per_update = [batch for start, batch in ramp if start <= scheduler.samples][-1]
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        seen.append(scheduler.samples)
    return seen, used


def measured_lrs(scheduler_for, updates: int, lr: float) -> list[float]:
    """The lr of updates 1..updates on a real torch optimizer (built with `lr`), read by a step pre-hook, the
    scheduler stepped after each update as the HF Trainer steps it."""
    import torch

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = scheduler_for(optimizer)
    seen: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    for _ in range(updates):
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return seen


def hf_inverse_sqrt_lrs(params: dict, updates: int) -> list[float]:
    """HF's `get_scheduler("inverse_sqrt", num_warmup_steps=W)` over an optimizer built with lr = the peak."""
    from transformers import get_scheduler

    warmup, peak = params["warmup_num_steps"], params["warmup_max_lr"]
    return measured_lrs(lambda opt: get_scheduler("inverse_sqrt", opt, num_warmup_steps=warmup), updates, peak)


def noam_lrs(params: dict, updates: int) -> list[float]:
    from noam_plugin import NoamLR

    return measured_lrs(lambda opt: NoamLR(opt, **params), updates, 0.0)


def draw(name: str, figure: dict, out: Path) -> None:
    from noam_plugin.amend import amendment_marks
    from noam_plugin.render import Axis, params_text, plot_curve, plot_curves
    from noam_plugin.render_groups import group_axes, plot_groups
    from noam_plugin.schedule import NoamConfig

    config = NoamConfig.from_params(figure["params"], source=name, prefix="")
    axis = Axis(config, config.warmup_unit)
    kind, steps = figure["kind"], figure["steps"]
    if kind == "schedule":
        plot_curve(axis, steps, f"{figure['title']}\n{params_text(config)}", str(out))
    elif kind == "tails":
        count, over = figure["checkpoint"], figure["over"]
        curves = [("no cooldown", axis)]
        for shape in figure["types"]:
            tail = {**figure["params"], "total_num_steps": count + over, "cooldown_num_steps": over}
            cooled = NoamConfig.from_params({**tail, "cooldown_type": shape}, source=name, prefix="")
            curves.append((f"{shape} cooldown, updates {count + 1}-{count + over}", Axis(cooled, config.warmup_unit)))
        title = f"three cooldowns from one checkpoint (update {count}), --over {over}\n{params_text(config)}"
        plot_curves(curves, steps, title, str(out), marks=[(count, f"checkpoint (update {count})")])
    elif kind == "history":
        before = NoamConfig.from_params({k: v for k, v in figure["params"].items() if k != "amendments"}, name)
        title = f"a history of amendments\n{params_text(config)}"
        marks = amendment_marks(config, config.unit_name)
        plot_curve(axis, steps, title, str(out), marks=marks, before=Axis(before, config.warmup_unit))
    elif kind == "groups":
        plot_groups(group_axes(config, axis), steps, f"one curve per param group\n{params_text(config)}", str(out))
    elif kind == "hf_inverse_sqrt":
        params = figure["params"]
        noam = noam_lrs(params, steps)
        if noam != [config.lr(k) for k in range(1, steps + 1)]:
            raise AssertionError(f"{name}: NoamLR measured off its own formula")
        w, peak = params["warmup_num_steps"], params["warmup_max_lr"]
        title = f'NoamLR vs HF lr_scheduler_type="inverse_sqrt", both measured (warmup {w}, lr {peak:g})'
        label = 'HF "inverse_sqrt": update 1 at lr 0, each later update one behind'
        plot_curve(
            axis, steps, title, str(out), others=[(label, range(1, steps + 1), hf_inverse_sqrt_lrs(params, steps))]
        )
    elif kind == "ramp":
        params, ramp, updates = figure["params"], figure["ramp"], figure["updates"]
        xs, ys = ramp_lrs(params, ramp, updates)
        if ys != [config.lr(x) for x in xs]:
            raise AssertionError(f"{name}: NoamLR measured off its own formula")
        # the same warmup counted in updates (128 samples = 16 updates at the first batch of 8) under the same ramp
        first = ramp[0][1]
        in_updates = {k: v for k, v in params.items() if k != "warmup_unit"}
        in_updates = {k: v // first if k.endswith("_steps") else v for k, v in in_updates.items()}
        xs_u, ys_u = ramp_lrs({**in_updates, "warmup_unit": "updates"}, ramp, updates)
        sizes = " -> ".join(str(batch) for _, batch in ramp)
        title = f"a global batch of {sizes} samples per update, warmup and cooldown in samples\n{params_text(config)}"
        marks = [(start, f"global batch {batch} from {start} samples") for start, batch in ramp[1:]]
        others = [
            ("measured: NoamLR, warmup_unit samples (each dot an update)", xs, ys),
            (f"measured: the same schedule in updates (/{first}), same ramp", xs_u, ys_u),
        ]
        plot_curve(axis, steps, title, str(out), marks=marks, others=others)
    else:
        raise ValueError(f"{name}: unknown kind {kind!r}")


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def stale() -> list[str]:
    """Pictures whose committed PNG or stamp does not match FIGURES (one line each); [] when all are current."""
    stamp = json.loads(STAMP.read_text()) if STAMP.is_file() else {}
    problems = []
    for name, figure in FIGURES.items():
        entry = stamp.get(name)
        if entry is None:
            problems.append(f"{name}: not drawn yet")
        elif entry["figure"] != figure:
            problems.append(f"{name}: drawn from other parameters than FIGURES gives")
        elif entry["sha256"] != _sha256(HERE / name):
            problems.append(f"{name}: the PNG is not the one make_figures.py wrote (missing or replaced)")
    problems += [f"{name}: in figures.json but not in FIGURES" for name in stamp if name not in FIGURES]
    return problems


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        problems = stale()
        for line in problems:
            print(f"stale: {line} (redraw: python docs/img/make_figures.py)", file=sys.stderr)
        return 1 if problems else 0
    stamp = {}
    for name, figure in FIGURES.items():
        draw(name, figure, HERE / name)
        stamp[name] = {"figure": figure, "sha256": _sha256(HERE / name)}
        print(f"wrote {HERE / name}")
    STAMP.write_text(json.dumps(stamp, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
