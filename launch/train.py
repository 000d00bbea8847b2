#!/usr/bin/env python
"""Train a miniature "Attention Is All You Need" Transformer with NoamLR, under any launcher.

The task (reverse or copy random token sequences) is generated on the fly from
(seed, update), and every update sees the same global batch whatever the number
of processes, so runs on 1 or 2 processes, stopped or not, can be compared.

    python launch/train.py --config configs/demo.yaml --output-dir runs/a
    torchrun --nproc-per-node 2 launch/train.py --config ... --output-dir ...
    accelerate launch --num_processes 2 launch/train.py --config ... --output-dir ...
    deepspeed --num_gpus 2 launch/train.py --config ... --output-dir ...   (ZeRO, from the YAML's deepspeed_config)
    add --resume to continue from the latest complete checkpoint in --output-dir.

Writes OUTPUT_DIR/metrics.csv (update, lr used by that update, loss, processes, ...)
and OUTPUT_DIR/checkpoints/ every `training.checkpoint_every` updates.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from noam_plugin import NoamLR
from noam_plugin._dist import is_rank0, world_size
from noam_plugin.checkpoint import CheckpointError, read_latest
from noam_plugin.config import load_config, read_config_file
from noam_plugin.errors import ConfigError
from noam_plugin.names import SCHEDULER_NAME
from noam_plugin.schedule import NoamConfig
from noam_plugin.scheduler import unwrap_optimizer

warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")  # pre-LN layers just skip a fast path
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*")  # inside DeepSpeed ZeRO

BACKENDS = ("torch", "accelerate", "deepspeed")
TASK_KINDS = ("reverse", "copy")
TRAINING_DEFAULTS = {"updates": 200, "global_batch": 64, "micro_batch": 16, "checkpoint_every": 25, "seed": 0}
MODEL_DEFAULTS = {"d_model": 64, "nhead": 4, "layers": 2, "ffn": 128, "dropout": 0.0}
TASK_DEFAULTS = {"kind": "reverse", "vocab_size": 12, "length": 10}
ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-9  # the paper's Adam
METRICS_FILE = "metrics.csv"
METRICS_FIELDS = ("update", "lr", "loss", "world_size", "backend", "attempt")
CHECKPOINTS = "checkpoints"  # the folder under --output-dir
TAG = "update_{:06d}"  # a checkpoint's name: a folder (DeepSpeed, Accelerate) or TAG + ".pt" (torch)
TAG_RE = re.compile(r"^update_\d{6}(\.pt)?$")
LATEST, LATEST_UNIVERSAL = "latest", "latest_universal"  # DeepSpeed's files naming the tag to load


class UsageError(Exception):
    """A problem the user can fix; printed as one message, no traceback."""


# ----------------------------------------------------------------------------- config


def load_run_config(path: str) -> tuple[dict, NoamConfig]:
    """(whole YAML, validated schedule). The scheduler block is the plugin's; the rest is ours, read with the
    plugin's reader too (YAML 1.2 numbers: `eps: 1e-9` is a float)."""
    try:
        return read_config_file(path), load_config(path)
    except (ConfigError, OSError) as error:
        raise UsageError(str(error)) from None


def scheduler_params(schedule: NoamConfig) -> dict:
    """The scheduler block's params as a config would write them: only the values that are set."""
    params = {k: v for k, v in schedule.schedule_params.items() if v is not None}
    if schedule.allow_param_change:
        params["allow_param_change"] = True
    return params


def training_settings(raw: dict, path: str, world: int) -> dict:
    t = TRAINING_DEFAULTS | raw.get("training", {})
    m = MODEL_DEFAULTS | raw.get("model", {})
    task = TASK_DEFAULTS | raw.get("task", {})
    if task["kind"] not in TASK_KINDS:
        raise UsageError(f"{path}: task.kind: expected {' or '.join(TASK_KINDS)}, found {task['kind']!r}")
    per_process = t["global_batch"] // world
    if t["global_batch"] % (t["micro_batch"] * world):
        raise UsageError(
            f"{path}: training.global_batch ({t['global_batch']}) must be a multiple of "
            f"training.micro_batch ({t['micro_batch']}) x processes ({world})"
        )
    t["accumulation"] = per_process // t["micro_batch"]
    return {"training": t, "model": m, "task": task}


# ----------------------------------------------------------------------------- model and data


class TinyTransformer(nn.Module):
    """nn.Transformer (encoder-decoder) with shared embeddings and sinusoidal positions, as in the paper."""

    def __init__(
        self, vocab_size: int, d_model: int, nhead: int, layers: int, ffn: int, dropout: float, max_len: int = 256
    ):
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model)
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe, persistent=False)
        self.core = nn.Transformer(d_model, nhead, layers, layers, ffn, dropout, batch_first=True, norm_first=True)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        n = tgt_in.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=tgt_in.device)
        x = self.embed(src) * self.scale + self.pe[: src.size(1)]
        y = self.embed(tgt_in) * self.scale + self.pe[:n]
        return self.out(self.core(x, y, tgt_mask=mask, tgt_is_causal=True))


def global_batch(update: int, seed: int, size: int, task: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of the given update: a function of (seed, update) only, so resume replays the same data."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + update)
    src = torch.randint(1, task["vocab_size"], (size, task["length"]), generator=g)  # 0 is BOS
    target = src.flip(1) if task["kind"] == "reverse" else src
    bos = torch.zeros(size, 1, dtype=torch.long)
    return src, torch.cat([bos, target[:, :-1]], 1), target


def loss_of(model, src, tgt_in, target, device=None) -> torch.Tensor:
    if device is not None:  # DeepSpeed and Accelerate put the model on their device (a GPU where there is one)
        src, tgt_in, target = src.to(device), tgt_in.to(device), target.to(device)
    logits = model(src, tgt_in)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))


# ----------------------------------------------------------------------------- backends


def detect_backend(local_rank_arg) -> str:
    if local_rank_arg is not None or "CROSS_RANK" in os.environ:  # set by the deepspeed launcher
        return "deepspeed"
    if any(k.startswith("ACCELERATE_") for k in os.environ):
        return "accelerate"
    return "torch"


def single_process_defaults() -> None:
    """`python train.py --backend deepspeed` without a launcher: one process on this machine."""
    if "RANK" in os.environ:
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def share_cores() -> None:
    """One intra-op thread per process unless OMP_NUM_THREADS says otherwise.

    The model is tiny: extra threads gain nothing, and on a busy machine their spin-waits
    made a run 10x slower (2.7 s vs 34.5 s for 100 updates on 2 loaded cores).
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def launched_processes() -> int:
    """How many processes the launcher started: known from WORLD_SIZE before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def say(text: str) -> None:
    """One progress line from rank 0 (any rank until the backend has set up its process group)."""
    if is_rank0():
        print(f"[train] {text}", flush=True)


def adam(model: nn.Module, schedule: NoamConfig) -> torch.optim.Adam:
    # NoamLR overwrites lr with lr(1) before the first update; the peak lr is only what
    # Accelerate reads for a DeepSpeed `"warmup_max_lr": "auto"`.
    return torch.optim.Adam(model.parameters(), lr=schedule.peak_lr, betas=ADAM_BETAS, eps=ADAM_EPS)


def checkpoint_tags(directory: Path) -> list[str]:
    """Complete checkpoints, oldest first (the atomic writers never leave a finished name half-written)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if TAG_RE.match(p.name))


class TorchRunner:
    """Plain PyTorch, DDP (gloo) when launched by torchrun; checkpoints are one torch.save file."""

    def __init__(self, model, schedule: NoamConfig, settings, out: Path):
        self.world = launched_processes()
        if self.world > 1:
            dist.init_process_group("gloo")
            self.rank = dist.get_rank()
            self.model = nn.parallel.DistributedDataParallel(model)
        else:
            self.rank, self.model = 0, model
        self.raw_model = model
        self.optimizer = adam(model, schedule)
        self.noam = NoamLR.from_config(
            self.optimizer, schedule, samples_per_update=settings["training"]["global_batch"]
        )
        self.accumulation = settings["training"]["accumulation"]
        self.ckpt_dir = out / CHECKPOINTS

    def micro_step(self, batch, last: bool) -> float:
        # DDP all-reduces gradients only on the last micro-batch of an update
        with self.model.no_sync() if self.world > 1 and not last else contextlib.nullcontext():
            loss = loss_of(self.model, *batch)
            (loss / self.accumulation).backward()
        if last:
            self.optimizer.step()
            self.noam.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, update: int) -> None:
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            final = self.ckpt_dir / (TAG.format(update) + ".pt")
            tmp = final.with_name(final.name + ".tmp")
            state = {
                "update": update,
                "world_size": self.world,
                "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.noam.state_dict(),
            }
            torch.save(state, tmp)
            os.replace(tmp, final)  # atomic: a kill leaves either the old set or the new file
        self.barrier()

    def resume(self) -> int | None:
        tags = checkpoint_tags(self.ckpt_dir)
        if not tags:
            return None
        state = torch.load(self.ckpt_dir / tags[-1], map_location="cpu", weights_only=True)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.noam.load_state_dict(state["scheduler"])
        return int(state["update"])

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    close = barrier


class _Counter:
    """The update count as an Accelerate checkpoint object (independent of the scheduler's own count)."""

    def __init__(self):
        self.update = 0

    def state_dict(self):
        return {"update": self.update}

    def load_state_dict(self, state):
        self.update = int(state["update"])


class AccelerateRunner:
    """`accelerate launch`: Accelerator.accumulate, save_state/load_state (tmp dir, then rename).

    With a DeepSpeed Accelerate config, a `scheduler` block in its DeepSpeed JSON is
    honoured through DummyScheduler (the engine builds NoamLR); otherwise the script's NoamLR is prepared.
    """

    def __init__(self, model, schedule: NoamConfig, settings, out: Path):
        from accelerate import Accelerator

        t = settings["training"]
        self.accelerator = Accelerator(gradient_accumulation_steps=t["accumulation"])
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        optimizer = adam(model, schedule)
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is not None:
            # no DataLoader here, so tell DeepSpeed the micro-batch size ourselves
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = t["micro_batch"]
        if plugin is not None and "scheduler" in plugin.deepspeed_config:
            from accelerate.utils import DummyScheduler

            # "auto" in the JSON takes these; total_num_steps (for a cooldown) as given, like the warmup
            scheduler = DummyScheduler(
                optimizer, warmup_num_steps=schedule.warmup_num_steps, total_num_steps=schedule.total_num_steps
            )
        else:
            # no DataLoader goes through prepare(), so Accelerate cannot tell NoamLR the global batch
            scheduler = NoamLR.from_config(optimizer, schedule, samples_per_update=t["global_batch"])
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.noam = self.scheduler.scheduler  # the NoamLR inside Accelerate's wrapper
        self.inner = unwrap_optimizer(self.optimizer)
        self.counter = _Counter()
        self.accelerator.register_for_checkpointing(self.counter)
        self.ckpt_dir = out / CHECKPOINTS

    def micro_step(self, batch, last: bool) -> float:
        with self.accelerator.accumulate(self.model):
            if self.accelerator.sync_gradients != last:
                raise RuntimeError("Accelerate's accumulation boundary is out of step with the update boundary")
            loss = loss_of(self.model, *batch, device=self.accelerator.device)
            self.accelerator.backward(loss)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.item()

    def lr(self) -> float:
        return float(self.inner.param_groups[0]["lr"])

    def save(self, update: int) -> None:
        self.counter.update = update
        final = self.ckpt_dir / TAG.format(update)
        tmp = final.with_name(final.name + ".tmp")
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            os.replace(tmp, final)
        self.accelerator.wait_for_everyone()

    def resume(self) -> int | None:
        tags = checkpoint_tags(self.ckpt_dir)
        if not tags:
            return None
        self.accelerator.load_state(str(self.ckpt_dir / tags[-1]))
        # load_state restores Accelerate's micro-batch counter, which decides where accumulation
        # ends; with another number of processes (so another accumulation) it would end mid-update.
        self.accelerator.step = 0
        return self.counter.update

    def close(self) -> None:
        self.accelerator.wait_for_everyone()


def declares(block, schedule: NoamConfig) -> bool:
    """Whether a DeepSpeed `scheduler` block is this schedule, defaults written out or not."""
    try:
        same_type = block.get("type") == SCHEDULER_NAME
        return same_type and NoamConfig.from_params(block.get("params"), "DeepSpeed") == schedule
    except (ConfigError, AttributeError):
        return False


class DeepSpeedRunner:
    """`deepspeed` launcher: the engine builds NoamLR from the config's scheduler block and steps it."""

    def __init__(self, model, schedule: NoamConfig, settings, out: Path, ds_config_path: str, config_path: str):
        import deepspeed

        t = settings["training"]
        try:
            ds_config = read_config_file(ds_config_path)
        except (ConfigError, OSError) as error:
            raise UsageError(f"{config_path}: deepspeed_config: {error}") from None
        notes = []  # printed once the engine has set up the process group, so by rank 0 only
        if "scheduler" not in ds_config:  # the engine builds NoamLR from the YAML's block
            ds_config["scheduler"] = {"type": SCHEDULER_NAME, "params": scheduler_params(schedule)}
        elif not declares(ds_config["scheduler"], schedule):
            notes.append(
                f"schedule: the scheduler block of {ds_config_path} ({ds_config['scheduler'].get('params')}), "
                f"not {config_path}'s"
            )
        # the data layout of this script: global batch = micro-batch x accumulation x processes, from the YAML
        layout = {
            "train_batch_size": t["global_batch"],
            "train_micro_batch_size_per_gpu": t["micro_batch"],
            "gradient_accumulation_steps": t["accumulation"],
        }
        for key, value in layout.items():
            if ds_config.get(key, value) not in (value, "auto"):
                notes.append(
                    f"{key}: {value} (from {config_path}'s training block) instead of {ds_config[key]} "
                    f"in {ds_config_path}"
                )
            ds_config[key] = value
        ds_config.setdefault("steps_per_print", 10**9)
        # an "optimizer" block in the DeepSpeed config wins, as DeepSpeed users expect; else the paper's Adam
        client_optimizer = None if "optimizer" in ds_config else adam(model, schedule)
        self.ckpt_dir = out / CHECKPOINTS
        self.world = launched_processes()
        self.load_universal = self._needs_universal()
        if self.load_universal:
            ds_config.setdefault("checkpoint", {})["load_universal"] = True
        self.engine, _, _, self.noam = deepspeed.initialize(
            model=model, optimizer=client_optimizer, model_parameters=model.parameters(), config=ds_config
        )
        # self.noam: the engine's NoamLR; it knows the global batch from train_batch_size()
        self.rank = self.engine.global_rank
        self.inner = unwrap_optimizer(self.engine.optimizer)
        for note in notes:
            say(note)

    def _needs_universal(self) -> bool:
        """Resuming a ZeRO checkpoint on another number of processes needs DeepSpeed's universal format."""
        try:
            tag, universal = read_latest(self.ckpt_dir), read_latest(self.ckpt_dir, LATEST_UNIVERSAL)
        except CheckpointError as error:
            raise UsageError(str(error)) from None
        if tag is None:
            return False
        # one optimizer file per process that saved (ZeRO); plain DeepSpeed checkpoints load on any number
        saved = len(list((self.ckpt_dir / tag).glob("*zero_pp_rank_*_optim_states.pt")))
        if saved in (0, self.world):
            return False
        if universal == tag + "_universal" and (self.ckpt_dir / universal).is_dir():
            return True
        raise UsageError(
            f"{self.ckpt_dir / tag} is a ZeRO checkpoint of {saved} processes; to resume on {self.world}, convert it "
            f"to DeepSpeed's universal format first:\n"
            f"  noam-plugin convert-universal {self.ckpt_dir}"
        )

    def micro_step(self, batch, last: bool) -> float:
        loss = loss_of(self.engine, *batch, device=self.engine.device)
        self.engine.backward(loss)
        self.engine.step()  # applies the update (and steps NoamLR) at the accumulation boundary
        return loss.item()

    def lr(self) -> float:
        return float(self.inner.param_groups[0]["lr"])

    def save(self, update: int) -> None:
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=TAG.format(update), client_state={"update": update})

    def resume(self) -> int | None:
        if read_latest(self.ckpt_dir, LATEST_UNIVERSAL if self.load_universal else LATEST) is None:
            return None
        path, client = self.engine.load_checkpoint(str(self.ckpt_dir))
        if path is None:
            return None
        return int(client["update"]) if client and "update" in client else int(self.engine.global_steps)

    def close(self) -> None:
        dist.barrier()


# ----------------------------------------------------------------------------- the loop


def mean_over_processes(value: float) -> float:
    """The loss of the whole global batch, not only rank 0's share."""
    processes = world_size()
    if processes == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return total.item() / processes


def metrics_writer(path: Path, backend: str, world: int):
    """Append rows to metrics.csv across restarts; `attempt` numbers the starts of this run."""
    attempt = 1
    if path.exists():
        with path.open() as f:
            attempt = 1 + max((int(row["attempt"]) for row in csv.DictReader(f)), default=0)
    new = not path.exists()
    f = path.open("a", newline="")
    writer = csv.writer(f, lineterminator="\n")
    if new:
        writer.writerow(METRICS_FIELDS)

    def write(update: int, lr: float, loss: float) -> None:
        writer.writerow([update, repr(lr), f"{loss:.6f}", world, backend, attempt])  # repr: exact float
        f.flush()

    return write, f


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/demo.yaml", help="project YAML: scheduler block, model, task, training")
    p.add_argument("--output-dir", required=True, help="metrics.csv and checkpoints/ go here")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in --output-dir")
    p.add_argument("--backend", choices=BACKENDS, help="default: detected from the launcher")
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON (default: the YAML's deepspeed_config)")
    p.add_argument("--updates", type=int, help="override training.updates")
    p.add_argument("--checkpoint-every", type=int, help="override training.checkpoint_every")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    backend = args.backend or detect_backend(args.local_rank)
    raw, schedule = load_run_config(args.config)
    settings = training_settings(raw, args.config, launched_processes())
    t, task = settings["training"], settings["task"]
    if args.updates is not None:
        t["updates"] = args.updates
    if args.checkpoint_every is not None:
        t["checkpoint_every"] = args.checkpoint_every
    out = Path(args.output_dir)
    metrics_path = out / METRICS_FILE
    if not args.resume and (metrics_path.exists() or checkpoint_tags(out / CHECKPOINTS)):
        raise UsageError(f"{out} already holds a run; add --resume to continue it, or choose another --output-dir")

    torch.manual_seed(t["seed"])  # same initial weights on every rank and in every run
    share_cores()
    m = settings["model"]
    model = TinyTransformer(task["vocab_size"], m["d_model"], m["nhead"], m["layers"], m["ffn"], m["dropout"])
    if backend == "deepspeed":
        single_process_defaults()
        ds_path = args.deepspeed_config or raw.get("deepspeed_config")
        if not ds_path:
            raise UsageError(
                f"{args.config}: deepspeed_config: needed for the deepspeed backend (or pass --deepspeed-config)"
            )
        runner = DeepSpeedRunner(model, schedule, settings, out, ds_path, args.config)
    elif backend == "accelerate":
        runner = AccelerateRunner(model, schedule, settings, out)
    else:
        runner = TorchRunner(model, schedule, settings, out)
    main_rank = is_rank0()  # the backend has set up its process group by now

    start = 0
    if args.resume:
        resumed = runner.resume()
        if resumed is None:
            say(f"no checkpoint in {runner.ckpt_dir}; starting from update 0")
        else:
            start = resumed
            say(f"resumed at update {start} on {runner.world} process(es); next lr {runner.lr():.6g}")
    say(
        f"{backend}, {runner.world} process(es), {t['accumulation']} micro-batches of {t['micro_batch']} per update "
        f"(global batch {t['global_batch']}), updates {start + 1}..{t['updates']}"
    )
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        write, metrics_file = metrics_writer(metrics_path, backend, runner.world)
    bar = None
    if main_rank and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=t["updates"], initial=start, desc="train", unit="upd", dynamic_ncols=True)
    per_rank = t["global_batch"] // runner.world
    counts_tokens = runner.noam.config.warmup_unit == "tokens"
    started = time.time()
    for update in range(start + 1, t["updates"] + 1):
        src, tgt_in, target = global_batch(update, t["seed"], t["global_batch"], task)
        lo = runner.rank * per_rank
        losses, lr = [], None
        for i in range(t["accumulation"]):
            a, b = lo + i * t["micro_batch"], lo + (i + 1) * t["micro_batch"]
            last = i == t["accumulation"] - 1
            runner.noam.add_tokens(target[a:b].numel())  # tokens seen: this task has no padding
            if last and not counts_tokens:
                lr = runner.lr()  # the lr this update is about to use
            losses.append(runner.micro_step((src[a:b], tgt_in[a:b], target[a:b]), last))
        if counts_tokens:
            lr = runner.noam.get_last_lr()[0]  # warmup in tokens: set just before the update, once its tokens are known
        loss = mean_over_processes(sum(losses) / len(losses))
        if main_rank:
            write(update, lr, loss)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
        if update % t["checkpoint_every"] == 0 or update == t["updates"]:
            runner.save(update)
    if bar is not None:
        bar.close()
    if main_rank:
        metrics_file.close()
    say(f"done: update {t['updates']} in {time.time() - started:.1f}s; metrics in {metrics_path}")
    runner.close()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except UsageError as error:
        print(f"train.py: {error}", file=sys.stderr)
        sys.exit(2)
    # Every rank has passed the final barrier and everything is on disk. Leave without tearing
    # down gloo: on CPU its teardown (destroy_process_group or interpreter exit) now and then
    # aborts a rank with "terminate called without an active exception" after the run is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
