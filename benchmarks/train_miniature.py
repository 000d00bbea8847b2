"""Does Noam with a late-decided cooldown train as well as cosine? A miniature, on CPU, no downloads.

Reproduces in miniature the comparisons of Hägele et al. 2024 (arXiv 2405.18392: a short 1-sqrt
cooldown matches cosine; cooldowns branched off one long run replace a family of cosine runs) and
Bergsma et al. 2025 (arXiv 2502.15938: linear decay to zero beats decay to 10% of the peak).

A character-level (byte-level) decoder-only Transformer trained on the standard library's own
Python sources (every 10th file, in sorted order, held out for validation). Every schedule gets
the same peak lr, warmup, batch, data order (the batch of update k depends only on seed and k)
and number of updates:

  cosine      linear warmup, cosine to 10% of the peak
  linear0     linear warmup, linear decay to zero
  noam        NoamLR, no cooldown (also the long run the branches start from)
  noam_1sqrt  NoamLR + 20% 1-sqrt cooldown (total_num_steps / cooldown_num_steps / cooldown_type)
  noam_linear NoamLR + 20% linear cooldown

Branching: the `noam` run saves torch.save checkpoints at 80% of three lengths L; for each, the
real `noam-plugin cooldown CKPT --over 0.2L --type 1-sqrt` command decides the cooldown, and the
run resumes from the checkpoint with the params it prints. Against: separate cosine runs of
length L (the longest is the `cosine` run above).

Shared updates: the two Noam runs with a planned cooldown run the same updates as `noam` up to
the cooldown's start (same lr, data and initial weights), so they resume from `noam`'s checkpoint
there with their planned params (loading a state saved without a cooldown into a NoamLR with one
that starts later is no parameter change). The branch to the longest length is then the same run
as `noam_1sqrt`: the script checks that the command prints exactly its params and reuses it.
The updates are bit-identical to running from update 1 (the data of update k depends on (seed, k)).

    .venv/bin/python benchmarks/train_miniature.py                 # the full run (see --help), ~40 min on 2 cores
    .venv/bin/python benchmarks/train_miniature.py --report-only   # redraw tables / pictures from the JSON

Results: benchmarks/results/miniature.json (written after every run; a rerun skips the runs it
holds, so an interrupted benchmark continues), miniature.md, and docs/img/miniature_*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from noam_plugin import NoamLR

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = ["cosine", "linear0", "noam", "noam_1sqrt", "noam_linear"]
LABELS = {
    "cosine": "cosine to 10% of peak",
    "linear0": "linear decay to zero",
    "noam": "Noam, no cooldown",
    "noam_1sqrt": "Noam + 20% 1-sqrt cooldown",
    "noam_linear": "Noam + 20% linear cooldown",
}
BRANCH_FRACTIONS = (1 / 3, 2 / 3, 1.0)  # the three training lengths, as fractions of --updates
COOLDOWN_FRACTION = 0.2


# ----------------------------------------------------------------------------- data


def stdlib_text() -> tuple[bytes, bytes, int]:
    """Train and validation bytes from the standard library's top-level .py files (fixed split)."""
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    train, val = [], []
    for i, f in enumerate(files):
        (val if i % 10 == 0 else train).append(f.read_bytes())
    return b"".join(train), b"".join(val), len(files)


class Batches:
    """The batch of update k is a function of (seed, k) alone: every schedule and resume sees the same data."""

    def __init__(self, data: bytes, context: int, batch: int):
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.context, self.batch = context, batch

    def get(self, seed: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        starts = torch.randint(0, len(self.data) - self.context - 1, (self.batch,), generator=g)
        idx = starts[:, None] + torch.arange(self.context + 1)
        chunk = self.data[idx]
        return chunk[:, :-1], chunk[:, 1:]


# ----------------------------------------------------------------------------- model


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    """Decoder-only Transformer over bytes (vocabulary 256), pre-LayerNorm, tied embeddings."""

    def __init__(self, d: int, layers: int, heads: int, context: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(256, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.tok.weight, std=0.02)  # tied with the output: unit-variance logits would start at loss ~16
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        for blk in self.blocks:
            h = blk(h)
        return self.ln(h) @ self.tok.weight.T


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


# ----------------------------------------------------------------------------- schedules


def peak_form(peak: float, warmup: int, k: int) -> float:
    """Linear warmup shared by the baselines: update k (1-based) of the warmup runs at peak * k / W."""
    return peak * k / warmup


def baseline_lr(name: str, peak: float, warmup: int, total: int, k: int) -> float:
    """lr of update k (1-based) for the two non-Noam baselines."""
    if k <= warmup:
        return peak_form(peak, warmup, k)
    x = min(1.0, (k - warmup) / (total - warmup))
    if name == "cosine":  # to 10% of the peak at update `total`
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)))
    if name == "linear0":  # to zero after update `total` (update `total` still runs above 0)
        return peak * (total + 1 - k) / (total + 1 - warmup)
    raise ValueError(name)


def make_scheduler(name: str, opt: torch.optim.Optimizer, a: argparse.Namespace, total: int):
    """A scheduler whose lr is set before each update. Baselines: LambdaLR with a 1-based k."""
    if name in ("cosine", "linear0"):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: baseline_lr(name, 1.0, a.warmup, total, s + 1)
        )  # base lr = peak
    return NoamLR(opt, **noam_params(name, a, total))


def noam_params(name: str, a: argparse.Namespace, total: int) -> dict:
    """NoamLR's parameters: the peak form; the cooldown runs end with a 20% cooldown at `total`."""
    params = {"warmup_max_lr": a.peak_lr, "warmup_num_steps": a.warmup}
    if name != "noam":
        params.update(
            total_num_steps=total,
            cooldown_num_steps=round(COOLDOWN_FRACTION * total),
            cooldown_type={"noam_1sqrt": "1-sqrt", "noam_linear": "linear"}[name],
        )
    return params


# ----------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        train, val, nfiles = stdlib_text()
        self.train = Batches(train, a.context, a.batch)
        val_batches = Batches(val, a.context, a.batch)
        self.val = [val_batches.get(12345, i) for i in range(a.eval_batches)]
        self.data_info = {"stdlib_files": nfiles, "train_bytes": len(train), "val_bytes": len(val)}

    def new(self, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = CharLM(self.a.d_model, self.a.layers, self.a.heads, self.a.context)
        opt = torch.optim.AdamW(model.parameters(), lr=self.a.peak_lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.1)
        return model, opt

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        model.eval()
        out = sum(loss_of(model, x, y).item() for x, y in self.val) / len(self.val)
        model.train()
        return out

    def run(self, model, opt, sched, seed: int, first: int, last: int, label: str, saves=(), save_dir=None) -> dict:
        """Updates first..last (1-based, inclusive); val loss every eval_every and at `last`; lrs used."""
        curve, lrs, t0 = [], [], time.time()
        for k in range(first, last + 1):
            lrs.append(opt.param_groups[0]["lr"])
            x, y = self.train.get(seed, k)
            loss_of(model, x, y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if k % self.a.eval_every == 0 or k == last:
                curve.append([k, self.evaluate(model)])
                done = k - first + 1
                eta = (time.time() - t0) / done * (last - k)
                progress(f"{label}: update {k}/{last}, val loss {curve[-1][1]:.4f}, lr {lrs[-1]:.2e}, eta {eta:.0f} s")
            if k in saves:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
                torch.save(state, Path(save_dir) / f"update_{k:06d}.pt")
        return {"curve": curve, "lrs": lrs, "final": curve[-1][1], "seconds": round(time.time() - t0, 1)}


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def cooldown_params(ckpt: Path, over: int) -> tuple[dict, str]:
    """Run the real `noam-plugin cooldown` on a checkpoint; the scheduler params it prints."""
    cmd = [sys.executable, "-m", "noam_plugin", "cooldown", str(ckpt), "--over", str(over), "--type", "1-sqrt"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout
    block = out.split("\n\n")[0]  # comment lines, then the YAML block, then a blank line and the table
    return yaml.safe_load(block)["scheduler"]["params"], " ".join(cmd[2:]).replace(str(ckpt.parent) + "/", "")


def resume(tr: Trainer, seed: int, ckpt: Path, params: dict) -> tuple[nn.Module, torch.optim.Optimizer, NoamLR]:
    """Model, optimizer and a NoamLR with `params` from a checkpoint of the `noam` run."""
    model, opt = tr.new(seed)
    state = torch.load(ckpt, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched = NoamLR(opt, **params)
    sched.load_state_dict(state["scheduler"])  # a cooldown starting after the saved count: no parameter change
    return model, opt, sched


def run_seed(tr: Trainer, a: argparse.Namespace, seed: int, results: dict, save) -> None:
    """Every run of one seed. The Noam runs share their updates before the cooldown (see the module doc)."""
    runs = results["runs"].setdefault(str(seed), {})
    lengths = [round(f * a.updates) for f in BRANCH_FRACTIONS]
    branch_at = [round((1 - COOLDOWN_FRACTION) * n) for n in lengths]
    names = [f"noam_{t}" for t in ("1sqrt", "linear")] + [f"branch_{n}" for n in lengths[:-1]]
    with tempfile.TemporaryDirectory(prefix="miniature_") as tmp:
        if "noam" not in runs or any(k not in runs for k in names):
            model, opt = tr.new(seed)
            sched = make_scheduler("noam", opt, a, a.updates)
            runs["noam"] = tr.run(model, opt, sched, seed, 1, a.updates, f"seed {seed} noam", set(branch_at), tmp)
            save()
            noam = runs["noam"]
            for n, at in zip(lengths, branch_at):
                ckpt = Path(tmp) / f"update_{at:06d}.pt"
                params, cmd = cooldown_params(ckpt, n - at)  # the real command line decides the cooldown
                if n == a.updates:  # the planned 20% cooldowns of the same-length comparison start here too
                    for name in ("noam_1sqrt", "noam_linear"):
                        planned = noam_params(name, a, n)
                        model, opt, sched = resume(tr, seed, ckpt, planned)
                        r = tr.run(model, opt, sched, seed, at + 1, n, f"seed {seed} {name} (from {at})")
                        runs[name] = shared(noam, r, at, cmd if name == "noam_1sqrt" else None)
                        if name == "noam_1sqrt":  # the command's params are exactly the planned ones
                            assert params == planned, (params, planned)
                        save()
                    continue
                model, opt, sched = resume(tr, seed, ckpt, params)
                r = tr.run(model, opt, sched, seed, at + 1, n, f"seed {seed} branch to {n} (from {at})")
                runs[f"branch_{n}"] = shared(noam, r, at, cmd) | {"params": params}
                save()
        for name, n in [("cosine", a.updates), ("linear0", a.updates)] + [("cosine", n) for n in lengths[:-1]]:
            key = name if n == a.updates else f"{name}_{n}"
            if key in runs:
                continue
            model, opt = tr.new(seed)
            runs[key] = tr.run(model, opt, make_scheduler(name, opt, a, n), seed, 1, n, f"seed {seed} {key}")
            save()


def shared(noam: dict, tail: dict, at: int, cmd: str | None) -> dict:
    """A run that is the `noam` run up to update `at`, then `tail`: its whole curve and lr sequence."""
    curve = [p for p in noam["curve"] if p[0] <= at] + tail["curve"]
    return {**tail, "curve": curve, "lrs": noam["lrs"][:at] + tail["lrs"], "from": at, "command": cmd}


# ----------------------------------------------------------------------------- report


def stats(values: list[float]) -> tuple[float, float, float]:
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd, max(values) - min(values)


def branch_key(n: int, lengths: list[int]) -> str:
    """The branch to the longest length is the planned `noam_1sqrt` run (same checkpoint, same params)."""
    return "noam_1sqrt" if n == lengths[-1] else f"branch_{n}"


def summarize(results: dict) -> dict:
    a = results["config"]
    lengths = [round(f * a["updates"]) for f in BRANCH_FRACTIONS]
    needed = SCHEDULES + [f"branch_{n}" for n in lengths[:-1]] + [f"cosine_{n}" for n in lengths[:-1]]
    # only seeds with every run (an interrupted benchmark reports the seeds it finished)
    seeds = sorted((s for s, r in results["runs"].items() if all(k in r for k in needed)), key=int)
    runs = [results["runs"][s] for s in seeds]
    if not runs:
        return {}
    out = {"seeds": [int(s) for s in seeds], "schedules": {}, "branching": []}
    ref = [r["cosine"]["final"] for r in runs]
    for name in SCHEDULES:
        finals = [r[name]["final"] for r in runs]
        m, sd, spread = stats(finals)
        dm, dsd, _ = stats([f - c for f, c in zip(finals, ref)])
        out["schedules"][name] = {"mean": m, "sd": sd, "range": spread, "vs_cosine_mean": dm, "vs_cosine_sd": dsd}
    for n in lengths:
        cos = [r["cosine" if n == lengths[-1] else f"cosine_{n}"]["final"] for r in runs]
        br = [r[branch_key(n, lengths)]["final"] for r in runs]
        (cm, csd, _), (bm, bsd, _), (dm, dsd, _) = stats(cos), stats(br), stats([b - c for b, c in zip(br, cos)])
        out["branching"].append(
            {"length": n, "branch_from": runs[0][branch_key(n, lengths)]["from"], "cosine_mean": cm, "cosine_sd": csd}
            | {"branch_mean": bm, "branch_sd": bsd, "diff_mean": dm, "diff_sd": dsd}
        )
    longest = lengths[-1]
    out["updates_spent"] = {
        "cosine_family": sum(lengths),
        # the long run up to its last checkpoint, then each cooldown
        "branching": round((1 - COOLDOWN_FRACTION) * longest) + sum(round(COOLDOWN_FRACTION * n) for n in lengths),
    }
    return out


def write_report(results: dict, md_path: Path, img_dir: Path) -> str:
    s = summarize(results)
    a = results["config"]
    if not s:
        return ""
    lines = [
        "# Miniature schedule comparison (benchmarks/train_miniature.py)",
        "",
        f"{a['params'] / 1e6:.2f} M-parameter byte-level decoder-only Transformer (d_model {a['d_model']}, "
        f"{a['layers']} layers, {a['heads']} heads, context {a['context']}), batch {a['batch']} sequences, "
        f"{a['updates']} updates, warmup {a['warmup']}, peak lr {a['peak_lr']:g} (AdamW 0.9/0.98, weight decay 0.1, "
        f"clip 1.0); data: {results['data']['stdlib_files']} standard-library .py files of Python "
        f"{results['env']['python']} ({results['data']['train_bytes']:,} train bytes, "
        f"{results['data']['val_bytes']:,} held-out bytes). Seeds {s['seeds']}; "
        f"validation loss (nats per byte) on {a['eval_batches']} fixed held-out batches. "
        f"Training and evaluation took {results['env'].get('minutes', '?')} min on {results['env']['threads']} torch "
        f"thread(s) (load average {' '.join(f'{x:.1f}' for x in results['env']['load_average_at_start'])} at start). "
        f"Command: `python benchmarks/train_miniature.py{results.get('args', '')}`.",
        "",
        "## Same length, five schedules",
        "",
        f"| schedule | final val loss, mean ± sd ({len(s['seeds'])} seeds) | range | minus cosine (paired) |",
        "|---|---|---|---|",
    ]
    for name, v in s["schedules"].items():
        lines.append(
            f"| {LABELS[name]} | {v['mean']:.4f} ± {v['sd']:.4f} | {v['range']:.4f} | "
            f"{v['vs_cosine_mean']:+.4f} ± {v['vs_cosine_sd']:.4f} |"
        )
    u = s["updates_spent"]
    lines += [
        "",
        "## Branched cooldowns against a family of cosine runs",
        "",
        "One Noam run without a planned end; at 80% of each length a checkpoint, resumed with the "
        "cooldown printed by `noam-plugin cooldown CKPT --over 0.2L --type 1-sqrt`.",
        "",
        "| length L | branch from | cosine run of L | branched cooldown | branch minus cosine (paired) |",
        "|---|---|---|---|---|",
    ]
    for b in s["branching"]:
        lines.append(
            f"| {b['length']} | {b['branch_from']} | {b['cosine_mean']:.4f} ± {b['cosine_sd']:.4f} | "
            f"{b['branch_mean']:.4f} ± {b['branch_sd']:.4f} | {b['diff_mean']:+.4f} ± {b['diff_sd']:.4f} |"
        )
    lines += [
        "",
        f"Updates spent for the three lengths: separate cosine runs {u['cosine_family']}, "
        f"one Noam run + branched cooldowns {u['branching']} "
        f"({u['branching'] / u['cosine_family']:.0%} of the cosine family).",
        "",
    ]
    md = "\n".join(lines)
    md_path.write_text(md)
    plot(results, s, img_dir)
    return md


def plot(results: dict, s: dict, img_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [results["runs"][str(x)] for x in s["seeds"]]
    img_dir.mkdir(parents=True, exist_ok=True)

    def mean_curve(key: str):
        curves = [r[key]["curve"] for r in runs]
        xs = [p[0] for p in curves[0]]
        ys = [[c[i][1] for c in curves] for i in range(len(xs))]
        return xs, [sum(v) / len(v) for v in ys], [min(v) for v in ys], [max(v) for v in ys]

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 8), height_ratios=[3, 1.3], sharex=True)
    for name in SCHEDULES:
        xs, m, lo, hi = mean_curve(name)
        (line,) = ax.plot(xs, m, label=LABELS[name])
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax2.plot(range(1, len(runs[0][name]["lrs"]) + 1), runs[0][name]["lrs"], color=line.get_color())
    finals = [v["mean"] for v in s["schedules"].values()]
    _, noam_mean, _, _ = mean_curve("noam")
    ax.set_ylim(min(finals) - 0.05, max(noam_mean[len(noam_mean) // 4], max(finals)) + 0.02)
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title(f"Same peak lr, warmup, batch, {results['config']['updates']} updates (mean, min-max of seeds)")
    ax.legend()
    ax2.set_ylabel("lr")
    ax2.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(img_dir / "miniature_schedules.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    xs, m, lo, hi = mean_curve("noam")
    ax.plot(xs, m, color="gray", label="Noam long run (no cooldown)")
    for i, b in enumerate(s["branching"]):
        n = b["length"]
        color = f"C{i}"
        bx, bm, _, _ = mean_curve(branch_key(n, [b["length"] for b in s["branching"]]))
        tail = [(x, y) for x, y in zip(bx, bm) if x > b["branch_from"]]
        start = [p for p in zip(xs, m) if p[0] <= b["branch_from"]][-1:]  # the long run's last point before it
        tx, ty = [x for x, _ in start + tail], [y for _, y in start + tail]
        ax.plot(tx, ty, color=color, label=f"branched 1-sqrt cooldown to {n}")
        cx, cm, _, _ = mean_curve("cosine" if n == s["branching"][-1]["length"] else f"cosine_{n}")
        ax.plot(cx, cm, color=color, linestyle="--", label=f"cosine run of {n}")
    ax.set_ylim(min(b["branch_mean"] for b in s["branching"]) - 0.05, m[len(m) // 4] + 0.1)
    ax.set_xlabel("update")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("One Noam run + cooldowns decided by `noam-plugin cooldown` vs separate cosine runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img_dir / "miniature_branching.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--updates", type=int, default=240, help="updates of every same-length run (default 240)")
    p.add_argument("--warmup", type=int, default=24)
    p.add_argument("--peak-lr", type=float, default=3e-3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=30)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: far faster on a loaded machine)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/miniature.json"))
    p.add_argument("--img-dir", default=str(ROOT / "docs/img"))
    p.add_argument("--report-only", action="store_true", help="only redraw the table and pictures from --out")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.report_only:
        print(write_report(json.loads(out.read_text()), out.with_suffix(".md"), Path(a.img_dir)))
        return 0
    torch.set_num_threads(a.threads)
    tr = Trainer(a)
    config = {k: v for k, v in vars(a).items() if k not in ("out", "img_dir", "report_only", "threads")}
    config["params"] = sum(p.numel() for p in tr.new(0)[0].parameters())
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("config") != config:  # another setting: start over
        results = {"config": config, "runs": {}}
    results["data"] = tr.data_info
    changed = {k: v for k, v in config.items() if k != "params" and v != p.get_default(k)}
    results["args"] = "".join(f" --{k.replace('_', '-')} {v}" for k, v in changed.items())
    results["env"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": a.threads,
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_start": os.getloadavg(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results))
        tmp.replace(out)

    progress(f"{config['params'] / 1e6:.2f} M parameters, {a.updates} updates x {a.seeds} seeds; results in {out}")
    for seed in range(a.seeds):
        run_seed(tr, a, seed, results, save)
    seconds = sum(r["seconds"] for runs in results["runs"].values() for r in runs.values())
    results["env"]["minutes"] = round(seconds / 60, 1)  # training and evaluation, over all invocations
    save()
    print(write_report(results, out.with_suffix(".md"), Path(a.img_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
